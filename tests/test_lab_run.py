"""The lab end to end: real etcd (3.5.1 and 3.4.23) running what each stack declares."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import lab.__main__ as lab_cli
from lab import network, proc
from lab import run as lab_run
from lab.__main__ import _stop
from lab.__main__ import main as lab_main
from lab.pods import DEFAULT_PATH, LabPodError, materialize
from lab.report import render
from tests.lab_support import BINARIES, ROOT, lab_namespaces, mine, require_lab

pytestmark = pytest.mark.lab


def _assert_gone(report: lab_run.LabReport) -> None:
    assert not [n for n in lab_namespaces() if n.startswith(f"esl-{report.run_id}-")]
    assert not list(Path("/etc/netns").glob(f"esl-{report.run_id}-*"))
    assert not Path(report.run_dir).exists()
    for member in report.members:
        assert not Path(f"/proc/{member.pid}").exists(), f"{member.name} (PID {member.pid}) still runs"


# The lab's own environment must not reach the pods: each of these changes what runs.
HOSTILE_LAB_ENV = {
    # The env form of the skip flag: noskip would turn healthy (and skip, flag plus
    # variable, would not start at all).
    "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION": "true",
    # etcdctl 3.5: fatal "conflicting environment variable is shadowed" next to --cacert.
    "ETCDCTL_CACERT": "/nonexistent/ca.crt",
    # etcdctl 3.4: the v2 API has no `endpoint health`.
    "ETCDCTL_API": "2",
}


@pytest.fixture
def hostile_lab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in HOSTILE_LAB_ENV.items():
        monkeypatch.setenv(name, value)


def _ip(*args: str) -> str:
    return proc.run(["ip", *args]).stdout


def _host_network() -> dict[str, Any]:
    """The host namespace's links and routes (IPv4 and IPv6, every table)."""
    routes = {
        family: sorted(
            re.sub(r"\s+expires \d+sec", "", line)
            for line in _ip(family, "route", "show", "table", "all").splitlines()
        )
        for family in ("-4", "-6")
    }
    links = sorted((link["ifindex"], link["ifname"]) for link in json.loads(_ip("-j", "link", "show")))
    return {"links": links, "routes": routes}


def _namespace_view(ns: str) -> dict[str, Any]:
    resolv_conf = network.ETC_NETNS / ns / "resolv.conf"
    return {
        "default routes": {
            f: _ip("-n", ns, f, "route", "show", "table", "all", "default") for f in ("-4", "-6")
        },
        "links": sorted(link["ifname"] for link in json.loads(_ip("-j", "-n", ns, "link", "show"))),
        "nameservers": [
            line.split()[1] for line in resolv_conf.read_text().splitlines() if line.startswith("nameserver")
        ]
        if resolv_conf.is_file()
        else None,
    }


def _process_view(pid: int) -> dict[str, Any] | None:
    if not proc.is_running(pid):
        return None  # the member exited
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return {
        "name": status["Name"],
        "uid": status["Uid"],
        "gid": status["Gid"],
        "groups": status["Groups"],
        "no_new_privs": status["NoNewPrivs"],
        "capabilities": status["CapEff"],
        "environ": dict(item.split("=", 1) for item in environ if item),
    }


def _expected_process(pod: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """What the Pod declares for its container's process, as /proc shows it."""
    security = {**pod["spec"]["securityContext"], **pod["spec"]["containers"][0]["securityContext"]}
    uid, gid, fs_group = (
        security["runAsUser"],
        security["runAsGroup"],
        pod["spec"]["securityContext"]["fsGroup"],
    )
    assert uid != 0 and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    return {
        "name": ["etcd"],
        "uid": [str(uid)] * 4,  # real, effective, saved, filesystem
        "gid": [str(gid)] * 4,
        "groups": sorted({str(gid), str(fs_group)}),
        "no_new_privs": ["1"],
        "capabilities": ["0000000000000000"],
        "environ": env,
    }


@pytest.fixture
def live_run(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Looks at a run while its members run (once the verdict is in and the probes are
    sent, so the looking delays neither): every namespace's routes, links and
    resolv.conf, each member process, the host network. Returns a function that
    asserts all of it for the run that happened."""
    seen: dict[str, Any] = {"host before": _host_network()}
    real_run_probes = lab_run.Lab.run_probes

    def probe_then_look(self: lab_run.Lab, *args: Any, **kwargs: Any) -> Any:
        result = real_run_probes(self, *args, **kwargs)
        assert self.plan is not None
        seen["node"] = self.plan.node_netns
        seen["node links"] = sorted(["lo", self.plan.bridge, *(p.host_veth for p in self.plan.pods)])
        seen["namespaces"] = {ns: _namespace_view(ns) for ns in self.plan.namespaces}
        pods = {m["metadata"]["name"]: m for m in self.program.manifests("Pod")}
        seen["processes"] = {
            c.pod: (_process_view(self.processes[c.pod].pid), _expected_process(pods[c.pod], c.env))
            for c in self.containers
        }
        seen["host during"] = _host_network()
        return result

    monkeypatch.setattr(lab_run.Lab, "run_probes", probe_then_look)

    def check() -> None:
        assert "namespaces" in seen, "the run never got to probe its members"
        for ns, view in seen["namespaces"].items():
            # No default route (a blackhole one included), in any table, either family.
            assert view["default routes"] == {"-4": "", "-6": ""}, ns
            assert view["links"] == (seen["node links"] if ns == seen["node"] else ["eth0", "lo"]), ns
            # Its own resolv.conf, pointing at no server: the host's DNS is never asked.
            assert view["nameservers"] == ["127.0.0.1"], ns
        for pod, (process, expected) in seen["processes"].items():
            assert process == expected, pod
        # The environment of every member is exactly what its Pod declares.
        assert all(e["environ"] == {"PATH": DEFAULT_PATH} for _, e in seen["processes"].values())
        assert seen["host during"] == seen["host before"] == _host_network()

    return check


def test_skip_stack_is_healthy(etcd_binary, hostile_lab_env, live_run):
    binary = etcd_binary
    report = lab_run.run_lab("skip", binary)
    assert report.etcd_version == str(binary.version)
    assert (report.verdict, report.predicted, report.timed_out) == ("healthy", "healthy", False)
    assert [m.name for m in report.members] == ["etcd-skip-0", "etcd-skip-1", "etcd-skip-2"]
    assert all(m.healthy for m in report.members)
    assert sum(m.leader for m in report.members) == 1
    assert report.matrix.total == 0
    # Every cell backed by evidence: each member's log shows it accepted a peer stream
    # from every other member (not merely "no rejection seen").
    names = [m.name for m in report.members]
    assert report.matrix.as_dict() == {r: {c: "-" if r == c else "accepted" for c in names} for r in names}
    assert report.matrix.refusals == {} and report.matrix.first_refusal is None
    # The accepted-stream lines did not lag health by more than the bounded wait.
    assert 0.0 <= report.timings["evidence"] <= 2.0
    # The program's declared probes pass against the live member; these versions have no
    # /livez or /readyz: readiness asks /health, liveness /metrics.
    assert all(m.probes == {"readiness": True, "liveness": True} for m in report.members)
    # Despite ETCDCTL_* in the lab's environment: etcdctl runs with the pod's.
    assert report.etcdctl is not None and report.etcdctl["ok"], report.etcdctl
    assert report.etcdctl["output"].count("is healthy") == 3
    live_run()
    _assert_gone(report)


def test_noskip_members_reject_each_other(etcd_binary, hostile_lab_env, live_run):
    binary = etcd_binary
    # The lab's environment says to skip the SAN check: the pods never see it.
    report = lab_run.run_lab("noskip", binary)
    # Decided by the complete matrix, not by the deadline.
    assert (report.verdict, report.predicted, report.timed_out) == ("peers rejected", "peers rejected", False)
    names = [m.name for m in report.members]
    assert report.matrix.as_dict() == {r: {c: "-" if r == c else "rejected" for c in names} for r in names}
    assert report.matrix.unknown_sources == {}
    assert report.timings["evidence"] == 0.0  # never healthy: no wait for accepted streams
    first = report.matrix.first_line or ""
    assert "does not match any of DNSNames" in first
    assert any(f'\\"{m.pod_ip}\\"' in first for m in report.members), first
    assert not any(m.healthy or m.leader for m in report.members)
    # No leader: not ready (/health answers 503), but live (/metrics answers): kubelet
    # would not restart members that merely lack quorum.
    assert all(m.probes == {"readiness": False, "liveness": True} for m in report.members)
    # A 503 decides readiness at once, as kubelet's first failed probe would: the lab does
    # not keep asking until the 15 s failure window (period 5 s x 3) runs out.
    assert report.timings["probes"] < 5.0
    # Every member is reached through its Service address, not its pod IP.
    assert all(m.service_ip and m.service_ip.startswith("10.96.") for m in report.members)
    live_run()
    _assert_gone(report)


def test_leaderless_members_are_live_but_not_ready(etcd_binary):
    """The declared probes, sent as kubelet sends them, against noskip members that never
    elect a leader: readiness fails (/health answers 503), liveness passes (these versions
    have no /livez: it asks /metrics) for as long as they stay leaderless, so kubelet
    would not restart members that merely lack quorum."""
    program = lab_run.evaluate("noskip", etcd_binary, {})
    with lab_run.Lab(program, etcd_binary) as lab:
        lab.start()
        verdict, _, _ = lab.observe(30.0)
        samples = [lab.run_probes(30.0)]
        for _ in range(3):  # leaderless for seconds: still live, still not ready
            time.sleep(1.0)
            samples.append(lab.run_probes(30.0))
        state = lab.poll_health()
        paths = {p.kind: p.path for c in lab.containers for p in c.probes}
    assert verdict == "peers rejected"
    assert paths == {"readiness": "/health", "liveness": "/metrics"}
    names = [c.pod for c in lab.containers]
    for sample in samples:
        assert sample == {name: {"readiness": False, "liveness": True} for name in names}
    assert not any(healthy or leader for healthy, leader in state.values())


def test_json_report_from_the_command_line():
    require_lab()
    result = subprocess.run(
        [sys.executable, "-m", "lab", "run", "--stack", "noskip", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == report["predicted"] == "peers rejected"
    assert report["match"] is True
    assert report["sanRejections"] >= 6
    # The JSON matrix uses the same words as the human one.
    names = [m["name"] for m in report["members"]]
    assert report["peerMatrix"] == {r: {c: "-" if r == c else "rejected" for c in names} for r in names}
    assert set(report["timings"]) >= {"program", "network", "verdict", "teardown", "total"}


def test_unexpected_outcome_exits_1_and_leaves_nothing(monkeypatch, capsys):
    require_lab()
    # A deadline that expires at the first poll (the smallest --timeout there is): the
    # skip stack cannot be healthy yet.
    assert lab_main(["run", "--stack", "skip", "--timeout", "1e-9", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["verdict"], report["match"], report["timedOut"]) == ("unhealthy", False, True)
    assert not [n for n in lab_namespaces() if n.startswith(f"esl-{report['runId']}-")]
    assert not (network.RUN_BASE / report["runId"]).exists()


def test_error_mid_run_tears_everything_down(monkeypatch):
    require_lab()
    seen = {}

    def broken_observe(self, *args, **kwargs):
        seen["run_dir"] = self.run_dir
        seen["pids"] = [p.pid for p in self.processes.values()]
        seen["namespaces"] = self.plan.namespaces
        raise RuntimeError("observer broke")

    monkeypatch.setattr(lab_run.Lab, "observe", broken_observe)
    with pytest.raises(RuntimeError, match="observer broke"):
        lab_run.run_lab("skip", BINARIES["3.5.1"]())
    assert seen["pids"], "the members were started before the failure"
    assert not set(seen["namespaces"]) & lab_namespaces()
    assert not seen["run_dir"].exists()
    assert not [p for p in seen["pids"] if Path(f"/proc/{p}").exists()]


def _run_state_of(pid: int) -> dict | None:
    """The network state file written by the lab process `pid` (other runs may be going on)."""
    for state_file in network.RUN_BASE.glob(f"*/{network.STATE_FILE}"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if state.get("owner_pid") == pid:
            return state
    return None


@pytest.mark.parametrize(
    ("signals", "members"),
    [
        ((signal.SIGINT,), 1),
        ((signal.SIGTERM,), 1),
        # A double Ctrl-C, or `timeout -s INT` (it signals the child, then its group): the
        # second signal lands during teardown, which must still finish.
        ((signal.SIGINT, signal.SIGINT), 5),
        ((signal.SIGINT, signal.SIGTERM), 5),
        ((signal.SIGTERM, signal.SIGINT), 5),
    ],
    ids=["SIGINT", "SIGTERM", "SIGINT-SIGINT", "SIGINT-SIGTERM", "SIGTERM-SIGINT"],
)
def test_signal_mid_run_leaves_nothing(signals, members):
    require_lab()
    child = subprocess.Popen(
        [
            *[sys.executable, "-m", "lab", "run", "--stack", "skip", "--timeout", "60"],
            *["--config", f"members={members}"],
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until the run's member runs (its pod namespace holds an etcd).
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline and child.poll() is None:
        state = _run_state_of(child.pid)
        if state:
            pods = [n for n in state["namespaces"] if not n.endswith("-node")]
            if pods and all(network.pids_in_namespaces(pods).get(n) for n in pods):
                break
        time.sleep(0.02)
    assert state, "the run never created its namespaces"
    ours = set(state["namespaces"])
    for sig in signals:
        child.send_signal(sig)
        time.sleep(0.03)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + signals[0], stderr
    assert stderr.strip().splitlines()[-1].startswith("lab: "), stderr
    assert not ours & lab_namespaces(), stderr
    assert not (network.RUN_BASE / state["run_id"]).exists()
    assert not [d for d in Path("/etc/netns").glob("esl-*") if d.name in ours]


def test_two_runs_in_parallel_both_succeed():
    require_lab()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "lab", "run", "--stack", stack, "--json"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stack in ("skip", "noskip")
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    reports = [json.loads(out) for out, _ in outputs]
    assert [c.returncode for c in children] == [0, 0], [err for _, err in outputs]
    assert [r["verdict"] for r in reports] == ["healthy", "peers rejected"]
    assert reports[0]["runId"] != reports[1]["runId"]
    for report in reports:
        assert not [n for n in lab_namespaces() if n.startswith(f"esl-{report['runId']}-")]
        assert not (network.RUN_BASE / report["runId"]).exists()


def _fake_etcd(directory: Path, version: str) -> Path:
    """A stand-in that answers `--version` as an etcd of that version would."""
    directory.mkdir()
    fake = directory / "etcd"
    fake.write_text(f"#!/bin/sh\necho 'etcd Version: {version}'\necho 'Git SHA: 0'\n")
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not-root", "not root"),
        ("no-etcd", "no etcd"),
        ("no-iptables", "no iptables-restore"),
        ("etcd-fails", "no usable etcd: /bin/false --version: exit 1"),
        ("not-etcd", "no usable etcd: /bin/echo --version printed no etcd version: echo (GNU coreutils)"),
        ("etcd-too-old", "is etcd 3.3.27; the program supports 3.4.0 and newer 3.x"),
        ("etcd-too-new", "is etcd 4.0.0; the program supports 3.4.0 and newer 3.x"),
    ],
)
def test_environment_problems_exit_2_with_one_line(case, expected, monkeypatch, capsys, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to simulate each missing piece (as non-root, 'not root' is the real case)")
    if case == "not-root":
        result = _as_nobody("run", "--stack", "skip")
        code, err = result.returncode, result.stderr
    else:
        if case == "no-iptables":
            real_which = lab_run.shutil.which
            monkeypatch.setattr(
                lab_run.shutil, "which", lambda t: None if t == "iptables-restore" else real_which(t)
            )
        etcd = {
            "no-etcd": "/nonexistent/etcd",
            "etcd-fails": "/bin/false",
            "not-etcd": "/bin/echo",
            "etcd-too-old": str(_fake_etcd(tmp_path / "old", "3.3.27")),
            "etcd-too-new": str(_fake_etcd(tmp_path / "new", "4.0.0")),
        }.get(case)
        args = ["run", "--stack", "skip"] + (["--etcd", etcd] if etcd else [])
        code, err = lab_main(args), capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: cannot run here:") and expected in lines[0], err


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "lab", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        # The request is judged first, on any machine.
        (["run", "--stack", "nosuch"], 3, "lab: no stack file Pulumi.nosuch.yaml"),
        (["run", "--stack", "skip", "--config", "members=abc"], 3, "etcd-peer-san:members = 'abc'"),
        (["faults", "--stack", "skip", "--config", "memebrs=3"], 3, "did you mean 'members'?"),
        (["intruders", "--stack", "noskip"], 3, "intruders needs skipClientSanVerification = true"),
        (["faults", "--stack", "skip", "--config", "members=1"], 3, "faults needs members >= 3"),
        # cleanup removes namespaces: root's job, said in one line.
        (["cleanup"], 2, "lab: cannot run here: not root"),
    ],
    ids=["unknown-stack", "bad-config", "typo-key", "intruders-noskip", "faults-one-member", "cleanup"],
)
def test_as_non_root_a_bad_request_is_still_invalid_and_cleanup_says_root(args, code, expected):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the lab as another user (setpriv)")
    result = _as_nobody(*args)
    lines = result.stderr.strip().splitlines()
    assert (result.returncode, len(lines)) == (code, 1), result.stderr
    assert expected in lines[0]


@pytest.fixture
def own_run_base(monkeypatch):
    """A run base of this test's own, so its cleanup cannot touch any other run on the
    machine. Not under pytest's tmp_path: etcd runs as the Pods' non-root user, which
    must be able to reach its files (pytest's directories are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="etcd-san-lab-test-"))
    base.chmod(0o711)
    monkeypatch.setattr(network, "RUN_BASE", base)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_keep_leaves_the_run_directory_and_cleanup_only_removes_it_when_asked(own_run_base):
    require_lab()
    report = lab_run.run_lab("noskip", BINARIES["3.5.1"](), keep=True)
    run_dir = Path(report.run_dir)
    assert report.kept and report.verdict == "peers rejected"
    assert (run_dir / network.KEPT_MARKER).is_file()
    assert f"kept: {run_dir} " in render(report) and "cleanup --kept" in render(report)
    objects = {p.name for p in (run_dir / "objects").iterdir()}
    assert {f"pod-{m.name}.yaml" for m in report.members} <= objects
    assert {f"service-{m.name}.yaml" for m in report.members} <= objects
    secret = (run_dir / "objects" / f"secret-{report.members[0].name}-peer-tls.yaml").read_text()
    assert "PRIVATE KEY" not in secret and "bytes, in the pod's volume" in secret
    for member in report.members:
        log = run_dir / "pods" / member.name / "container.log"
        assert "does not match any of DNSNames" in log.read_text(), log
        assert not Path(f"/proc/{member.pid}").exists()
    # Only the directory stays: the namespaces went with the run.
    assert not [n for n in lab_namespaces() if n.startswith(f"esl-{report.run_id}-")]
    assert mine(network.cleanup(network.RUN_BASE)) == []
    assert run_dir.is_dir()
    assert mine(network.cleanup(network.RUN_BASE, kept=True)) == [str(run_dir)]
    assert not run_dir.exists()


# ---------------------------------------------------------------- teardown under signals


@pytest.fixture
def cli_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> Any:
    """SIGINT and SIGTERM handled as the command line handles them (lab.__main__._stop),
    once main() has started (before that, _stop only ends the process)."""
    monkeypatch.setattr(lab_cli, "_main_started", True)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _stop)
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("during", ["stopping-members", "deleting-namespaces"])
def test_a_signal_during_teardown_is_held_until_it_is_done(sig, during, monkeypatch, cli_signal_handlers):
    """The signal arrives from inside teardown (raise_signal runs the handler before it
    returns, so no timing is involved): teardown still removes everything, then the
    signal takes effect as it would have."""
    require_lab()
    binary = BINARIES["3.5.1"]()
    labs: list[lab_run.Lab] = []
    real_enter = lab_run.Lab.__enter__

    def remember(self: lab_run.Lab) -> lab_run.Lab:
        labs.append(self)
        return real_enter(self)

    monkeypatch.setattr(lab_run.Lab, "__enter__", remember)
    module, name = {
        "stopping-members": (proc, "stop"),
        "deleting-namespaces": (network, "remove_namespaces"),
    }[during]
    real = getattr(module, name)
    delivered = []

    def signal_first(*args: Any, **kwargs: Any) -> Any:
        if not delivered:
            delivered.append(sig)
            signal.raise_signal(sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, signal_first)
    try:
        with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else SystemExit):
            lab_run.run_lab("noskip", binary)
    finally:
        lab = labs[0]
        assert lab.plan is not None
        left = {
            "namespaces": set(lab.plan.namespaces) & lab_namespaces(),
            "etc_netns": {ns for ns in lab.plan.namespaces if (network.ETC_NETNS / ns).exists()},
            "run_dir": lab.run_dir.exists(),
            "members": [p.pid for p in lab.processes.values() if p.poll() is None],
        }
        lab.close()  # a no-op after a complete teardown; the rest otherwise
    assert delivered == [sig]
    assert left == {"namespaces": set(), "etc_netns": set(), "run_dir": False, "members": []}


# ---------------------------------------------------------------- the pods' processes


def _pod(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "member-0", "namespace": "ns1"},
        "spec": {"containers": [{"name": "etcd", "command": ["etcd", "--name=m"], **container}]},
    }


def test_a_pod_runs_with_its_declared_env_and_nothing_of_the_labs(tmp_path, monkeypatch):
    monkeypatch.setenv("ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", "true")
    pod = _pod(
        {
            "env": [
                {"name": "ETCD_LOG_LEVEL", "value": "debug"},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ]
        }
    )
    plan = network.plan_network([pod], "abcd12")
    container = materialize(pod, plan.pods[0], {}, tmp_path / "pod", {"etcd": Path("/bin/true")})
    expected = {
        "PATH": DEFAULT_PATH,
        "ETCD_LOG_LEVEL": "debug",
        "POD_IP": "10.244.0.10",
        "POD_NAME": "member-0",
    }
    assert container.env == expected
    # What the lab spawns for it: that environment, nothing else.
    spawned: list[dict[str, Any]] = []
    monkeypatch.setattr(lab_run.proc, "spawn", lambda argv, **kwargs: spawned.append(kwargs))
    lab = object.__new__(lab_run.Lab)
    lab.containers, lab.processes = [container], {}
    lab.start()
    lab.restart("member-0")
    assert [kwargs["env"] for kwargs in spawned] == [expected, expected]


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        (
            {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            "env A: only value",
        ),
        ({"envFrom": [{"configMapRef": {"name": "c"}}]}, "envFrom is not supported"),
        (
            {"env": [{"name": "IP", "value": "x"}], "args": ["--listen=$(IP)"]},
            "$(VAR) expansion is not supported",
        ),
    ],
)
def test_env_the_lab_cannot_give_is_refused(container, expected, tmp_path):
    pod = _pod(container)
    plan = network.plan_network([pod], "abcd12")
    with pytest.raises(LabPodError, match=re.escape(expected)):
        materialize(pod, plan.pods[0], {}, tmp_path / "pod", {"etcd": Path("/bin/true")})


def test_written_secrets_show_sizes_not_values(tmp_path):
    key = "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tls"},
        "data": {"tls.key": base64.b64encode(key.encode()).decode()},
        "stringData": {"ca.crt": key},
    }

    class Program:
        def manifests(self, kind: str | None = None) -> list[dict[str, Any]]:
            return [secret]

    lab_run._write_objects(Program(), tmp_path / "objects")  # type: ignore[arg-type]
    written = (tmp_path / "objects" / "secret-tls.yaml").read_text()
    assert "PRIVATE KEY" not in written and secret["data"]["tls.key"] not in written
    assert "secret" not in written.replace("kind: Secret", "")
    shown = yaml.safe_load(written)
    size = f"<{len(key)} bytes, in the pod's volume>"
    assert shown["data"] == {"tls.key": size} and shown["stringData"] == {"ca.crt": size}


# ---------------------------------------------------------------- an exited member


def test_a_member_that_exits_is_reported_with_its_last_log_lines(etcd_binary, monkeypatch):
    """Every member gets a flag its etcd does not know: each exits at once, and the
    report says why (the line before etcd's usage text) although its log is gone."""
    real_materialize = lab_run.materialize

    def with_unknown_flag(*args: Any, **kwargs: Any) -> Any:
        container = real_materialize(*args, **kwargs)
        container.argv.append("--no-such-flag")
        return container

    monkeypatch.setattr(lab_run, "materialize", with_unknown_flag)
    report = lab_run.run_lab("skip", etcd_binary, timeout=20)
    assert (report.verdict, report.timed_out) == ("unhealthy", False)  # decided by the exits
    why = ["flag provided but not defined: -no-such-flag"]
    assert [(m.exit_code, m.last_log_lines) for m in report.members] == [(2, why)] * 3
    # An exited member's probes end with it, not at the run's 20 s deadline.
    assert report.timings["probes"] < 5.0
    text = render(report)
    for member in report.members:
        assert f"{member.name} exited 2; its last log lines:\n  {why[0]}\n" in text
    assert [m["lastLogLines"] for m in report.as_dict()["members"]] == [why] * 3
    _assert_gone(report)


# ---------------------------------------------------------------- what the machine can do


def test_the_environment_check_makes_uses_and_deletes_a_probe_namespace(monkeypatch):
    require_lab()
    ran: list[list[str]] = []
    real_run = proc.run

    def record(argv: list[str], **kwargs: Any) -> Any:
        ran.append(argv)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(proc, "run", record)
    lab_run.check_environment()
    [probe] = [argv[3] for argv in ran if argv[1:3] == ["netns", "add"]]
    # Named after this process (PID, start time), never a run id: `cleanup` can tell an orphan.
    assert re.fullmatch(rf"esl-probe-{network._pid_namespace()}-{os.getpid()}-\d+", probe)
    used = [" ".join(argv) for argv in ran if probe in argv]
    assert any(f"-n {probe} -batch -" in cmd for cmd in used)  # bridge and veth
    assert any(f"netns exec {probe} iptables-restore" in cmd for cmd in used)
    assert probe not in lab_namespaces()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_probe_namespace_is_deleted_is_held_until_it_is_gone(
    sig, monkeypatch, cli_signal_handlers
):
    require_lab()
    real = network.remove_namespaces
    deleted: list[list[str]] = []

    def signal_first(names: Any) -> Any:
        names = list(names)
        signal.raise_signal(sig)  # the handler runs now, unless signals are held
        deleted.append(names)
        return real(names)

    monkeypatch.setattr(network, "remove_namespaces", signal_first)
    with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else SystemExit):
        lab_run.check_environment()
    [[probe]] = deleted
    assert probe.startswith("esl-probe-") and probe not in lab_namespaces()


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        (r"^ip netns add ", "no network namespaces: "),
        (r"^ip -n ", "no bridge or veth links in a network namespace: "),
        (r" iptables-restore ", "no iptables DNAT and REJECT in a network namespace: "),
    ],
)
def test_each_probe_step_that_fails_is_named_and_the_probe_is_deleted(failing, expected, monkeypatch):
    require_lab()
    ran: list[list[str]] = []
    real_run = proc.run

    def fail_one(argv: list[str], **kwargs: Any) -> Any:
        ran.append(argv)
        if re.search(failing, " ".join(argv)):
            raise proc.CommandError(argv, "exit 1; stderr: simulated\nsecond line", 1)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(proc, "run", fail_one)
    with pytest.raises(lab_run.LabEnvironmentError) as raised:
        lab_run.check_environment()
    message = str(raised.value)
    assert message.startswith(expected) and "\n" not in message and "simulated second line" in message
    [probe] = {arg for argv in ran for arg in argv if arg.startswith("esl-probe-")}
    assert probe not in lab_namespaces()


def _in_a_user_namespace(code: str) -> subprocess.CompletedProcess[str]:
    """Python `code` as root of a new user namespace: uid 0 there, no privilege over the
    machine's network namespaces."""
    if shutil.which("unshare") is None:
        pytest.fail("no unshare (util-linux)")
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_root_of_a_user_namespace_gets_exit_2_from_the_environment_check():
    require_lab()
    result = _in_a_user_namespace(
        "import sys; from lab.__main__ import main; sys.exit(main(['run', '--stack', 'skip']))"
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("lab: cannot run here: no network namespaces: ip netns add esl-")
    assert result.stdout == ""


def test_a_network_that_cannot_be_built_exits_2_and_leaves_nothing():
    """Past the environment check (skipped here), building the run's namespaces fails in
    a user namespace: exit 2 with one line, and nothing of the run is left."""
    require_lab()
    run_id = network.new_run_id()
    result = _in_a_user_namespace(
        "import sys\n"
        "from lab import network, run\n"
        "from lab.__main__ import main\n"
        "run.check_environment = lambda: None\n"
        f"network.new_run_id = lambda: {run_id!r}\n"
        "sys.exit(main(['run', '--stack', 'skip']))\n"
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        "lab: cannot run here: cannot build the lab network: ip -batch -: exit 1;"
    )
    assert "Operation not permitted" in result.stderr
    assert not [n for n in lab_namespaces() if n.startswith(f"esl-{run_id}-")]
    assert not list(network.ETC_NETNS.glob(f"esl-{run_id}-*"))
    assert not (network.RUN_BASE / run_id).exists()
