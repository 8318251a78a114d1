"""Evaluate the Pulumi program in-process, as `pulumi up` would, under mocks.

pulumi-tls resources get real keys and certificates (`tls_emulation`); Kubernetes
objects are recorded as declared. The result is plain data: every registered resource
(type, name, parent, dependencies, inputs with secrecy kept) and the stack outputs.
Tests and the lab both use this, so the lab runs exactly what the program declares.
"""

from __future__ import annotations

import contextvars
import logging
import runpy
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.settings import SettingsError

from .tls_emulation import TLS_RESOURCES

PROJECT_DIR = Path(__file__).resolve().parent.parent

# The provider marks these outputs secret; mocks must do it themselves (the mock
# engine does not apply additional_secret_outputs).
K8S_SECRET_OUTPUTS = {"kubernetes:core/v1:Secret": ("data", "stringData")}


def unwrap(value: Any) -> Any:
    """The value with every secret marker removed, at any depth."""
    if rpc.is_rpc_secret(value):
        return unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def _ints(value: Any) -> Any:
    """Mocks see every number as a float; manifests want integers where they are whole."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


@dataclass
class Resource:
    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    dependencies: list[str]
    delete_before_replace: bool
    inputs: dict[str, Any]  # as the mock received them: secrets still wrapped
    outputs: dict[str, Any]  # as the mock returned them: secrets wrapped

    @property
    def plain_inputs(self) -> dict[str, Any]:
        return _ints(unwrap(self.inputs))

    @property
    def plain_outputs(self) -> dict[str, Any]:
        return _ints(unwrap(self.outputs))

    def manifest(self) -> dict[str, Any]:
        """A Kubernetes object as the API server would receive it."""
        return self.plain_inputs


@dataclass
class StackOutput:
    value: Any
    secret: bool


@dataclass
class ProgramRun:
    stack: str
    config: dict[str, str]
    resources: list[Resource]
    outputs: dict[str, StackOutput]
    warnings: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def manifests(self, kind: str | None = None) -> list[dict[str, Any]]:
        found = [r.manifest() for r in self.resources if r.type.startswith("kubernetes:")]
        # Registration order is whatever the event loop made it: sort for stable output.
        found.sort(
            key=lambda m: (m.get("kind", ""), m["metadata"].get("namespace", ""), m["metadata"]["name"])
        )
        return [m for m in found if kind is None or m.get("kind") == kind]

    def output(self, name: str) -> Any:
        return self.outputs[name].value


class EmulatingMocks(pulumi.runtime.Mocks):
    """pulumi-tls emulated for real; every other resource echoes its inputs."""

    def __init__(self) -> None:
        super().__init__()
        # (type, name) -> inputs as received, secrets still wrapped.
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        self.inputs[(args.typ, args.name)] = dict(args.inputs)
        if args.typ in TLS_RESOURCES:
            emulate, secret_outputs = TLS_RESOURCES[args.typ]
            state = emulate(unwrap(args.inputs))
            for key in secret_outputs:
                if key in state and not rpc.is_rpc_secret(state[key]):
                    state[key] = rpc.wrap_rpc_secret(state[key])
            # Inputs that arrived secret stay secret in the state.
            for key, value in args.inputs.items():
                if rpc.is_rpc_secret(value):
                    state[key] = value
            return f"{args.name}-id", state
        state = dict(args.inputs)
        for key in K8S_SECRET_OUTPUTS.get(args.typ, ()):
            if key in state and not rpc.is_rpc_secret(state[key]):
                state[key] = rpc.wrap_rpc_secret(state[key])
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        return {}, None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, also keeping what the mocks API does not show (parent, deps)."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[dict[str, Any]] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC name)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                {
                    "urn": response.urn,
                    "type": request.type,
                    "name": request.name,
                    "parent": request.parent,
                    "custom": request.custom,
                    "dependencies": list(request.dependencies),
                    "delete_before_replace": request.deleteBeforeReplace,
                }
            )
        return response


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class LabInputError(ValueError):
    """What was asked cannot be run as given: the command line, the stack or a scenario
    that the stack's configuration cannot serve (the CLI's exit 3)."""


def stack_config(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """The config a stack file passes to the program: every value as a string, as the CLI does."""
    return stack_file(stack, project_dir)[0]


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> tuple[dict[str, str], frozenset[str]]:
    """The stack file's config as `stack_config` gives it, and the full keys whose values
    are secrets (`pulumi config set --secret` writes them as {secure: <ciphertext>}): the
    CLI tells the program which keys those are, and so does `run_program`."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise LabInputError(f"no stack file {path.name} for stack {stack!r}; stacks here: {', '.join(known)}")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LabInputError(f"{path.name} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, dict):
        raise LabInputError(f"{path.name} must be a mapping with a 'config' key, got {document!r}")
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise LabInputError(f"{path.name}: 'config' must be a mapping of keys to values, got {config!r}")
    secrets = frozenset(k for k, v in config.items() if isinstance(v, dict) and "secure" in v)
    return {key: _cli_string(value) for key, value in config.items()}, secrets


def project_config_defaults(project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """The `default`s of Pulumi.yaml's `config:` block under their full keys, as strings:
    the CLI passes them to the program along with the stack file's values."""
    document = yaml.safe_load((project_dir / "Pulumi.yaml").read_text())
    project = document["name"]
    return {
        f"{project}:{key}": _cli_string(spec["default"])
        for key, spec in (document.get("config") or {}).items()
        if isinstance(spec, dict) and "default" in spec
    }


def _cli_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value)
    return str(value)


def run_program(
    stack: str,
    config: Mapping[str, str] | None = None,
    *,
    secret_keys: Collection[str] = (),
    project_dir: Path = PROJECT_DIR,
) -> ProgramRun:
    """Run `__main__.py` for `stack` (config from Pulumi.<stack>.yaml unless given).

    `secret_keys`: full keys set with `pulumi config set --secret` (the CLI tells the
    program which ones through PULUMI_CONFIG_SECRET_KEYS).

    Raises whatever the program raises after the runtime settled, except that invalid
    configuration comes back as the SettingsError behind it (`__main__.py` turns it into
    the pulumi.RunError that the CLI prints as one line; that RunError is the raised
    error's `__cause__`), so callers see the same error as from `parse_settings`.
    `ProgramRun` is only returned for a program that completed. The exception carries
    what the program had declared before it failed: see `partial_run`.
    """
    if config is None:
        config, from_file = stack_file(stack, project_dir)
        secret_keys = {*secret_keys, *from_file}
    full_config = dict(config)
    project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text())["name"]
    # A fresh context per run: Pulumi keeps its settings, config and root stack in
    # context variables, so runs in one process cannot see each other.
    return contextvars.Context().run(_run, stack, project, full_config, list(secret_keys), project_dir)


def _run(
    stack: str, project: str, config: dict[str, str], secret_keys: list[str], project_dir: Path
) -> ProgramRun:
    mocks = EmulatingMocks()
    monitor = RecordingMonitor(mocks)
    collector = _WarningCollector()
    logger = logging.getLogger("pulumi")
    pulumi.runtime.set_all_config(config, secret_keys)
    # The mock engine sends `pulumi.log` messages to the logger it is given (the root
    # logger by default, which the collector would not see).
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=False, logger=logger, monitor=monitor
    )
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()

    def program() -> None:
        runpy.run_path(str(project_dir / "__main__.py"), run_name="__main__")

    logger.addHandler(collector)
    sys.path.insert(0, str(project_dir))
    try:
        _sync_await(run_pulumi_func(program))
        outputs = _resolve_stack_outputs()
    except Exception as error:
        # Keep the program's own exception (callers match on its type) and attach what
        # had been declared by then, so a test can check that bad input declared nothing.
        partial = ProgramRun(stack, config, _resources(monitor, mocks), {}, collector.messages)
        if isinstance(error, pulumi.RunError) and isinstance(error.__context__, SettingsError):
            # `raise RunError(...) from None` hides the SettingsError from the CLI's
            # output, but Python keeps it as the RunError's context.
            settings_error = error.__context__
            setattr(settings_error, _PARTIAL_RUN, partial)
            raise settings_error from error
        setattr(error, _PARTIAL_RUN, partial)
        raise
    finally:
        sys.path.remove(str(project_dir))
        logger.removeHandler(collector)
    return ProgramRun(stack, config, _resources(monitor, mocks), outputs, collector.messages)


_PARTIAL_RUN = "partial_program_run"


def partial_run(error: BaseException) -> ProgramRun | None:
    """What a failed `run_program` had declared before raising `error` (no outputs)."""
    run = getattr(error, _PARTIAL_RUN, None)
    return run if isinstance(run, ProgramRun) else None


def _resources(monitor: RecordingMonitor, mocks: EmulatingMocks) -> list[Resource]:
    resources = []
    for reg in monitor.registrations:
        state = monitor.resources[reg["urn"]]
        resources.append(
            Resource(
                type=reg["type"],
                name=reg["name"],
                urn=reg["urn"],
                parent=reg["parent"],
                custom=reg["custom"],
                dependencies=reg["dependencies"],
                delete_before_replace=reg["delete_before_replace"],
                inputs=mocks.inputs[(reg["type"], reg["name"])],
                outputs=dict(state.state),
            )
        )
    return resources


def _resolve_stack_outputs() -> dict[str, StackOutput]:
    root = pulumi.runtime.get_root_resource()
    exported = getattr(root, "outputs", {}) or {}
    resolved: dict[str, StackOutput] = {}
    for name, value in exported.items():
        output = pulumi.Output.from_input(value)
        resolved[name] = StackOutput(
            value=_ints(_sync_await(output.future())),
            secret=bool(_sync_await(output.is_secret())),
        )
    return resolved
