"""The human report of a lab run (the JSON one is LabReport.as_dict())."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .evidence import CELL_MEANINGS
from .program import PROJECT_DIR
from .run import LabReport


def shown_path(path: str | Path) -> str:
    """`path` relative to the project directory when it lies inside it (the lab runs from
    there: `.venv/lib/.../etcd`), else absolute."""
    absolute = Path(os.path.abspath(path))
    # Resolve the directories, not the file: a venv's python is a symlink to the system one.
    absolute = absolute.parent.resolve() / absolute.name
    try:
        return str(absolute.relative_to(PROJECT_DIR))
    except ValueError:
        return str(absolute)


def run_header(stack: str, etcd_version: str, etcd_path: str, run_id: str) -> str:
    """The first line of every lab report: which stack, which etcd, which run."""
    return f"stack {stack}: etcd {etcd_version} ({shown_path(etcd_path)}), run {run_id}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render(report: LabReport) -> str:
    lines = [
        run_header(report.stack, report.etcd_version, report.etcd_path, report.run_id),
        "",
    ]
    rows = [["member", "pod IP", "service IP", "health", "leader", "ready", "live"]]
    for m in report.members:
        live = m.probes.get("liveness")
        rows.append(
            [
                m.name,
                m.pod_ip,
                m.service_ip or "-",
                "healthy"
                if m.healthy
                else (f"exited {m.exit_code}" if m.exit_code is not None else "unhealthy"),
                "leader" if m.leader else "-",
                "yes" if m.probes.get("readiness") else "no",
                "none declared" if live is None else ("yes" if live else "no"),
            ]
        )
    lines += _table(rows)
    for m in report.members:
        if m.last_log_lines:
            lines += [f"{m.name} exited {m.exit_code}; its last log lines:"]
            lines += [f"  {line}" for line in m.last_log_lines]
    names = report.matrix.members
    lines += ["", "peer connections (row: receiving member, column: connecting member):"]
    matrix_rows = [["", *names]] + [[r, *(report.matrix.cell(r, c) for c in names)] for r in names]
    lines += _table(matrix_rows)
    shown = {cell for row in matrix_rows[1:] for cell in row[1:]}
    lines += [f"  {value}: {meaning}" for value, meaning in CELL_MEANINGS.items() if value in shown]
    lines.append("")
    if report.matrix.first_line:
        lines += ["first SAN rejection, verbatim:", f"  {report.matrix.first_line}", ""]
    if report.matrix.first_refusal:
        lines += ["first other peer-auth refusal, verbatim:", f"  {report.matrix.first_refusal}", ""]
    if report.etcdctl:
        lines.append(f"etcdctl (the stack's healthCommand): {'ok' if report.etcdctl.get('ok') else 'FAILED'}")
        lines += [f"  {line}" for line in str(report.etcdctl.get("output", "")).splitlines()]
        lines.append("")
    lines += [f"warning from the program: {w}" for w in report.warnings]
    t = report.timings
    lines.append(
        f"verdict: {report.verdict}   predicted: {report.predicted}   "
        f"{'as predicted' if report.matches else 'NOT AS PREDICTED'}"
    )
    if report.timed_out:
        lines.append(
            f"  (the --timeout passed after {t.get('verdict', 0):.2f} s, before the evidence was "
            "conclusive: the verdict is what was seen by then; a longer --timeout may decide it)"
        )
    lines.append(
        f"time to verdict {t.get('verdict', 0):.2f} s after the members started"
        + (
            f" ({t['evidence']:.2f} s of it reading peer evidence after health)"
            if t.get("evidence", 0) >= 0.005
            else ""
        )
        + "; "
        f"total {t.get('total', 0):.2f} s "
        f"(program {t.get('program', 0):.2f}, network {t.get('network', 0):.2f}, "
        f"materialize {t.get('materialize', 0):.2f}, probes {t.get('probes', 0):.2f}, "
        f"teardown {t.get('teardown', 0):.2f})"
    )
    if report.kept:
        lines.append(
            f"kept: {report.run_dir} (objects/, pods/<member>/container.log); "
            f"remove with: rm -r {report.run_dir} "
            f"(or {shown_path(sys.executable)} -m lab cleanup --kept, for every kept run)"
        )
    return "\n".join(lines)
