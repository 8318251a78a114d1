"""Reading etcd's own evidence: SAN rejections in its logs, health and leadership.

`rejected connection` alone proves nothing (healthy clusters log it for EOFs and closed
connections, FACTS.md); only the SAN error counts:
  3.5 (JSON):  "error":"tls: \"10.244.0.11\" does not match any of DNSNames [...]"
  3.4 (text):  (error "tls: \"10.244.0.11\" does not match any of DNSNames [...]" ...)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from components.cluster_plan import REJECTION_MARKER

_SAN_ERROR = re.compile(r'tls: \\?"(?P<ip>[0-9a-fA-F.:]+)\\?" ' + re.escape(REJECTION_MARKER))
_CN_ERROR = "client certificate authentication failed"


@dataclass(frozen=True)
class Rejection:
    receiver: str  # member whose log has the line
    source_ip: str
    line: str


def san_rejections(receiver: str, lines: list[str]) -> list[Rejection]:
    found = []
    for line in lines:
        match = _SAN_ERROR.search(line)
        if match:
            found.append(Rejection(receiver, match.group("ip"), line.rstrip("\n")))
    return found


class LogTail:
    """Reads only what a log file gained since the last call (whole lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("r", errors="replace") as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except FileNotFoundError:
            return []
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        return lines


def metric_value(metrics_text: str, name: str) -> float | None:
    for line in metrics_text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def health_ok(body: str) -> bool:
    """/health answers {"health":"true"} when the member has a leader and serves."""
    try:
        return str(json.loads(body).get("health")) == "true"
    except (ValueError, AttributeError):
        return False


@dataclass
class RejectionMatrix:
    """Row: receiving member; column: connecting member."""

    members: list[str]
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    unknown_sources: dict[str, int] = field(default_factory=dict)
    first_line: str | None = None

    def add(self, rejection: Rejection, member_by_ip: dict[str, str]) -> None:
        if self.first_line is None:
            self.first_line = rejection.line
        source = member_by_ip.get(rejection.source_ip)
        if source is None:
            self.unknown_sources[rejection.source_ip] = self.unknown_sources.get(rejection.source_ip, 0) + 1
            return
        key = (rejection.receiver, source)
        self.counts[key] = self.counts.get(key, 0) + 1

    def pairs(self) -> list[tuple[str, str]]:
        return [(r, c) for r in self.members for c in self.members if r != c]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def complete(self) -> bool:
        """Every member has rejected every other member at least once."""
        pairs = self.pairs()
        return bool(pairs) and all(self.counts.get(p, 0) > 0 for p in pairs)

    def cell(self, receiver: str, connecting: str) -> str:
        if receiver == connecting:
            return "-"
        return "rejected" if self.counts.get((receiver, connecting), 0) else "accepted"

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {r: {c: self.cell(r, c) for c in self.members} for r in self.members}
