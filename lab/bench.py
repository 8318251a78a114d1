"""make bench: the lab's time to verdict against a bare-etcd baseline, in one run.

Baseline: the same members, certificates and namespaces, already made (untimed); only
starting the etcd processes and polling until the conclusive condition (all members
healthy with one leader / every member has rejected every other) is timed, then they are
killed. Lab: a whole `run_lab` (program evaluation, certificates, namespaces, files,
etcd, observation, probes, teardown). Ratio = lab / baseline: what the lab adds on top of
etcd's own floor.
"""

from __future__ import annotations

import argparse
import resource
import signal
import statistics
import sys
import time

from . import proc
from .evidence import LogTail, RejectionMatrix, san_rejections
from .run import POLL_SECONDS, Lab, LabEnvironmentError, evaluate, prepare, run_lab, settled

SIZES = (3, 5, 7)
STACKS = ("skip", "noskip")


def baseline(stack: str, members: int, binary, timeout: float = 60.0) -> tuple[float, float | None]:
    """Seconds from start to the conclusive condition, and to the first SAN rejection."""
    program = evaluate(stack, binary, {"members": str(members)})
    with Lab(program, binary) as lab:
        tails = {c.pod: LogTail(c.log_path) for c in lab.containers}
        matrix = RejectionMatrix([c.pod for c in lab.containers])
        by_ip = lab.member_by_ip()
        first: float | None = None
        lab.start()
        deadline = lab.started_at + timeout
        while time.monotonic() < deadline:
            for pod, tail in tails.items():
                for rejection in san_rejections(pod, tail.new_lines()):
                    matrix.add(rejection, by_ip)
            if matrix.total and first is None:
                first = time.monotonic() - lab.started_at
            if stack == "noskip" and matrix.complete:
                break
            if stack == "skip":
                state = lab.poll_health()
                if settled(state):
                    break
            time.sleep(POLL_SECONDS)
        else:
            raise RuntimeError(f"baseline {stack} x{members}: no conclusive outcome in {timeout} s")
        elapsed = time.monotonic() - lab.started_at
        for popen in lab.processes.values():
            proc.stop(popen, signal.SIGKILL, grace=5)
    return elapsed, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--etcd")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args(argv)
    try:
        binary = prepare(args.etcd)
    except LabEnvironmentError as exc:
        print(f"bench: cannot run here: {exc}", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"etcd {binary.version} ({binary.etcd}); median of {args.repeat} runs per cell")
    header = (
        f"{'members':>7} {'stack':<7} {'baseline s':>10} {'1st rej s':>9} {'lab s':>7} {'ratio':>6}   "
        "lab phases (program / network / files / verdict / teardown)"
    )
    print(header)
    ok = True
    for members in sizes:
        for stack in STACKS:
            bases, firsts, totals, phases = [], [], [], []
            for _ in range(args.repeat):
                base, first = baseline(stack, members, binary)
                bases.append(base)
                if first is not None:
                    firsts.append(first)
                report = run_lab(stack, binary, overrides={"members": str(members)})
                ok = ok and report.matches
                totals.append(report.timings["total"])
                phases.append(report.timings)
            base, total = statistics.median(bases), statistics.median(totals)
            phase = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
            first_text = f"{statistics.median(firsts):9.2f}" if firsts else f"{'-':>9}"
            print(
                f"{members:>7} {stack:<7} {base:>10.2f} {first_text} {total:>7.2f} {total / base:>6.2f}   "
                f"{phase['program']:.2f} / {phase['network']:.2f} / {phase['materialize']:.2f} / "
                f"{phase['verdict']:.2f} / {phase['teardown']:.2f}"
            )
    peak_lab = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"peak RSS: lab process {peak_lab:.0f} MiB; "
        f"largest child process (etcd, ip, etcdctl...) {peak_child:.0f} MiB"
    )
    if not ok:
        print("some lab runs did not match their prediction", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
