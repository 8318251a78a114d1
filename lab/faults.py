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

from . import proc
from .etcd_binary import EtcdBinary
from .evidence import health_ok, metric_value
from .network_policy import port_access
from .pod_clients import ServiceHttps, extra_pod, https_request, pod_threads
from .pods import Container, flag_value, has_skip_flag
from .program import LabInputError, ProgramRun
from .run import Lab, evaluate, settled

CLIENT_POD = "client"
PUT_PATH = "/v3/kv/put"
RANGE_PATH = "/v3/kv/range"
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


# ---------------------------------------------------------------- the writer


@dataclass(frozen=True)
class Ack:
    index: int
    key: str
    at: float  # time.monotonic()
    member: str  # whose Service acknowledged it


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
                            endpoint.service_ip, CLIENT_PORT, endpoint.fqdn, self.context, REQUEST_TIMEOUT
                        )
                        connections[endpoint.member] = connection
                    self.tries += 1
                    answer = https_request(
                        connection, "POST", PUT_PATH, {"key": _b64(key), "value": _b64(self.value(key))}
                    )
                    if answer.status == 200:
                        self.acks.append(Ack(index, key, time.monotonic(), endpoint.member))
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


def read_prefix(endpoint: Endpoint, context: ssl.SSLContext, prefix: str) -> dict[str, str] | None:
    """The member's own copy of every key with `prefix` (serializable: no leader, no
    quorum involved), read from its pod IP. None when it does not answer."""
    connection = ServiceHttps(endpoint.pod_ip, CLIENT_PORT, endpoint.fqdn, context, REQUEST_TIMEOUT)
    try:
        answer = https_request(
            connection,
            "POST",
            RANGE_PATH,
            {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)), "serializable": True},
        )
    finally:
        connection.close()
    if answer.status != 200:
        return None
    kvs = json.loads(answer.body).get("kvs") or []
    return {_unb64(kv["key"]): _unb64(kv.get("value", "")) for kv in kvs}


# ---------------------------------------------------------------- results


@dataclass
class MemberCopy:
    member: str
    keys: int  # acknowledged keys it has, with the right value
    missing: int
    seconds: float  # writer done -> this member had every acknowledged key (or the deadline)


@dataclass
class PhaseReport:
    target: Target
    victim: str
    victim_was_leader: bool  # as its metrics said just before the kill
    keys: int
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
            },
            "ackedBeforeKill": self.acked_before_kill,
            "ackedBeforeRestart": self.acked_before_restart,
            "killedExitStatus": self.killed_exit,
            "writeUnavailableSeconds": r(self.unavailable_seconds),
            "longestAckGapSeconds": r(self.longest_gap_seconds),
            "catchUpSeconds": r(self.catch_up_seconds),
            "leaderAfterKill": self.leader_after_kill,
            "leaderAfterKillSeconds": r(self.leader_after_kill_seconds),
            "memberCopies": [
                {"member": c.member, "keys": c.keys, "missing": c.missing, "seconds": r(c.seconds)}
                for c in self.copies
            ],
            "writerErrors": self.error_samples,
            "problem": self.problem,
            "ok": self.ok,
        }


@dataclass
class CleanStop:
    grace_seconds: float
    seconds: float
    exits: dict[str, int | None]  # member -> exit status (None: still running at the deadline)
    killed: list[str]  # SIGKILLed after the grace period

    @property
    def ok(self) -> bool:
        return (
            not self.killed
            and self.seconds <= self.grace_seconds
            and all(code is not None for code in self.exits.values())
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "terminationGracePeriodSeconds": self.grace_seconds,
            "seconds": round(self.seconds, 3),
            "exitStatus": self.exits,
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
    phases: list[PhaseReport] = field(default_factory=list)
    clean_stop: CleanStop | None = None
    timings: dict[str, float] = field(default_factory=dict)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.problem is None
            and bool(self.phases)
            and all(p.ok for p in self.phases)
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
) -> PhaseReport:
    state = lab.wait_settled(10.0)
    leaders = [pod for pod, (_, leader) in state.items() if leader]
    if not settled(state):
        raise FaultsError(f"before the {target} phase the cluster is not healthy with one leader: {state}")
    names = [e.member for e in endpoints]
    victim = leaders[0] if target == "leader" else next(n for n in names if n not in leaders)
    victim_endpoint = endpoints[names.index(victim)]
    writer = Writer(endpoints, context, f"{target}/key-", keys, start=names.index(victim))
    report = PhaseReport(target=target, victim=victim, victim_was_leader=False, keys=keys)

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
            return copy is not None and copy.get(last_key) == writer.value(last_key)

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

        def complete(endpoint: Endpoint = endpoint, have: dict[str, str] = have) -> bool:
            copy = pool.submit(read_prefix, endpoint, context, writer.prefix).result()
            if copy is not None:
                have.clear()
                have.update(copy)
            return all(have.get(k) == v for k, v in wanted.items())

        done = poll_until(complete, VERIFY_DEADLINE)
        absent = {k for k, v in wanted.items() if have.get(k) != v}
        missing[endpoint.member] = absent
        report.copies.append(
            MemberCopy(
                endpoint.member,
                keys=len(wanted) - len(absent),
                missing=len(absent),
                seconds=time.monotonic() - verify_started if done else VERIFY_DEADLINE,
            )
        )
    report.lost = sorted(set().union(*missing.values()))
    return report


def clean_stop(lab: Lab) -> CleanStop:
    """SIGTERM to every member at once, as a node drain or `kubectl delete` would; any
    member still running after the Pod's grace period gets SIGKILL, as from kubelet."""
    grace = max(
        float(m["spec"].get("terminationGracePeriodSeconds", 30)) for m in lab.program.manifests("Pod")
    )
    started = time.monotonic()
    processes = dict(lab.processes)
    for popen in processes.values():
        popen.send_signal(signal.SIGTERM)
    poll_until(lambda: all(p.poll() is not None for p in processes.values()), grace)
    seconds = time.monotonic() - started
    exits = {pod: p.poll() for pod, p in processes.items()}
    killed = [pod for pod, code in exits.items() if code is None]
    for pod in killed:
        proc.stop(processes[pod], signal.SIGKILL)
    return CleanStop(grace, seconds, exits, killed)


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
    program = evaluate(stack, binary, overrides or {})
    program_seconds = time.monotonic() - total_started
    member_pods = program.manifests("Pod")
    member_pod = member_pods[0]
    if not has_skip_flag(member_pod["spec"]["containers"][0]["command"]):
        raise LabInputError(
            f"faults needs skipClientSanVerification = true (stack {stack!r} runs without the skip "
            "flag, so its members never form a cluster to break)"
        )
    if len(member_pods) < 3:
        raise LabInputError(
            f"faults needs members >= 3 (stack {stack!r} has {len(member_pods)}): "
            "a kill without losing quorum needs at least 3 members"
        )
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
            timings=lab.timings,
        )
        fqdns = lab.program.output("members")
        endpoints = [
            Endpoint(c.pod, str(lab.service_ip(c.pod)), c.pod_ip, str(fqdns[c.pod])) for c in lab.containers
        ]
        context = client_context(lab, lab.containers[0])
        lab.start()
        verdict, _, _ = lab.observe(len(lab.containers), timeout)
        if verdict != "healthy":
            report.problem = f"the cluster did not become healthy within {timeout:g} s ({verdict})"
            return report
        with pod_threads(client.netns) as pool:
            for phase in TARGETS[target]:
                started = time.monotonic()
                report.phases.append(run_phase(lab, pool, endpoints, context, phase, keys))
                lab.timings[phase] = time.monotonic() - started
        report.clean_stop = clean_stop(lab)
    lab.timings["total"] = time.monotonic() - total_started
    return report


def render(report: FaultsReport) -> str:
    lines = [
        f"stack {report.stack}: etcd {report.etcd_version} ({report.etcd_path}), run {report.run_id}",
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
            "  every member's copy: "
            + ", ".join(f"{c.member} {c.keys}/{c.keys + c.missing}" for c in p.copies),
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
            f"clean stop: SIGTERM to all, all exited in {c.seconds:.2f} s "
            f"(grace {c.grace_seconds:g} s; exit status "
            + ", ".join(f"{pod} {code}" for pod, code in c.exits.items())
            + (f"; SIGKILLed {', '.join(c.killed)}" if c.killed else "")
            + f"): {'ok' if c.ok else 'NOT OK'}"
        )
    t = report.timings
    lines.append(f"result: {'ok' if report.ok else 'FAILED'}; total {t.get('total', 0):.2f} s")
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"
