"""python -m lab faults: member crashes under writes, and a clean stop, with the SAN check skipped.

A client pod (in the lab network only, like `lab.intruders`' intruder, wearing the labels
the NetworkPolicy admits to the client port) writes a sequence of keys through the
members' Service addresses with etcd's HTTP/JSON gateway (`POST /v3/kv/put`, TLS with the
program's etcdctl certificate, each member verified as its Service name). It starts on
the victim's Service, so the crash always breaks the connection it is using; on any
error it moves on to the next Service. Meanwhile:

  1. once a third of the keys is acknowledged, the victim (a follower, or the leader as
     `etcd_server_is_leader` says) is killed with SIGKILL, and the survivors' metrics
     are polled until one of them leads;
  2. once two thirds are acknowledged (the survivors carry the writes alone), it is
     restarted with its data dir, and timed until it is healthy and serves the last key
     acknowledged before the restart (serializable read: its own copy);
  3. when the writer is done, every member is read directly (its pod IP, serializable
     range over the phase's keys) until it has every acknowledged key or a deadline.

Measured per phase: writes attempted / acknowledged / lost (acknowledged but missing on
a member; must be 0), the write-unavailability window (the longest gap between
consecutive acknowledgements while the victim is down; it includes up to one request
timeout, REQUEST_TIMEOUT, of client-side detection), the longest gap overall, the time
until a survivor leads, and the catch-up time. Finally every member gets SIGTERM at once
and must exit within the Pod's `terminationGracePeriodSeconds`.
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from components.cluster_plan import CLIENT_PORT, METRICS_PORT, PEER_PORT
from components.settings import Settings

from . import proc
from .etcd_binary import EtcdBinary
from .evidence import LogTail, health_ok, metric_value
from .network_policy import port_access
from .pod_clients import ServiceHttps, extra_pod, https_request, pod_threads
from .pods import Container, flag_value
from .program import LabInputError, ProgramRun
from .report import run_header
from .run import Lab, evaluate, given_config, settled

CLIENT_POD = "client"
PUT_PATH = "/v3/kv/put"
RANGE_PATH = "/v3/kv/range"
MEMBER_LIST_PATH = "/v3/cluster/member/list"
POLL_SECONDS = 0.02
# Per request: ~50x a put here (~4 ms), yet short, because a put that a follower
# forwarded to a leader that just died is never answered (etcd gives up after ~7 s): the
# measured window is at most the election time plus this timeout.
REQUEST_TIMEOUT = 0.25
# A key that cannot be written for this long means the cluster did not recover.
KEY_DEADLINE = 20.0
PHASE_DEADLINE = 60.0
CATCH_UP_DEADLINE = 20.0
VERIFY_DEADLINE = 20.0
# Kubernetes' default when a Pod does not set terminationGracePeriodSeconds.
KUBERNETES_DEFAULT_GRACE_SECONDS = 30.0
# What etcd logs when it starts a clean shutdown on SIGTERM (osutil.HandleInterrupts),
# measured on 3.5.1 (zap JSON: this msg with "signal":"terminated") and on 3.4.23
# (capnslog text: "N | pkg/osutil: received terminated signal, shutting down...").
SHUTDOWN_MSG = "received signal; shutting down"
SHUTDOWN_SIGNAL = "terminated"  # Go's name for SIGTERM
SHUTDOWN_TEXT = "pkg/osutil: received terminated signal, shutting down..."

Target = Literal["follower", "leader"]
TARGETS: dict[str, tuple[Target, ...]] = {
    "follower": ("follower",),
    "leader": ("leader",),
    "both": ("follower", "leader"),
}


class FaultsError(RuntimeError):
    """A phase could not be carried out (a deadline passed)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def _prefix_end(prefix: str) -> str:
    """etcd's range_end for "every key with this prefix"."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def poll_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class Endpoint:
    member: str
    service_ip: str
    pod_ip: str
    fqdn: str
    port: int = CLIENT_PORT


def member_id_hex(value: Any) -> str | None:
    """etcd's JSON gateway writes uint64 IDs as decimal strings; etcd's logs and etcdctl
    show them in hex, so the report does too."""
    try:
        return format(int(value), "x")
    except (TypeError, ValueError):
        return None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------- the writer


@dataclass(frozen=True)
class Ack:
    index: int
    key: str
    at: float  # time.monotonic()
    member: str  # whose Service acknowledged it
    address: str | None  # where the acknowledged request's connection really went


def put_acknowledged(status: int | None, body: str) -> bool:
    """etcd acknowledged a put: HTTP 200 with its JSON answer, whose response header names
    the revision the put created. Any other answer (an error status, a closed connection,
    a 200 from something that is not etcd's gateway) acknowledges nothing."""
    if status != 200:
        return False
    answer = _json_object(body)
    header = answer.get("header") if answer is not None else None
    return isinstance(header, dict) and "revision" in header


class Writer:
    """Writes prefix+0000.. in order through the Services; runs in a client-pod thread."""

    def __init__(
        self, endpoints: list[Endpoint], context: ssl.SSLContext, prefix: str, count: int, start: int
    ) -> None:
        self.endpoints = endpoints
        self.context = context
        self.prefix = prefix
        self.count = count
        self.start = start
        self.acks: list[Ack] = []  # appended by the writer thread only
        self.errors: list[tuple[float, str, str]] = []  # (when, member, error)
        self.attempted = 0
        self.tries = 0
        self.failed: list[str] = []
        self.stop = threading.Event()

    def key(self, index: int) -> str:
        return f"{self.prefix}{index:04d}"

    @staticmethod
    def value(key: str) -> str:
        return f"value of {key}"

    def run(self) -> None:
        connections: dict[str, ServiceHttps] = {}
        current = self.start
        try:
            for index in range(self.count):
                if self.stop.is_set():
                    return
                key = self.key(index)
                self.attempted += 1
                deadline = time.monotonic() + KEY_DEADLINE
                failed_in_a_row = 0
                while True:
                    endpoint = self.endpoints[current]
                    connection = connections.get(endpoint.member)
                    if connection is None:
                        connection = ServiceHttps(
                            endpoint.service_ip, endpoint.port, endpoint.fqdn, self.context, REQUEST_TIMEOUT
                        )
                        connections[endpoint.member] = connection
                    self.tries += 1
                    answer = https_request(
                        connection, "POST", PUT_PATH, {"key": _b64(key), "value": _b64(self.value(key))}
                    )
                    if put_acknowledged(answer.status, answer.body):
                        self.acks.append(
                            Ack(index, key, time.monotonic(), endpoint.member, connection.peer_address)
                        )
                        break
                    connections.pop(endpoint.member).close()
                    self.errors.append(
                        (
                            time.monotonic(),
                            endpoint.member,
                            answer.error or f"HTTP {answer.status}: {answer.body.strip()[:200]}",
                        )
                    )
                    current = (current + 1) % len(self.endpoints)
                    failed_in_a_row += 1
                    if time.monotonic() >= deadline or self.stop.is_set():
                        self.failed.append(key)
                        return  # the cluster did not recover: later keys are not attempted
                    if failed_in_a_row % len(self.endpoints) == 0:
                        time.sleep(POLL_SECONDS)  # every Service failed: poll, do not spin
        finally:
            for connection in connections.values():
                connection.close()


# ---------------------------------------------------------------- reads


@dataclass(frozen=True)
class MemberRead:
    member_id: str | None  # header.member_id of the answer: which member's copy this is
    kvs: dict[str, str]


def _post(address: str, endpoint: Endpoint, context: ssl.SSLContext, path: str, body: dict[str, Any]) -> Any:
    connection = ServiceHttps(address, endpoint.port, endpoint.fqdn, context, REQUEST_TIMEOUT)
    try:
        answer = https_request(connection, "POST", path, body)
    finally:
        connection.close()
    return _json_object(answer.body) if answer.status == 200 else None


def read_prefix(endpoint: Endpoint, context: ssl.SSLContext, prefix: str) -> MemberRead | None:
    """The member's own copy of every key with `prefix` (serializable: no leader, no
    quorum involved), read from its pod IP, with the ID of the member that answered.
    None when it does not answer."""
    answer = _post(
        endpoint.pod_ip,
        endpoint,
        context,
        RANGE_PATH,
        {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)), "serializable": True},
    )
    if answer is None:
        return None
    kvs = answer.get("kvs") or []
    return MemberRead(
        member_id_hex((answer.get("header") or {}).get("member_id")),
        {_unb64(kv["key"]): _unb64(kv.get("value", "")) for kv in kvs},
    )


def member_ids(endpoint: Endpoint, context: ssl.SSLContext) -> dict[str, str]:
    """The cluster's member list (name -> ID), asked through the endpoint's Service."""
    answer = _post(endpoint.service_ip, endpoint, context, MEMBER_LIST_PATH, {})
    if answer is None:
        raise FaultsError(f"the member list did not come through {endpoint.member}'s Service")
    ids = {str(m.get("name")): member_id_hex(m.get("ID")) for m in answer.get("members") or []}
    return {name: member_id for name, member_id in ids.items() if member_id is not None}


# ---------------------------------------------------------------- results


@dataclass
class MemberCopy:
    member: str
    member_id: str | None  # the ID in the header of the last answer read from its pod IP
    keys: int  # acknowledged keys it has, with the right value
    missing: int
    seconds: float  # writer done -> this member had every acknowledged key (or the deadline)


@dataclass
class PhaseReport:
    target: Target
    victim: str
    victim_was_leader: bool  # as its metrics said just before the kill
    keys: int
    member_ids: dict[str, str] = field(default_factory=dict)  # the cluster's member list
    acks_by_address: dict[str, int] = field(default_factory=dict)  # where acked writes went
    attempted: int = 0
    acknowledged: int = 0
    tries: int = 0
    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    # The longest gap between consecutive acks while the victim was down (from the gap
    # that spans the kill to the restart): a put in flight at the kill may still be
    # acknowledged, so the stall can start just after it.
    unavailable_seconds: float | None = None
    longest_gap_seconds: float | None = None
    catch_up_seconds: float | None = None  # restart -> healthy and has the last acked key
    leader_after_kill: str | None = None
    leader_after_kill_seconds: float | None = None  # kill -> a survivor's is_leader metric is 1
    killed_exit: int | None = None
    acked_before_kill: int = 0
    acked_before_restart: int = 0
    error_samples: list[str] = field(default_factory=list)
    copies: list[MemberCopy] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.problem is None
            and self.victim_was_leader == (self.target == "leader")
            and not self.lost
            and not self.failed
            and self.acknowledged == self.keys
            and self.catch_up_seconds is not None
            and self.leader_after_kill is not None
            and bool(self.copies)
            and all(c.missing == 0 for c in self.copies)
            and self.copies_are_each_members_own
        )

    @property
    def copies_are_each_members_own(self) -> bool:
        """Each copy was answered by the member it is reported for, and all differ."""
        ids = [c.member_id for c in self.copies]
        return (
            sorted(c.member for c in self.copies) == sorted(self.member_ids)
            and all(c.member_id == self.member_ids[c.member] for c in self.copies)
            and len(set(ids)) == len(ids)
        )

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {
            "target": self.target,
            "victim": self.victim,
            "victimWasLeader": self.victim_was_leader,
            "writes": {
                "keys": self.keys,
                "attempted": self.attempted,
                "acknowledged": self.acknowledged,
                "lost": len(self.lost),
                "lostKeys": self.lost[:20],
                "failed": self.failed,
                "requests": self.tries,
                "acknowledgedByAddress": self.acks_by_address,
            },
            "ackedBeforeKill": self.acked_before_kill,
            "ackedBeforeRestart": self.acked_before_restart,
            "killedExitStatus": self.killed_exit,
            "writeUnavailableSeconds": r(self.unavailable_seconds),
            "longestAckGapSeconds": r(self.longest_gap_seconds),
            "catchUpSeconds": r(self.catch_up_seconds),
            "leaderAfterKill": self.leader_after_kill,
            "leaderAfterKillSeconds": r(self.leader_after_kill_seconds),
            "memberIds": self.member_ids,
            "memberCopies": [
                {
                    "member": c.member,
                    "memberId": c.member_id,
                    "keys": c.keys,
                    "missing": c.missing,
                    "seconds": r(c.seconds),
                }
                for c in self.copies
            ],
            "writerErrors": self.error_samples,
            "problem": self.problem,
            "ok": self.ok,
        }


def is_shutdown_line(line: str) -> bool:
    """etcd's own line for a clean shutdown on SIGTERM, in either logger's format."""
    if SHUTDOWN_TEXT in line:
        return True
    entry = _json_object(line.strip())
    return entry is not None and entry.get("msg") == SHUTDOWN_MSG and entry.get("signal") == SHUTDOWN_SIGNAL


@dataclass
class CleanStop:
    grace_seconds: dict[str, float]  # member -> its Pod's terminationGracePeriodSeconds
    exit_seconds: dict[str, float | None]  # member -> SIGTERM to exit (None: not within grace)
    exits: dict[str, int | None]  # member -> exit status once stopped (None: still running)
    shutdown_lines: dict[str, str | None]  # member -> etcd's shutdown line after the SIGTERM
    killed: list[str]  # SIGKILLed after its grace period, as kubelet would

    @property
    def seconds(self) -> float | None:
        """SIGTERM to the last member's exit (None: not every member exited in time)."""
        times = list(self.exit_seconds.values())
        return None if None in times else max(t for t in times if t is not None)

    @property
    def ok(self) -> bool:
        """Every member ended from the SIGTERM itself (etcd re-raises it after its clean
        shutdown: exit status -15, measured on 3.4.23 and 3.5.1), logged that it shut
        down on it, and did so within its own Pod's grace period."""
        return (
            bool(self.exits)
            and not self.killed
            and all(code == -signal.SIGTERM for code in self.exits.values())
            and all(self.shutdown_lines.get(pod) for pod in self.exits)
            and all(
                (t := self.exit_seconds.get(pod)) is not None and t <= self.grace_seconds[pod]
                for pod in self.exits
            )
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "terminationGracePeriodSeconds": self.grace_seconds,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "exitSeconds": {p: None if t is None else round(t, 3) for p, t in self.exit_seconds.items()},
            "exitStatus": self.exits,
            "shutdownLogLine": self.shutdown_lines,
            "killedAfterGrace": self.killed,
            "ok": self.ok,
        }


@dataclass
class FaultsReport:
    stack: str
    etcd_path: str
    etcd_version: str
    run_id: str
    client_ip: str
    client_labels: dict[str, str]
    # From the network plan: where writes may go (Service cluster IPs), and where not.
    service_ips: dict[str, str] = field(default_factory=dict)  # Service -> cluster IP
    pod_ips: dict[str, str] = field(default_factory=dict)  # Pod -> pod IP
    phases: list[PhaseReport] = field(default_factory=list)
    clean_stop: CleanStop | None = None
    timings: dict[str, float] = field(default_factory=dict)
    problem: str | None = None

    @property
    def writes_went_to_services(self) -> bool:
        """Every acknowledged write went to a Service's cluster IP, none to a pod IP."""
        services = set(self.service_ips.values())
        return all(set(p.acks_by_address) <= services for p in self.phases)

    @property
    def ok(self) -> bool:
        return (
            self.problem is None
            and bool(self.phases)
            and all(p.ok for p in self.phases)
            and self.writes_went_to_services
            and self.clean_stop is not None
            and self.clean_stop.ok
        )

    def phase(self, target: Target) -> PhaseReport:
        return next(p for p in self.phases if p.target == target)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "etcd": {"path": self.etcd_path, "version": self.etcd_version},
            "runId": self.run_id,
            "clientIp": self.client_ip,
            "clientLabels": self.client_labels,
            "serviceIps": self.service_ips,
            "podIps": self.pod_ips,
            "writesWentToServices": self.writes_went_to_services,
            "phases": [p.as_dict() for p in self.phases],
            "cleanStop": self.clean_stop.as_dict() if self.clean_stop else None,
            "problem": self.problem,
            "ok": self.ok,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


# ---------------------------------------------------------------- acting


def client_labels(program: ProgramRun) -> dict[str, str]:
    """Labels the NetworkPolicy admits to the client port, preferring a set that does not
    also open the peer port (a client is no member)."""
    member = program.manifests("Pod")[0]
    manifests = program.manifests()
    client = port_access(manifests, member, CLIENT_PORT)
    peer = port_access(manifests, member, PEER_PORT)
    least = [labels for labels in client.labels if labels not in peer.labels]
    return dict((least or list(client.labels) or [{}])[0])


def client_context(lab: Lab, member: Container) -> ssl.SSLContext:
    """TLS as the stack's own etcdctl (its healthCommand): the client certificate the
    program issued, servers verified against the CA it names."""
    command = str(lab.program.output("healthCommand")).split()
    files = {
        option: member.rewrite(value)
        for option in ("cacert", "cert", "key")
        if (value := flag_value(command, option)) is not None
    }
    if len(files) != 3:
        raise FaultsError(f"the healthCommand names no client certificate: {' '.join(command)}")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files["cacert"])
    context.load_cert_chain(files["cert"], files["key"])
    return context


def _gaps(acks: list[Ack]) -> list[tuple[float, float]]:
    times = sorted(a.at for a in acks)
    return list(zip(times, times[1:], strict=False))


def is_leader(lab: Lab, pod_ip: str) -> bool:
    assert lab.http is not None
    answer = lab.http.get(pod_ip, METRICS_PORT, "/metrics", 1.0)
    return answer.ok and metric_value(answer.body, "etcd_server_is_leader") == 1


def member_healthy(lab: Lab, pod_ip: str) -> bool:
    assert lab.http is not None
    answer = lab.http.get(pod_ip, METRICS_PORT, "/health", 0.5)
    return answer.ok and health_ok(answer.body)


def run_phase(
    lab: Lab,
    pool: Any,
    endpoints: list[Endpoint],
    context: ssl.SSLContext,
    target: Target,
    keys: int,
    ids: dict[str, str],
) -> PhaseReport:
    state = lab.wait_settled(10.0)
    leaders = [pod for pod, (_, leader) in state.items() if leader]
    if not settled(state):
        raise FaultsError(f"before the {target} phase the cluster is not healthy with one leader: {state}")
    names = [e.member for e in endpoints]
    victim = leaders[0] if target == "leader" else next(n for n in names if n not in leaders)
    victim_endpoint = endpoints[names.index(victim)]
    writer = Writer(endpoints, context, f"{target}/key-", keys, start=names.index(victim))
    report = PhaseReport(target=target, victim=victim, victim_was_leader=False, keys=keys, member_ids=ids)

    killed_at: float | None = None
    restarted_at: float | None = None
    running = pool.submit(writer.run)
    try:
        if not poll_until(lambda: len(writer.acks) >= keys // 3 or running.done(), PHASE_DEADLINE):
            raise FaultsError(f"{target} phase: the first {keys // 3} writes were not acknowledged in time")
        report.victim_was_leader = is_leader(lab, victim_endpoint.pod_ip)
        report.acked_before_kill = len(writer.acks)
        killed_at = time.monotonic()
        report.killed_exit = proc.stop(lab.processes[victim], signal.SIGKILL)
        # An independent clock for the window: when a survivor says it leads.
        survivors = [e for e in endpoints if e.member != victim]

        def leader_elected() -> bool:
            report.leader_after_kill = next((e.member for e in survivors if is_leader(lab, e.pod_ip)), None)
            return report.leader_after_kill is not None

        if poll_until(leader_elected, PHASE_DEADLINE):
            report.leader_after_kill_seconds = time.monotonic() - killed_at

        if not poll_until(lambda: len(writer.acks) >= 2 * keys // 3 or running.done(), PHASE_DEADLINE):
            raise FaultsError(f"{target} phase: writes did not continue without {victim}")
        report.acked_before_restart = len(writer.acks)
        last_key = writer.acks[-1].key
        restarted_at = time.monotonic()
        lab.restart(victim)

        def caught_up() -> bool:
            if not member_healthy(lab, victim_endpoint.pod_ip):
                return False
            copy = pool.submit(read_prefix, victim_endpoint, context, last_key).result()
            return (
                copy is not None
                and copy.member_id == ids.get(victim)
                and copy.kvs.get(last_key) == writer.value(last_key)
            )

        if poll_until(caught_up, CATCH_UP_DEADLINE):
            report.catch_up_seconds = time.monotonic() - restarted_at
        running.result(timeout=PHASE_DEADLINE)
    except FaultsError as exc:
        report.problem = str(exc)
    finally:
        writer.stop.set()
        running.result(timeout=KEY_DEADLINE + REQUEST_TIMEOUT * 2)

    report.attempted, report.tries, report.failed = writer.attempted, writer.tries, writer.failed
    report.acknowledged = len(writer.acks)
    for ack in writer.acks:
        address = str(ack.address)
        report.acks_by_address[address] = report.acks_by_address.get(address, 0) + 1
    report.error_samples = [f"{member}: {error}" for _, member, error in writer.errors[:5]]
    gaps = _gaps(writer.acks)
    if gaps and killed_at is not None:
        report.longest_gap_seconds = max(b - a for a, b in gaps)
        down_until = restarted_at if restarted_at is not None else gaps[-1][1]
        down = [b - a for a, b in gaps if b >= killed_at and a <= down_until]
        report.unavailable_seconds = max(down) if down else None

    # Every acknowledged write, from every member's own copy.
    wanted = {a.key: writer.value(a.key) for a in writer.acks}
    verify_started = time.monotonic()
    missing: dict[str, set[str]] = {}
    for endpoint in endpoints:
        have: dict[str, str] = {}
        answered_by: list[str | None] = [None]

        def complete(
            endpoint: Endpoint = endpoint,
            have: dict[str, str] = have,
            answered_by: list[str | None] = answered_by,
        ) -> bool:
            copy = pool.submit(read_prefix, endpoint, context, writer.prefix).result()
            if copy is not None:
                answered_by[0] = copy.member_id
                have.clear()
                have.update(copy.kvs)
            return all(have.get(k) == v for k, v in wanted.items())

        done = poll_until(complete, VERIFY_DEADLINE)
        absent = {k for k, v in wanted.items() if have.get(k) != v}
        missing[endpoint.member] = absent
        report.copies.append(
            MemberCopy(
                endpoint.member,
                member_id=answered_by[0],
                keys=len(wanted) - len(absent),
                missing=len(absent),
                seconds=time.monotonic() - verify_started if done else VERIFY_DEADLINE,
            )
        )
    report.lost = sorted(set().union(*missing.values()))
    return report


def grace_periods(lab: Lab) -> dict[str, float]:
    """Each member's terminationGracePeriodSeconds, from its declared Pod."""
    pods = {m["metadata"]["name"]: m for m in lab.program.manifests("Pod")}
    return {
        c.pod: float(
            pods[c.pod]["spec"].get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE_SECONDS)
        )
        for c in lab.containers
    }


def clean_stop(lab: Lab) -> CleanStop:
    """SIGTERM to every member at once, as a node drain or `kubectl delete` would; a
    member still running after its Pod's grace period gets SIGKILL, as from kubelet."""
    grace = grace_periods(lab)
    processes = dict(lab.processes)
    logs = {c.pod: LogTail(c.log_path) for c in lab.containers}
    for tail in logs.values():
        tail.new_lines()  # only what this stop makes etcd log counts
    shutdown_lines: dict[str, str | None] = dict.fromkeys(processes)
    exit_seconds: dict[str, float | None] = dict.fromkeys(processes)
    started = time.monotonic()
    for popen in processes.values():
        popen.send_signal(signal.SIGTERM)

    def all_exited_or_late() -> bool:
        elapsed = time.monotonic() - started
        for pod, popen in processes.items():
            if exit_seconds[pod] is None and popen.poll() is not None:
                exit_seconds[pod] = elapsed
        return all(exit_seconds[pod] is not None or elapsed > grace[pod] for pod in processes)

    poll_until(all_exited_or_late, max(grace.values()) + POLL_SECONDS)
    killed = [pod for pod, popen in processes.items() if popen.poll() is None]
    for pod in killed:
        proc.stop(processes[pod], signal.SIGKILL)
    for pod, tail in logs.items():
        shutdown_lines[pod] = next(
            (line.strip() for line in tail.new_lines() if is_shutdown_line(line)), None
        )
    exits = {pod: popen.poll() for pod, popen in processes.items()}
    return CleanStop(grace, exit_seconds, exits, shutdown_lines, killed)


def check_request(stack: str, settings: Settings) -> None:
    """Raise LabInputError when the stack's configuration cannot serve this scenario (the
    command line asks before anything is created)."""
    if not settings.skip_client_san_verification:
        raise LabInputError(
            f"faults needs skipClientSanVerification = true (stack {stack!r} runs without the skip "
            "flag, so its members never form a cluster to break)"
        )
    if settings.members < 3:
        raise LabInputError(
            f"faults needs members >= 3 (stack {stack!r} has {settings.members}): "
            "a kill without losing quorum needs at least 3 members"
        )


def run_faults(
    stack: str,
    binary: EtcdBinary,
    *,
    target: str = "both",
    keys: int = 300,
    timeout: float = 30.0,
    overrides: dict[str, str] | None = None,
) -> FaultsReport:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if keys < 3:
        raise ValueError(f"keys must be at least 3, got {keys}")
    total_started = time.monotonic()
    check_request(stack, given_config(stack, overrides or {})[1])
    program = evaluate(stack, binary, overrides or {})
    program_seconds = time.monotonic() - total_started
    member_pod = program.manifests("Pod")[0]
    namespace = member_pod["metadata"].get("namespace", "default")
    labels = client_labels(program)
    with Lab(program, binary, extra_pods=[extra_pod(CLIENT_POD, namespace, labels)]) as lab:
        assert lab.plan is not None
        lab.timings["program"] = program_seconds
        client = lab.plan.pod(CLIENT_POD)
        report = FaultsReport(
            stack=stack,
            etcd_path=str(binary.etcd),
            etcd_version=str(binary.version),
            run_id=lab.run_id,
            client_ip=client.ip,
            client_labels=labels,
            service_ips={
                f"{svc.namespace}/{svc.name}": svc.cluster_ip
                for svc in lab.plan.services
                if svc.cluster_ip is not None
            },
            pod_ips={f"{p.namespace}/{p.name}": p.ip for p in lab.plan.pods},
            timings=lab.timings,
        )
        fqdns = lab.program.output("members")
        endpoints = [
            Endpoint(c.pod, str(lab.service_ip(c.pod)), c.pod_ip, str(fqdns[c.pod])) for c in lab.containers
        ]
        context = client_context(lab, lab.containers[0])
        lab.start()
        verdict, _, _ = lab.observe(timeout)
        if verdict != "healthy":
            report.problem = f"the cluster did not become healthy within {timeout:g} s ({verdict})"
            return report
        with pod_threads(client.netns) as pool:
            try:
                ids = pool.submit(member_ids, endpoints[0], context).result()
            except FaultsError as exc:
                report.problem = str(exc)
                return report
            for phase in TARGETS[target]:
                started = time.monotonic()
                report.phases.append(run_phase(lab, pool, endpoints, context, phase, keys, ids))
                lab.timings[phase] = time.monotonic() - started
        report.clean_stop = clean_stop(lab)
    lab.timings["total"] = time.monotonic() - total_started
    return report


def render(report: FaultsReport) -> str:
    lines = [
        run_header(report.stack, report.etcd_version, report.etcd_path, report.run_id),
        f"client pod {report.client_ip} (labels "
        + (", ".join(f"{k}={v}" for k, v in report.client_labels.items()) or "none")
        + "): writes through the Services, reads from each member",
        "",
    ]
    if report.problem:
        lines += [f"cannot run the scenario: {report.problem}", ""]
    for p in report.phases:
        role = "leader" if p.victim_was_leader else "follower"
        lines += [
            f"{p.target}: SIGKILL {p.victim} ({role} at the kill) after {p.acked_before_kill} acks, "
            f"restart after {p.acked_before_restart}",
            f"  writes: {p.attempted} attempted, {p.acknowledged} acknowledged, {len(p.lost)} lost, "
            f"{len(p.failed)} failed ({p.tries} requests)",
            f"  write-unavailability window {_s(p.unavailable_seconds)} (longest ack gap "
            f"{_s(p.longest_gap_seconds)}; leader {p.leader_after_kill or 'none'} "
            f"{_s(p.leader_after_kill_seconds)} after the kill); catch-up {_s(p.catch_up_seconds)}",
            "  acknowledged through: "
            + ", ".join(f"{address} ({count})" for address, count in sorted(p.acks_by_address.items())),
            "  every member's copy (member ID that answered): "
            + ", ".join(f"{c.member} ({c.member_id}) {c.keys}/{c.keys + c.missing}" for c in p.copies),
        ]
        if p.error_samples:
            lines.append(f"  first writer error: {p.error_samples[0]}")
        if p.problem:
            lines.append(f"  problem: {p.problem}")
        lines.append(f"  {'ok' if p.ok else 'NOT OK'}")
        lines.append("")
    if report.clean_stop:
        c = report.clean_stop
        lines.append(
            "clean stop: SIGTERM to all, "
            + ("all exited in " + _s(c.seconds) if c.seconds is not None else "NOT all exited")
            + f" (grace {'/'.join(f'{g:g}' for g in sorted(set(c.grace_seconds.values())))} s "
            + "from the Pods; exit status "
            + ", ".join(f"{pod} {code}" for pod, code in c.exits.items())
            + (f"; SIGKILLed {', '.join(c.killed)}" if c.killed else "")
            + f"): {'ok' if c.ok else 'NOT OK'}"
        )
        for pod, line in c.shutdown_lines.items():
            lines.append(f"  {pod} log: {line or 'NO SHUTDOWN LINE'}")
    t = report.timings
    lines.append(f"result: {'ok' if report.ok else 'FAILED'}; total {t.get('total', 0):.2f} s")
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"
