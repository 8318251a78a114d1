"""The README's commands exist: its make targets, its config table, the CI entry point."""

from __future__ import annotations

import re
from pathlib import Path

from components.settings import CONFIG_KEYS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", MAKEFILE, re.M))


def test_quick_start_is_make_demo_and_make_test() -> None:
    commands = re.findall(r"^(make \S+)", section("Quick start (Linux, as root)"), re.M)
    assert commands == ["make demo", "make test"]


def test_every_make_command_in_the_readme_is_a_target() -> None:
    mentioned = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", README))
    assert mentioned, "the README names no make target"
    assert mentioned <= make_targets(), f"not in the Makefile: {sorted(mentioned - make_targets())}"


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    runs = [line.strip() for line in script.splitlines() if line.strip().startswith("make ")]
    assert runs == ["make test"]


def _readme_default(value: bool | int | str) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`" if value != "" else '`""`'


def test_config_table_matches_the_program() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.+?) \| .+ \|$", section("Configuration"), re.M)
    assert [(name, type_, default) for name, type_, default in rows] == [
        (key.name, key.type, _readme_default(key.default)) for key in CONFIG_KEYS
    ]


def test_kind_steps_use_commands_that_still_exist() -> None:
    kind = section("Run it on Kubernetes (kind)")
    # Removed in kind 0.7; `kind create cluster` sets the kubectl context itself.
    assert "kubeconfig-path" not in kind
    for step in ("pulumi login --local", "PULUMI_CONFIG_PASSPHRASE", "kind create cluster", "make venv"):
        assert step in kind
    for stack in ("skip", "noskip"):
        for command in ("stack init", "up -s", "destroy -s", "stack rm"):
            assert re.search(rf"pulumi {command} ?{stack}\b", kind), f"pulumi {command} {stack}"
