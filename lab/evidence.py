"""Reading etcd's own evidence: peer connections in its logs, health and leadership.

Each cell of the peer matrix (row: receiving member, column: connecting member) says
only what a log line proves:

rejected  the receiving member refused the connecting member's certificate by SAN.
          `rejected connection` alone proves nothing (healthy clusters log it for EOFs
          and closed connections, measured); only the SAN error counts:
            3.5 (JSON): "error":"tls: \"10.244.0.11\" does not match any of DNSNames [...]"
            3.4 (text): (error "tls: \"10.244.0.11\" does not match any of DNSNames [...]" ...)
refused   another peer-authentication refusal on a connection from that member:
          - the receiving member's `rejected connection` line from the connecting
            member's address whose error is the common-name pin
            ("client certificate authentication failed"), an unknown authority, or the
            TLS alert "remote error: tls: bad certificate" (the connecting member refused
            the receiving member's certificate, e.g. because its CN misses the pin);
          - the connecting member's own line with the pin error for the receiving
            member's ID (3.5: "remote-peer-id":"<id>", ..."error":"client certificate
            authentication failed"; 3.4: "health check for peer <id> could not connect:
            client certificate authentication failed").
accepted  the receiving member attached an incoming peer stream from the connecting
          member (etcd's stream handler accepted the peer's GET /raft/stream/...):
            3.5: "msg":"established TCP streaming connection with remote peer",
                 "stream-writer-type":"stream Message",...,"remote-peer-id":"<id>"
            3.4: "established a TCP streaming connection with peer <id> (stream Message writer)"
          (the `stream-reader-type` / `reader` lines are the member's own outgoing
          connections and say nothing about what it accepted).
unknown   no evidence either way.

Member IDs are mapped to member names from etcd's own lines: each member's own ID
("starting local member" / "starting member <id> in cluster"), and the "added member"
lines, whose peer URLs' host is a member's Service name (`peer_hosts`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from components.cluster_plan import REJECTION_MARKER

_SAN_ERROR = re.compile(r'tls: \\?"(?P<ip>[0-9a-fA-F.:]+)\\?" ' + re.escape(REJECTION_MARKER))
_CN_ERROR = "client certificate authentication failed"
_REJECTED = "rejected connection"
# Errors of a receiving member's `rejected connection` line that are peer-auth refusals
# (the SAN error aside): the CN pin, an unknown CA, and the connecting side's TLS alert
# that it refused the receiving member's certificate.
_REFUSAL_ERRORS = (_CN_ERROR, "certificate signed by unknown authority", "remote error: tls: bad certificate")
# 3.5: "remote-addr":"10.244.0.11:55620"   3.4: rejected connection from "10.244.0.11:55622"
_REMOTE_ADDR = re.compile(r'(?:"remote-addr":"|rejected connection from ")\[?(?P<ip>[0-9a-fA-F.:]+?)\]?:\d+"')
_STREAM_ESTABLISHED_35 = "established TCP streaming connection with remote peer"
_STREAM_WRITER_34 = re.compile(
    r"established a TCP streaming connection with peer (?P<id>[0-9a-f]+) \(stream [^)]*writer\)"
)
_CN_PEER_34 = re.compile(r"\bpeer (?P<id>[0-9a-f]+)\b.*" + re.escape(_CN_ERROR))
_LOCAL_MEMBER_34 = re.compile(r"\b(?:re)?starting member (?P<id>[0-9a-f]+) in cluster\b")
_ADDED_MEMBER_34 = re.compile(r"\badded member (?P<id>[0-9a-f]+) \[(?P<urls>[^\]]*)\] to cluster\b")
_LOCAL_MEMBER_MSGS_35 = ("starting local member", "restarting local member")

Cell = Literal["-", "rejected", "refused", "accepted", "unknown"]
CELL_VALUES: tuple[Cell, ...] = ("rejected", "refused", "accepted", "unknown")
# What each peer-matrix value proves, in words for the reports (the module doc has the lines).
CELL_MEANINGS: dict[Cell, str] = {
    "accepted": "the receiving member's log shows it accepted a peer stream from the connecting member",
    "rejected": "the receiving member refused the connecting member's certificate by SAN",
    "refused": "another peer-auth refusal on that connection (CN pin, unknown CA, certificate refused)",
    "unknown": "no evidence either way in the logs",
}


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


def member_id(text: str) -> str:
    """etcd's spelling of a member ID (types.ID: lower-case hex, no leading zeros)."""
    return format(int(text, 16), "x")


@dataclass(frozen=True)
class Refusal:
    """A peer-auth refusal other than the SAN error.

    Seen by the receiving member (`source_ip` set: the log owner refused, or was refused
    by, the member connecting from there) or by the connecting member (`peer_id` set: the
    log owner's connection to that member failed the CN pin).
    """

    log_owner: str
    line: str
    source_ip: str | None = None
    peer_id: str | None = None


@dataclass(frozen=True)
class AcceptedStream:
    receiver: str  # the log owner, which accepted an incoming stream
    peer_id: str  # the connecting member's ID
    line: str


@dataclass
class LineEvidence:
    """What one member's log lines prove about peer connections (see the module doc)."""

    rejections: list[Rejection] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    accepted: list[AcceptedStream] = field(default_factory=list)
    own_id: str | None = None  # the log owner's member ID
    members: dict[str, list[str]] = field(default_factory=dict)  # "added member": ID -> peer URLs


def _json(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_lines(owner: str, lines: Iterable[str]) -> LineEvidence:
    """Parse one member's log lines (etcd 3.5 JSON or 3.4 text) into evidence."""
    found = LineEvidence()
    for raw in lines:
        line = raw.rstrip("\n")
        match = _SAN_ERROR.search(line)
        if match:
            found.rejections.append(Rejection(owner, match.group("ip"), line))
            continue
        if _REJECTED in line:
            if any(error in line for error in _REFUSAL_ERRORS):
                addr = _REMOTE_ADDR.search(line)
                if addr:
                    found.refusals.append(Refusal(owner, line, source_ip=addr.group("ip")))
            continue
        record = _json(line)
        if record is not None:
            msg, peer = record.get("msg"), record.get("remote-peer-id")
            if peer and _CN_ERROR in str(record.get("error", "")):
                found.refusals.append(Refusal(owner, line, peer_id=member_id(peer)))
            elif peer and msg == _STREAM_ESTABLISHED_35 and record.get("stream-writer-type"):
                found.accepted.append(AcceptedStream(owner, member_id(peer), line))
            elif msg in _LOCAL_MEMBER_MSGS_35 and record.get("local-member-id"):
                found.own_id = member_id(record["local-member-id"])
            elif msg == "added member" and record.get("added-peer-id"):
                urls = record.get("added-peer-peer-urls") or []
                found.members[member_id(record["added-peer-id"])] = [str(u) for u in urls]
            continue
        if (m := _STREAM_WRITER_34.search(line)) is not None:
            found.accepted.append(AcceptedStream(owner, member_id(m.group("id")), line))
        elif _CN_ERROR in line and (m := _CN_PEER_34.search(line)) is not None:
            found.refusals.append(Refusal(owner, line, peer_id=member_id(m.group("id"))))
        elif (m := _LOCAL_MEMBER_34.search(line)) is not None:
            found.own_id = member_id(m.group("id"))
        elif (m := _ADDED_MEMBER_34.search(line)) is not None:
            found.members[member_id(m.group("id"))] = m.group("urls").split()
    return found


def peer_hosts(advertised: dict[str, str | None]) -> dict[str, str]:
    """Host of each member's advertised peer URL(s) -> member (`--initial-advertise-peer-urls`)."""
    hosts = {}
    for member, urls in advertised.items():
        for url in (urls or "").split(","):
            host = urlsplit(url.strip()).hostname
            if host:
                hosts[host] = member
    return hosts


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


def settled(state: dict[str, tuple[bool, bool]]) -> bool:
    """member -> (healthy, leader): every member healthy and exactly one leader.

    /health is each member's own view (it sees some leader); exactly one member that
    counts itself leader (etcd_server_is_leader) is the cluster agreeing. Around an
    election there can be none yet, or an old leader that has not stepped down.
    """
    return all(h for h, _ in state.values()) and sum(leader for _, leader in state.values()) == 1


def last_log_lines(text: str, count: int = 3) -> list[str]:
    """The last `count` non-empty lines of a member's log: why it exited.

    etcd prints its usage text after a flag error ("flag provided but not defined"):
    the lines before that usage say why, so it is cut off.
    """
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if "Usage:" in lines:
        lines = lines[: len(lines) - 1 - lines[::-1].index("Usage:")]
    return lines[-count:]


@dataclass
class RejectionMatrix:
    """Row: receiving member; column: connecting member. Cells: see the module doc."""

    members: list[str]
    # Host of each member's advertised peer URL -> member: maps "added member" lines.
    peer_hosts: dict[str, str] = field(default_factory=dict)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # SAN rejections
    unknown_sources: dict[str, int] = field(default_factory=dict)  # SAN rejections from no member
    first_line: str | None = None  # the first SAN rejection
    refusals: dict[tuple[str, str], int] = field(default_factory=dict)  # (receiver, connecting)
    accepted_streams: dict[tuple[str, str], int] = field(default_factory=dict)  # (receiver, connecting)
    member_ids: dict[str, str] = field(default_factory=dict)  # etcd member ID -> member
    first_refusal: str | None = None
    # Evidence naming a member ID not (yet) mapped: resolved once an ID line arrives
    # (3.4 may log a stream before the "added member" line that names its peer).
    _pending_accepted: list[AcceptedStream] = field(default_factory=list, repr=False)
    _pending_refusals: list[Refusal] = field(default_factory=list, repr=False)

    def add(self, rejection: Rejection, member_by_ip: dict[str, str]) -> None:
        if self.first_line is None:
            self.first_line = rejection.line
        source = member_by_ip.get(rejection.source_ip)
        if source is None:
            self.unknown_sources[rejection.source_ip] = self.unknown_sources.get(rejection.source_ip, 0) + 1
            return
        key = (rejection.receiver, source)
        self.counts[key] = self.counts.get(key, 0) + 1

    def read(self, owner: str, lines: list[str], member_by_ip: dict[str, str]) -> None:
        """Take in new lines of member `owner`'s log."""
        if not lines:
            return
        found = read_lines(owner, lines)
        for rejection in found.rejections:
            self.add(rejection, member_by_ip)
        if found.own_id is not None:
            self.member_ids[found.own_id] = owner
        for peer_id, urls in found.members.items():
            for url in urls:
                member = self.peer_hosts.get(urlsplit(url).hostname or "")
                if member is not None:
                    self.member_ids.setdefault(peer_id, member)
        for refusal in found.refusals:
            if refusal.source_ip is not None:
                source = member_by_ip.get(refusal.source_ip)
                if source is not None:
                    self._refuse(refusal.log_owner, source, refusal.line)
            else:
                self._pending_refusals.append(refusal)
        self._pending_accepted += found.accepted
        self._resolve()

    def _refuse(self, receiver: str, connecting: str, line: str) -> None:
        if self.first_refusal is None:
            self.first_refusal = line
        self.refusals[(receiver, connecting)] = self.refusals.get((receiver, connecting), 0) + 1

    def _resolve(self) -> None:
        pending, self._pending_accepted = self._pending_accepted, []
        for stream in pending:
            connecting = self.member_ids.get(stream.peer_id)
            if connecting is None:
                self._pending_accepted.append(stream)
            else:
                key = (stream.receiver, connecting)
                self.accepted_streams[key] = self.accepted_streams.get(key, 0) + 1
        refusals, self._pending_refusals = self._pending_refusals, []
        for refusal in refusals:
            receiver = self.member_ids.get(refusal.peer_id or "")
            if receiver is None:
                self._pending_refusals.append(refusal)
            else:  # the log owner's connection to `receiver` failed the pin
                self._refuse(receiver, refusal.log_owner, refusal.line)

    def pairs(self) -> list[tuple[str, str]]:
        return [(r, c) for r in self.members for c in self.members if r != c]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def complete(self) -> bool:
        """Every member has rejected every other member (by SAN) at least once."""
        pairs = self.pairs()
        return bool(pairs) and all(self.counts.get(p, 0) > 0 for p in pairs)

    @property
    def closed(self) -> bool:
        """Every off-diagonal cell is `rejected` or `refused`: no peer can get through."""
        pairs = self.pairs()
        return bool(pairs) and all(self.cell(r, c) in ("rejected", "refused") for r, c in pairs)

    @property
    def all_accepted(self) -> bool:
        """Every off-diagonal cell is `accepted` (true for a single member)."""
        return all(self.cell(r, c) == "accepted" for r, c in self.pairs())

    def cell(self, receiver: str, connecting: str) -> Cell:
        if receiver == connecting:
            return "-"
        key = (receiver, connecting)
        if self.counts.get(key, 0):
            return "rejected"
        if self.refusals.get(key, 0):
            return "refused"
        if self.accepted_streams.get(key, 0):
            return "accepted"
        return "unknown"

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {r: {c: self.cell(r, c) for c in self.members} for r in self.members}
