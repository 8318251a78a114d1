"""Shared fixtures: the whole program run under mocks (cached per session) and settings.

Config is given as the CLI gives it: string values under `etcd-peer-san:<key>`. Runs
are cached by (stack, config) because every run generates ~20 real keys; tests only
read a run, never change it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Generator, Mapping
from typing import Any

import pytest

from components.cluster_plan import Member, members_of
from components.settings import PROJECT, Settings, parse_settings
from lab.etcd_binary import EtcdBinary
from lab.program import ProgramRun, run_program, stack_config
from tests.lab_support import BINARIES, require_lab

# `pytester` runs the CI-skip hooks below in a throwaway test directory (test_ci_skips.py).
pytest_plugins = ["pytester"]

RunStack = Callable[..., ProgramRun]
MakeSettings = Callable[..., Settings]
STACKS = ("skip", "noskip")


def cli_config(stack: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stack file's config plus `overrides` (short key names), all CLI strings."""
    config = stack_config(stack)
    config.update({f"{PROJECT}:{key}": value for key, value in (overrides or {}).items()})
    return config


@functools.cache
def _cached_run(stack: str, config: tuple[tuple[str, str], ...]) -> ProgramRun:
    return run_program(stack, dict(config))


def _run_stack(stack: str, overrides: Mapping[str, str] | None = None) -> ProgramRun:
    return _cached_run(stack, tuple(sorted(cli_config(stack, overrides).items())))


@pytest.fixture(scope="session")
def run_stack() -> RunStack:
    """`run_stack("skip", {"members": "5"})`: the program for a stack file plus overrides."""
    return _run_stack


@pytest.fixture(scope="session")
def skip_run() -> ProgramRun:
    return _run_stack("skip")


@pytest.fixture(scope="session")
def noskip_run() -> ProgramRun:
    return _run_stack("noskip")


@pytest.fixture(scope="session", params=STACKS)
def stack_run(request: pytest.FixtureRequest) -> ProgramRun:
    """Each stack file's run in turn."""
    return _run_stack(request.param)


def settings_of(run: ProgramRun) -> Settings:
    """The Settings the program derived from a run's config (same parser, same input)."""
    prefix = f"{PROJECT}:"
    raw = {key[len(prefix) :]: value for key, value in run.config.items() if key.startswith(prefix)}
    return parse_settings(raw, run.stack).settings


@pytest.fixture(scope="session")
def run_settings() -> Callable[[ProgramRun], Settings]:
    return settings_of


@pytest.fixture(scope="session")
def run_members() -> Callable[[ProgramRun], tuple[Member, ...]]:
    return lambda run: members_of(settings_of(run))


@pytest.fixture(scope="session")
def make_settings() -> MakeSettings:
    """`make_settings("skip", members=5)`: parsed Settings from short-named raw values."""

    def make(stack: str = "skip", **raw: object) -> Settings:
        return parse_settings(raw, stack).settings

    return make


@pytest.fixture(scope="module", params=["3.5.1", "3.4.23"])
def etcd_binary(request: pytest.FixtureRequest) -> EtcdBinary:
    """Each etcd the lab tests run against; skips (with the reason) where the lab cannot run.

    3.4.23 is unpacked from Debian's package on first use if `make etcd34` has not run."""
    require_lab()
    return BINARIES[request.param]()


# ---------------------------------------------------------------- CI: no silent skips


def _gave_up(call: pytest.CallInfo[None] | None) -> bool:
    """The test (or its setup) stopped itself as an expected failure: pytest.xfail() in
    its body, or a marker with run=False. Its check never ran, like a skip. An xfail whose
    test ran and failed raised its own error instead, and is a real result."""
    return (
        call is not None and call.excinfo is not None and call.excinfo.errisinstance(pytest.xfail.Exception)
    )


def _fail_if_skipped_in_ci(
    report: pytest.TestReport | pytest.CollectReport, call: pytest.CallInfo[None] | None = None
) -> None:
    """Under CI (the CI environment variable set and non-empty) a skip becomes a failure
    with its reason: everything must run there. An xfail whose test ran is not a skip and
    stays."""
    ci = os.environ.get("CI")
    if not ci or not report.skipped:
        return
    if hasattr(report, "wasxfail") and not _gave_up(call):
        return
    longrepr = report.longrepr
    if hasattr(report, "wasxfail"):
        reason = f"xfail: {report.wasxfail}"
    else:
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"CI={ci!r}: a CI run must not skip; {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any, Any, Any]:
    report = yield
    _fail_if_skipped_in_ci(report, call)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[Any, Any, Any]:
    report = yield
    _fail_if_skipped_in_ci(report)
    return report
