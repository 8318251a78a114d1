"""One lab run: evaluate the program, build the node, start the members, observe,
report, tear down. Every wait is a poll on a condition with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.cluster_plan import METRICS_PORT
from components.settings import DEFAULT_IMAGE, PROJECT, Settings, check_keys, parse_settings

from . import network, proc
from .etcd_binary import EtcdBinary, EtcdNotFoundError, find_etcd
from .evidence import (
    CELL_MEANINGS,
    LogTail,
    RejectionMatrix,
    health_ok,
    last_log_lines,
    metric_value,
    peer_hosts,
    settled,
)
from .netns_http import NetnsHttp
from .pods import Container, flag_value, image_binaries, materialize
from .program import PROJECT_DIR, LabInputError, ProgramRun, run_program, stack_file

__all__ = ["LabInputError", "settled"]  # re-exported for the CLI and the scenarios

POLL_SECONDS = 0.05


class LabEnvironmentError(RuntimeError):
    """The machine cannot run the lab (exit 2)."""


@dataclass
class MemberReport:
    name: str
    pod_ip: str
    service_ip: str | None
    pid: int
    healthy: bool = False
    leader: bool = False
    exit_code: int | None = None
    probes: dict[str, bool] = field(default_factory=dict)  # readiness/liveness -> passed
    last_log_lines: list[str] = field(default_factory=list)  # of a member that exited: why


@dataclass
class LabReport:
    stack: str
    etcd_path: str
    etcd_version: str
    run_id: str
    run_dir: str
    kept: bool
    members: list[MemberReport]
    matrix: RejectionMatrix
    verdict: str
    predicted: str
    timings: dict[str, float]
    etcdctl: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)  # the program's own warnings
    timed_out: bool = False  # the deadline passed before the evidence was conclusive

    @property
    def matches(self) -> bool:
        return self.verdict == self.predicted

    def as_dict(self) -> dict[str, Any]:
        """Everything the human report (lab.report.render) shows, as data."""
        shown = {cell for row in self.matrix.as_dict().values() for cell in row.values()}
        return {
            "stack": self.stack,
            "etcd": {"path": self.etcd_path, "version": self.etcd_version},
            "runId": self.run_id,
            "runDir": self.run_dir if self.kept else None,
            "members": [
                {
                    "name": m.name,
                    "podIp": m.pod_ip,
                    "serviceIp": m.service_ip,
                    "healthy": m.healthy,
                    "leader": m.leader,
                    "exitCode": m.exit_code,
                    "lastLogLines": m.last_log_lines,
                    "probes": m.probes,
                }
                for m in self.members
            ],
            "peerMatrix": self.matrix.as_dict(),
            "peerMatrixLegend": {value: text for value, text in CELL_MEANINGS.items() if value in shown},
            "sanRejections": self.matrix.total,
            "unknownRejectionSources": self.matrix.unknown_sources,
            "firstRejection": self.matrix.first_line,
            "firstRefusal": self.matrix.first_refusal,
            "etcdctl": self.etcdctl,
            "warnings": self.warnings,
            "verdict": self.verdict,
            "predicted": self.predicted,
            "match": self.matches,
            "timedOut": self.timed_out,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabEnvironmentError("not root: the lab creates network namespaces (run it as root)")


def check_environment() -> None:
    """Raise LabEnvironmentError naming the first thing the lab cannot do here.

    Does, once, in a throwaway namespace, what a run does (network.probe_namespace):
    merely listing namespaces succeeds where none can be made, e.g. in a user namespace
    (`unshare -U -r`), whose root is not the machine's.
    """
    require_root()
    for tool, package in (("ip", "iproute2"), ("iptables-restore", "iptables"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            raise LabEnvironmentError(f"no {tool}: install the Debian package {package}")
    probe = network.probe_name()
    try:
        network.probe_namespace(probe)
    except network.LabNetworkError as exc:
        raise LabEnvironmentError(proc.one_line(str(exc))) from None
    finally:
        with _signals_deferred():
            network.remove_namespaces([probe])


def prepare(etcd: str | None) -> EtcdBinary:
    """The etcd to run, once the machine is known to be able to run the lab.

    Raises LabEnvironmentError (also for a missing etcd): callers exit 2 with its text.
    """
    check_environment()
    try:
        return find_etcd(etcd)
    except EtcdNotFoundError as exc:
        raise LabEnvironmentError(str(exc)) from None


def given_config(
    stack: str, overrides: dict[str, str], project_dir: Path = PROJECT_DIR
) -> tuple[dict[str, str], Settings]:
    """The stack file's config with the command line's overrides, as the CLI would pass it,
    checked as the program checks it (LabInputError, SettingsError), and the Settings it
    makes. The command line calls this before anything else, so a bad request creates
    nothing."""
    config, secrets = stack_file(stack, project_dir)
    config.update({f"{PROJECT}:{k}": v for k, v in overrides.items()})
    prefix = f"{PROJECT}:"
    check_keys(config, secrets - {f"{prefix}{k}" for k in overrides})
    raw = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    return config, parse_settings(raw, stack).settings


def evaluate(stack: str, binary: EtcdBinary, overrides: dict[str, str]) -> ProgramRun:
    """The program, with the stack's config, told which etcd really runs.

    The local binary replaces the image's etcd, so the image is declared at the local
    version (same repository) and etcdVersion says it too: flags and probes are then
    chosen for the etcd that runs.
    """
    # The configuration as given must be valid before the lab replaces image and
    # etcdVersion: a bad value there is an error, not a detail.
    config, _ = given_config(stack, overrides)
    image = config.get(f"{PROJECT}:image") or DEFAULT_IMAGE
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    config[f"{PROJECT}:image"] = f"{repository}:v{binary.version}"
    config[f"{PROJECT}:etcdVersion"] = str(binary.version)
    return run_program(stack, config)


def _write_objects(program: ProgramRun, directory: Path) -> None:
    """The declared objects as YAML, so users can read exactly what ran (Secret values
    redacted, `data` and `stringData` alike)."""
    directory.mkdir()
    for manifest in program.manifests():
        shown = dict(manifest)
        if manifest["kind"] == "Secret":
            sizes = {k: len(base64.b64decode(v)) for k, v in (manifest.get("data") or {}).items()}
            sizes.update({k: len(str(v).encode()) for k, v in (manifest.get("stringData") or {}).items()})
            for key in ("data", "stringData"):
                if key in manifest:
                    shown[key] = {k: f"<{sizes[k]} bytes, in the pod's volume>" for k in manifest[key] or {}}
        path = directory / f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(shown, sort_keys=False))


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Teardown must finish: SIGINT/SIGTERM that arrive during it are recorded and
    delivered once it has.

    A Python-level handler, not a signal mask: a mask is per thread, and the kernel hands
    the signal to a thread that does not block it (a NetnsHttp worker), after which Python
    still runs the main thread's handler and raises there, halfway through teardown.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can change handlers, and only it receives them
        return
    arrived: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in HELD_SIGNALS}
    for sig in HELD_SIGNALS:
        signal.signal(sig, lambda signum, _frame: arrived.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)


class Lab:
    """A running lab: network, member processes, observers. Use as a context manager."""

    def __init__(
        self,
        program: ProgramRun,
        binary: EtcdBinary,
        *,
        keep: bool = False,
        extra_pods: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.program = program
        # Pods that only join the network plan (a pod IP, the hosts file, the Service
        # DNAT) and run nothing: clients and intruders the lab acts from.
        self.extra_pods = list(extra_pods)
        self.binary = binary
        self.keep = keep
        self.run_id = network.new_run_id()
        self.run_dir = network.RUN_BASE / self.run_id
        self.net = network.Network(self.run_dir)
        self.plan: network.NetworkPlan | None = None
        self.containers: list[Container] = []
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.http: NetnsHttp | None = None
        self.timings: dict[str, float] = {}
        self.timed_out = False  # set by observe() when its deadline decided the verdict

    # ------------------------------------------------------------ set-up

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _build(self) -> None:
        started = time.monotonic()
        manifests = self.program.manifests()
        domain = _cluster_domain(manifests)
        self.plan = network.plan_network([*manifests, *self.extra_pods], self.run_id, cluster_domain=domain)
        network.RUN_BASE.mkdir(parents=True, exist_ok=True)
        network.RUN_BASE.chmod(0o711)
        try:
            self.net.apply(self.plan)  # creates run_dir and its state file first
        except (proc.CommandError, network.LabNetworkError) as exc:
            # check_environment's probe passed, yet the machine cannot build this network.
            raise LabEnvironmentError(f"cannot build the lab network: {proc.one_line(str(exc))}") from exc
        self.run_dir.chmod(0o711)
        self.timings["network"] = time.monotonic() - started

        started = time.monotonic()
        _write_objects(self.program, self.run_dir / "objects")
        # The topology as data (namespaces, addresses, DNAT rules, hosts files).
        (self.run_dir / "network-plan.json").write_text(json.dumps(self.plan.to_dict(), indent=2))
        secrets = {m["metadata"]["name"]: m for m in self.program.manifests("Secret")}
        binaries = image_binaries(self.binary.etcd, self.binary.etcdctl)
        pods = {m["metadata"]["name"]: m for m in self.program.manifests("Pod")}
        for pod_plan in self.plan.pods:
            if pod_plan.name not in pods:
                continue  # an extra pod: nothing to run
            self.containers.append(
                materialize(
                    pods[pod_plan.name], pod_plan, secrets, self.run_dir / "pods" / pod_plan.name, binaries
                )
            )
        self.http = NetnsHttp(self.plan.node_netns)
        self.timings["materialize"] = time.monotonic() - started

    def start(self) -> None:
        self.started_at = time.monotonic()
        for container in self.containers:
            self.processes[container.pod] = self._spawn(container)

    def restart(self, pod: str) -> None:
        self.processes[pod] = self._spawn(next(c for c in self.containers if c.pod == pod))

    @staticmethod
    def _spawn(container: Container) -> subprocess.Popen[bytes]:
        # The container's environment only: the lab's own (ETCD_*, ETCDCTL_*...) stays out.
        argv = proc.netns_argv(container.netns, container.argv)
        return proc.spawn(argv, stdout_path=container.log_path, env=container.env)

    # ------------------------------------------------------------ teardown

    def close(self) -> None:
        with _signals_deferred():
            started = time.monotonic()
            errors = []
            for popen in self.processes.values():
                if popen.poll() is None:
                    # Data dirs are thrown away: no need to wait for a graceful stop.
                    proc.stop(popen, signal.SIGKILL, grace=5)
            if self.http is not None:
                self.http.close()
            try:
                self.net.teardown()
            except Exception as exc:  # report, but still remove the run directory
                errors.append(str(exc))
            if not self.run_dir.exists():
                pass
            elif self.keep:
                (self.run_dir / network.KEPT_MARKER).write_text("kept with --keep\n")
            else:
                shutil.rmtree(self.run_dir)
            self.timings["teardown"] = time.monotonic() - started
            if errors:
                raise network.LabNetworkError("; ".join(errors))

    # ------------------------------------------------------------ observing

    def service_ip(self, pod: str) -> str | None:
        assert self.plan is not None
        for service in self.plan.services:
            if pod in service.endpoints:
                return service.cluster_ip
        return None

    def member_by_ip(self) -> dict[str, str]:
        return {c.pod_ip: c.pod for c in self.containers}

    def poll_health(self) -> dict[str, tuple[bool, bool]]:
        """pod -> (healthy, leader), read from the plain-HTTP metrics listener."""
        assert self.http is not None
        health = {c.pod: self.http.get_async(c.pod_ip, METRICS_PORT, "/health", 0.5) for c in self.containers}
        healthy = {
            pod: future.result().ok and health_ok(future.result().body) for pod, future in health.items()
        }
        leaders = dict.fromkeys(healthy, False)
        if all(healthy.values()):
            metrics = {
                c.pod: self.http.get_async(c.pod_ip, METRICS_PORT, "/metrics", 1.0) for c in self.containers
            }
            leaders = {
                pod: metric_value(f.result().body, "etcd_server_is_leader") == 1 for pod, f in metrics.items()
            }
        return {pod: (healthy[pod], leaders[pod]) for pod in healthy}

    def wait_settled(self, seconds: float) -> dict[str, tuple[bool, bool]]:
        """Health and leadership, polled until all are healthy with one leader or the deadline."""
        deadline = time.monotonic() + seconds
        while True:
            state = self.poll_health()
            if settled(state) or time.monotonic() >= deadline:
                return state
            time.sleep(POLL_SECONDS)

    def run_probes(self, timeout: float) -> dict[str, dict[str, bool]]:
        """Each container's declared httpGet probes, sent like kubelet: from the node.

        Kubelet counts a probe failed only after failureThreshold consecutive failures,
        one per periodSeconds: a member whose metrics listener does not serve yet (the
        noskip verdict comes ~0.1 s after the start) has failed nothing. So each probe is
        sent until its port answers; readiness is that answer, liveness and startup are
        sent until one succeeds, as kubelet would not restart the member before. A probe
        gives up when its member exits, its failure window ends, or `timeout` seconds
        after the start (the run's deadline) pass. timings["probes"]: the time it took.
        """
        assert self.http is not None
        started = time.monotonic()
        deadline = self.started_at + timeout
        pending = {(c.pod, p.kind): (c, p) for c in self.containers for p in c.probes}
        passed: dict[tuple[str, str], bool] = {}
        while True:
            now = time.monotonic()
            bounds = {
                key: min(deadline, self.started_at + p.failure_window) for key, (_, p) in pending.items()
            }
            futures = {
                key: self.http.get_async(
                    c.pod_ip, p.port, p.path, max(0.1, min(p.timeout_seconds, bounds[key] - now))
                )
                for key, (c, p) in pending.items()
            }
            for key, future in futures.items():
                answer = future.result()
                container, probe = pending[key]
                if (
                    answer.ok
                    or (answer.status is not None and probe.kind == "readiness")
                    or self.processes[container.pod].poll() is not None
                    or time.monotonic() >= bounds[key]
                ):
                    passed[key] = answer.ok
                    del pending[key]
            if not pending:
                break
            time.sleep(POLL_SECONDS)
        self.timings["probes"] = time.monotonic() - started
        return {c.pod: {p.kind: passed[(c.pod, p.kind)] for p in c.probes} for c in self.containers}

    def observe(self, timeout: float) -> tuple[str, RejectionMatrix, dict[str, tuple[bool, bool]]]:
        """Poll until the evidence is conclusive or the deadline passes.

        healthy         all members healthy with one leader; then the peer matrix is read
                        until every pair shows an accepted stream (the log lines can lag
                        the health check), at most `evidence_wait` seconds and never past
                        the deadline (timings: "evidence", the seconds this added)
        peers rejected  every member rejected every other by SAN
        unhealthy       every pair rejected or refused, not all by SAN (e.g. the CN pin);
                        every member exited; or the deadline with no SAN rejection
        """
        names = [c.pod for c in self.containers]
        evidence_wait = 2.0
        advertised = {c.pod: flag_value(c.argv, "initial-advertise-peer-urls") for c in self.containers}
        matrix = RejectionMatrix(names, peer_hosts=peer_hosts(advertised))
        tails = {c.pod: LogTail(c.log_path) for c in self.containers}
        by_ip = self.member_by_ip()
        deadline = self.started_at + timeout
        state: dict[str, tuple[bool, bool]] = {}
        verdict = "unhealthy"
        healthy_at: float | None = None
        while True:
            for pod, tail in tails.items():
                matrix.read(pod, tail.new_lines(), by_ip)
            if healthy_at is not None:
                now = time.monotonic()
                if matrix.all_accepted or now >= min(deadline, healthy_at + evidence_wait):
                    break
            else:
                state = self.poll_health()
                if settled(state):
                    verdict = "healthy"
                    healthy_at = time.monotonic()
                    continue  # read the logs again before waiting
                if matrix.complete:
                    verdict = "peers rejected"
                    break
                if matrix.closed:
                    break  # "unhealthy": no peer gets through, and not all by SAN
                if all(p.poll() is not None for p in self.processes.values()):
                    break  # every member exited: nothing more will happen
                if time.monotonic() >= deadline:
                    verdict = "peers rejected" if matrix.total else "unhealthy"
                    self.timed_out = True
                    break
            time.sleep(POLL_SECONDS)
        ended = time.monotonic()
        self.timings["verdict"] = ended - self.started_at
        self.timings["evidence"] = ended - healthy_at if healthy_at is not None else 0.0
        return verdict, matrix, state

    def etcdctl_health(self, command: str) -> dict[str, Any]:
        """Run the stack's exported `kubectl exec ... etcdctl` command inside the first pod."""
        words = shlex.split(command)
        argv = words[words.index("--") + 1 :]
        pod = _kubectl_exec_pod(words[: words.index("--")])
        container = next(c for c in self.containers if c.pod == pod)
        binaries = image_binaries(self.binary.etcd, self.binary.etcdctl)
        if argv[0] not in binaries:
            return {"command": command, "ran": False, "reason": f"{argv[0]} is not available locally"}
        local = [str(binaries[argv[0]]), *(container.rewrite(a) for a in argv[1:])]
        # As `kubectl exec` runs it: with the container's environment, not the lab's.
        result = proc.run(proc.netns_argv(container.netns, local), timeout=20, check=False, env=container.env)
        return {
            "command": command,
            "ran": True,
            "ok": result.returncode == 0,
            "output": (result.stdout + result.stderr).strip(),
        }


def _kubectl_exec_pod(words: list[str]) -> str:
    """The pod of `kubectl exec [-n NS] POD`: the first word after exec that is no option."""
    rest = words[words.index("exec") + 1 :]
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-n", "--namespace", "-c", "--container") and rest:
            rest.pop(0)
    if not rest:
        raise ValueError(f"no pod in {' '.join(words)!r}")
    return rest[0]


def _cluster_domain(manifests: list[dict[str, Any]]) -> str:
    """The domain the program used in member URLs (its clusterDomain), from a Pod command."""
    for m in manifests:
        if m["kind"] == "Pod":
            for arg in m["spec"]["containers"][0].get("command", []):
                if arg.startswith("--initial-advertise-peer-urls="):
                    host = arg.split("//", 1)[1].rsplit(":", 1)[0]
                    return host.split(".svc.", 1)[1]
    return "cluster.local"


def run_lab(
    stack: str,
    binary: EtcdBinary,
    *,
    timeout: float = 30.0,
    keep: bool = False,
    overrides: dict[str, str] | None = None,
) -> LabReport:
    total_started = time.monotonic()
    started = time.monotonic()
    program = evaluate(stack, binary, overrides or {})
    program_seconds = time.monotonic() - started
    predicted = str(program.output("expectedOutcome"))
    lab = Lab(program, binary, keep=keep)
    with lab:
        lab.timings["program"] = program_seconds
        lab.start()
        verdict, matrix, state = lab.observe(timeout)
        probes = lab.run_probes(timeout)
        etcdctl = lab.etcdctl_health(str(program.output("healthCommand"))) if verdict == "healthy" else None
        members = []
        for c in lab.containers:
            exit_code = lab.processes[c.pod].poll()
            members.append(
                MemberReport(
                    name=c.pod,
                    pod_ip=c.pod_ip,
                    service_ip=lab.service_ip(c.pod),
                    pid=lab.processes[c.pod].pid,
                    healthy=state.get(c.pod, (False, False))[0],
                    leader=state.get(c.pod, (False, False))[1],
                    exit_code=exit_code,
                    probes=probes[c.pod],
                    # Read now: the log goes with the run directory.
                    last_log_lines=last_log_lines(c.log_path.read_text(errors="replace"))
                    if exit_code is not None
                    else [],
                )
            )
    lab.timings["total"] = time.monotonic() - total_started
    return LabReport(
        stack=stack,
        etcd_path=str(binary.etcd),
        etcd_version=str(binary.version),
        run_id=lab.run_id,
        run_dir=str(lab.run_dir),
        kept=keep,
        members=members,
        matrix=matrix,
        verdict=verdict,
        predicted=predicted,
        timings=lab.timings,
        etcdctl=etcdctl,
        warnings=list(program.warnings),
        timed_out=lab.timed_out,
    )
