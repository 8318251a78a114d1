"""The lab's network model (pure planning) and its executor (root only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lab import network, proc
from lab.network import (
    ETC_NETNS,
    LabPlanError,
    Network,
    NetworkPlan,
    cleanup,
    iptables_restore_input,
    new_run_id,
    node_batch,
    plan_network,
    pod_batch,
)
from tests.lab_support import mine

# --------------------------------------------------------------------------
# Manifest builders
# --------------------------------------------------------------------------


def pod(
    name: str,
    labels: dict[str, str] | None = None,
    *,
    namespace: str = "default",
    ports: dict[str, int] | None = None,
    hostname: str | None = None,
    subdomain: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "etcd",
                "image": "etcd",
                "ports": [{"name": n, "containerPort": p} for n, p in (ports or {}).items()],
            }
        ]
    }
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
    }


def service(
    name: str,
    selector: dict[str, str],
    ports: list[dict[str, Any]],
    *,
    namespace: str = "default",
    cluster_ip: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    spec = {"selector": selector, "ports": ports, **spec}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def etcd_manifests(members: int) -> list[dict[str, Any]]:
    """The shape of the demo: one Pod and one ClusterIP Service per member."""
    ms: list[dict[str, Any]] = []
    for i in range(members):
        ms.append(
            pod(f"etcd-{i}", {"app": "etcd", "member": f"etcd-{i}"}, ports={"peer": 2380, "client": 2379})
        )
    for i in range(members):
        ms.append(
            service(
                f"etcd-{i}",
                {"member": f"etcd-{i}"},
                [{"name": "peer", "port": 2380, "targetPort": "peer"}, {"name": "client", "port": 2379}],
            )
        )
    ms.append({"kind": "Secret", "metadata": {"name": "etcd-tls"}, "data": {}})  # ignored
    return ms


def hosts_lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line and not line.startswith("#")]


def resolve(hosts: str, name: str) -> list[str]:
    """What a hosts-file lookup of `name` returns, in file order."""
    return [fields[0] for fields in hosts_lines(hosts) if name in fields[1:]]


# --------------------------------------------------------------------------
# Planning (pure, runs anywhere)
# --------------------------------------------------------------------------


def test_plan_allocates_pod_and_service_addresses_in_manifest_order() -> None:
    plan = plan_network(etcd_manifests(3), "abc123")

    assert [(p.name, p.netns, p.ip, p.host_veth) for p in plan.pods] == [
        ("etcd-0", "esl-abc123-p0", "10.244.0.10", "vh0"),
        ("etcd-1", "esl-abc123-p1", "10.244.0.11", "vh1"),
        ("etcd-2", "esl-abc123-p2", "10.244.0.12", "vh2"),
    ]
    assert plan.node_netns == "esl-abc123-node"
    assert plan.namespaces == ("esl-abc123-node", "esl-abc123-p0", "esl-abc123-p1", "esl-abc123-p2")
    assert [(s.name, s.cluster_ip, s.endpoints) for s in plan.services] == [
        ("etcd-0", "10.96.0.10", ("etcd-0",)),
        ("etcd-1", "10.96.0.11", ("etcd-1",)),
        ("etcd-2", "10.96.0.12", ("etcd-2",)),
    ]
    assert plan == plan_network(etcd_manifests(3), "abc123"), "planning must be deterministic"


def test_plan_honours_explicit_cluster_ip_and_skips_it_when_allocating() -> None:
    ms = [
        pod("a", {"app": "a"}),
        service("first", {"app": "a"}, [{"port": 80}]),
        service("pinned", {"app": "a"}, [{"port": 80}], cluster_ip="10.96.0.11"),
        service("second", {"app": "a"}, [{"port": 80}]),
    ]
    ips = {s.name: s.cluster_ip for s in plan_network(ms, "abc123").services}
    assert ips == {"first": "10.96.0.10", "pinned": "10.96.0.11", "second": "10.96.0.12"}


@pytest.mark.parametrize(
    ("selector", "service_namespace", "expected"),
    [
        ({"app": "etcd"}, "default", ("etcd-0", "etcd-1")),  # several pods match
        ({"app": "etcd", "member": "etcd-1"}, "default", ("etcd-1",)),  # every key must match
        ({"app": "etcd", "member": "etcd-9"}, "default", ()),  # a value differs
        ({"tier": "db"}, "default", ()),  # a key is missing on the pods
        ({"app": "etcd"}, "other", ("etcd-x",)),  # only pods of the Service's namespace
        ({}, "default", ()),  # no selector: endpoints are managed by hand, not modelled
    ],
)
def test_service_selects_pods_by_labels_in_its_namespace(
    selector: dict[str, str], service_namespace: str, expected: tuple[str, ...]
) -> None:
    ms = [
        pod("etcd-0", {"app": "etcd", "member": "etcd-0"}),
        pod("etcd-1", {"app": "etcd", "member": "etcd-1"}),
        pod("etcd-x", {"app": "etcd", "member": "etcd-x"}, namespace="other"),
        service("svc", selector, [{"port": 2379}], namespace=service_namespace),
    ]
    (svc,) = plan_network(ms, "abc123").services
    assert svc.endpoints == expected


def test_dnat_resolves_named_target_port_and_defaults_to_port() -> None:
    ms = [
        pod("etcd-0", {"app": "etcd"}, ports={"peer": 12380}),
        service("etcd", {"app": "etcd"}, [{"port": 2380, "targetPort": "peer"}, {"port": 2379}]),
    ]
    rules = plan_network(ms, "abc123").dnat_rules
    assert [(r.cluster_ip, r.port, r.pod_ip, r.target_port) for r in rules] == [
        ("10.96.0.10", 2380, "10.244.0.10", 12380),
        ("10.96.0.10", 2379, "10.244.0.10", 2379),
    ]


def test_dnat_with_several_endpoints_goes_to_the_first_pod() -> None:
    ms = [pod("b", {"app": "x"}), pod("a", {"app": "x"}), service("x", {"app": "x"}, [{"port": 80}])]
    (rule,) = plan_network(ms, "abc123").dnat_rules
    assert (rule.pod, rule.pod_ip) == ("b", "10.244.0.10")


def test_iptables_input_has_one_dnat_per_port_and_rejects_the_rest_of_the_service_cidr() -> None:
    text = iptables_restore_input(plan_network(etcd_manifests(1), "abc123"))
    assert text.splitlines() == [
        "*nat",
        "-A OUTPUT -d 10.96.0.10/32 -p tcp -m tcp --dport 2380 -j DNAT --to-destination 10.244.0.10:2380",
        "-A OUTPUT -d 10.96.0.10/32 -p tcp -m tcp --dport 2379 -j DNAT --to-destination 10.244.0.10:2379",
        "COMMIT",
        "*filter",
        "-A OUTPUT -d 10.96.0.0/12 -j REJECT",
        "COMMIT",
    ]


def test_headless_service_names_resolve_to_pod_ips_without_dnat() -> None:
    ms = [
        pod("etcd-0", {"app": "etcd"}, hostname="etcd-0", subdomain="etcd"),
        pod("etcd-1", {"app": "etcd"}),  # no hostname: CoreDNS names it by its dashed IP
        service("etcd", {"app": "etcd"}, [{"port": 2380}], cluster_ip="None"),
    ]
    plan = plan_network(ms, "abc123")
    (svc,) = plan.services
    assert svc.cluster_ip is None
    assert plan.dnat_rules == ()
    hosts = plan.pod("etcd-1").hosts
    assert resolve(hosts, "etcd.default.svc.cluster.local") == ["10.244.0.10", "10.244.0.11"]
    assert resolve(hosts, "etcd-0.etcd.default.svc.cluster.local") == ["10.244.0.10"]
    assert resolve(hosts, "etcd-0.etcd") == ["10.244.0.10"]
    assert resolve(hosts, "10-244-0-11.etcd.default.svc.cluster.local") == ["10.244.0.11"]
    # kubelet writes the pod's own FQDN when it has a subdomain.
    assert hosts_lines(plan.pod("etcd-0").hosts)[2] == [
        "10.244.0.10",
        "etcd-0.etcd.default.svc.cluster.local",
        "etcd-0",
    ]


def test_hosts_file_mirrors_cluster_dns_with_fqdn_first() -> None:
    ms = [*etcd_manifests(2), service("remote", {"app": "x"}, [{"port": 1}], namespace="other")]
    plan = plan_network(ms, "abc123")
    lines = hosts_lines(plan.pod("etcd-1").hosts)

    assert lines[:3] == [
        ["127.0.0.1", "localhost"],
        ["::1", "localhost", "ip6-localhost", "ip6-loopback"],
        ["10.244.0.11", "etcd-1"],  # the pod's own name, as kubelet writes it
    ]
    assert [
        "10.96.0.10",
        "etcd-0.default.svc.cluster.local",
        "etcd-0.default.svc",
        "etcd-0.default",
        "etcd-0",
    ] in lines
    # A Service of another namespace has no short name here (search path).
    assert ["10.96.0.12", "remote.other.svc.cluster.local", "remote.other.svc", "remote.other"] in lines
    # The pod's own name shadows the Service of the same name, as /etc/hosts
    # shadows DNS in a real pod; from other pods it is the Service.
    assert resolve(plan.pod("etcd-1").hosts, "etcd-1") == ["10.244.0.11"]
    assert resolve(plan.pod("etcd-0").hosts, "etcd-1") == ["10.96.0.11"]
    assert resolve(plan.pod("etcd-1").hosts, "etcd-1.default.svc.cluster.local") == ["10.96.0.11"]


def test_resolv_conf_searches_the_pod_namespace_and_points_at_no_server() -> None:
    plan = plan_network([pod("a", namespace="db")], "abc123", cluster_domain="example.test")
    assert plan.pods[0].resolv_conf.splitlines()[1:] == [
        "nameserver 127.0.0.1",
        "search db.svc.example.test svc.example.test example.test",
        "options ndots:5",
    ]


def test_commands_never_add_a_default_route_and_create_veths_inside_the_node() -> None:
    plan = plan_network(etcd_manifests(3), "abc123")
    node = node_batch(plan)
    pods = [pod_batch(plan, p) for p in plan.pods]
    assert all("default" not in text and "0.0.0.0" not in text for text in [node, *pods])
    assert "link add vh1 type veth peer name eth0 netns esl-abc123-p1" in node.splitlines()
    assert pods[1].splitlines() == [
        "link set lo up",
        "link set eth0 addrgenmode none",
        "addr add 10.244.0.11/24 dev eth0",
        "link set eth0 up",
        "route add 10.96.0.0/12 dev eth0",
    ]


def test_plan_is_json_printable() -> None:
    data = json.loads(json.dumps(plan_network(etcd_manifests(2), "abc123").to_dict()))
    assert data["pods"][1]["ip"] == "10.244.0.11"
    assert data["dnat_rules"][0]["cluster_ip"] == "10.96.0.10"


def test_pod_lookup_by_name() -> None:
    plan = plan_network([pod("a"), pod("a", namespace="other"), pod("b")], "abc123")
    assert plan.pod("b").netns == "esl-abc123-p2"
    assert plan.pod("other/a").netns == "esl-abc123-p1"
    with pytest.raises(KeyError, match="2 pods match 'a'"):
        plan.pod("a")


def test_new_run_ids_are_short_hex_and_differ() -> None:
    ids = {new_run_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 6 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize(
    ("manifests", "message"),
    [
        ([service("s", {}, [{"port": 80}], type="NodePort")], "type 'NodePort' is not supported"),
        ([service("s", {}, [{"port": 80}], type="LoadBalancer")], "only ClusterIP"),
        ([service("s", {}, [{"port": 53, "protocol": "UDP"}])], "protocol 'UDP'"),
        ([service("s", {}, [{"port": 80}], ipFamilies=["IPv6"])], "IPv4 only"),
        ([service("s", {}, [{"port": 80}], cluster_ip="192.168.1.1")], "outside the lab's Service CIDR"),
        ([service("s", {}, [{"port": 80}], cluster_ip="banana")], "not an IPv4 address"),
        (
            [service(n, {}, [{"port": 80}], cluster_ip="10.96.0.5") for n in ("a", "b")],
            "already used by Service default/a",
        ),
        ([service("s", {}, [{"port": 80}]), service("s", {}, [{"port": 80}])], "two Services"),
        ([pod("a"), pod("a")], "two Pods are called default/a"),
        ([pod(f"p{i}") for i in range(201)], "at most 200"),
        ([pod("Bad_Name")], "not a valid Kubernetes name"),
        ([{"kind": "StatefulSet", "metadata": {"name": "etcd"}}], "kind 'StatefulSet'"),
        ([{**pod("a"), "spec": {"hostNetwork": True}}], "hostNetwork"),
        (
            [pod("a", {"app": "a"}), service("s", {"app": "a"}, [{"port": 80, "targetPort": "peer"}])],
            "targetPort 'peer' names no container port of pod a",
        ),
    ],
)
def test_unsupported_manifests_are_refused_with_a_clear_message(
    manifests: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(LabPlanError, match=message):
        plan_network(manifests, "abc123")


def test_run_id_must_be_short_hex() -> None:
    with pytest.raises(LabPlanError, match="run id"):
        plan_network([], "../../etc")


# --------------------------------------------------------------------------
# lab.proc (runs anywhere)
# --------------------------------------------------------------------------


def test_failed_command_error_names_the_command_and_its_stderr() -> None:
    with pytest.raises(proc.CommandError, match=r"^sh -c echo boom >&2; exit 3: exit 3; stderr: boom$"):
        proc.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert proc.run(["sh", "-c", "exit 3"], check=False).returncode == 3
    assert proc.run(["cat"], input="piped").stdout == "piped"


def test_command_that_hangs_is_ended_at_its_timeout() -> None:
    start = time.monotonic()
    with pytest.raises(proc.CommandError, match="timed out after 0.2 s"):
        proc.run(["sleep", "5"], timeout=0.2)
    assert time.monotonic() - start < 2


def test_stop_escalates_to_sigkill_and_refuses_foreign_processes(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(30)"
    )
    child = proc.spawn([sys.executable, "-c", stubborn], stdout_path=tmp_path / "out.log")
    wait_for_line(tmp_path / "out.log", "ready")
    assert proc.stop(child, grace=0.2) == -signal.SIGKILL
    foreign = subprocess.Popen(["sleep", "5"])
    try:
        with pytest.raises(ValueError, match="not started by lab.proc.spawn"):
            proc.stop(foreign)
    finally:
        foreign.kill()
        foreign.wait()


# --------------------------------------------------------------------------
# Executor (needs root, network namespaces and iptables)
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def netns_capable() -> None:
    """Skip unless this process can make network namespaces with iptables in them."""
    missing = [tool for tool in ("ip", "iptables-restore") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip(
            f"needs root and network namespaces: euid={os.geteuid()}, missing tools: {missing or 'none'}"
        )
    probe = network.probe_name()
    try:
        proc.run(["ip", "netns", "add", probe])
    except proc.CommandError as exc:
        pytest.skip(f"needs root and network namespaces: {exc}")
    proc.run(["ip", "netns", "del", probe])


@pytest.fixture
def run_base(tmp_path: Path) -> Path:
    base = tmp_path / "runs"
    base.mkdir()
    return base


@pytest.fixture
def lab_network(netns_capable: None, run_base: Path) -> Iterator[Network]:
    plan = plan_network(etcd_manifests(3), new_run_id())
    with Network(run_base / plan.run_id) as net:
        net.apply(plan)
        yield net
    assert_gone(plan)


def assert_gone(plan: NetworkPlan) -> None:
    listed = proc.run(["ip", "netns", "list"]).stdout
    assert not [ns for ns in plan.namespaces if ns in listed]
    assert not [ns for ns in plan.namespaces if (ETC_NETNS / ns).exists()]


def host_links() -> set[str]:
    return {line.split(":")[1].strip() for line in proc.run(["ip", "-o", "link", "show"]).stdout.splitlines()}


LISTENER = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen()
    print("listening", flush=True)
    conn, peer = s.accept()
    print("peer", peer[0], flush=True)
    conn.sendall(b"hello")
    conn.close()
    """
)

CLIENT = textwrap.dedent(
    """
    import socket, sys
    name, port = sys.argv[1], int(sys.argv[2])
    resolved = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    conn = socket.create_connection((name, port), timeout=5)
    print(resolved, conn.getsockname()[0], conn.recv(16).decode())
    """
)


def wait_for_line(path: Path, prefix: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if line.startswith(prefix):
                return line
        time.sleep(0.01)
    raise AssertionError(f"no line starting {prefix!r} in {path}: {path.read_text()!r}")


def connect_through_service(
    net: Network, client: str, server: str, service_name: str, log: Path
) -> tuple[str, str]:
    """Connect from pod `client` to `service_name` served by pod `server`.

    Returns (address the name resolved to in the client, source address the
    server saw).
    """
    listener = proc.spawn(
        net.pod_exec_argv(server, [sys.executable, "-c", LISTENER, "2380"]), stdout_path=log
    )
    try:
        wait_for_line(log, "listening")
        out = proc.run(net.pod_exec_argv(client, [sys.executable, "-c", CLIENT, service_name, "2380"])).stdout
        resolved, _local, greeting = out.split()
        assert greeting == "hello"
        seen = wait_for_line(log, "peer").split()[1]
    finally:
        proc.stop(listener, grace=2)
    return resolved, seen


def test_connection_through_a_service_arrives_from_the_client_pod_ip(
    lab_network: Network, tmp_path: Path
) -> None:
    resolved, seen = connect_through_service(lab_network, "etcd-0", "etcd-1", "etcd-1", tmp_path / "l.log")
    assert resolved == "10.96.0.11"  # the name is the Service's...
    assert seen == "10.244.0.10"  # ...but the peer sees etcd-0's pod IP: no SNAT


def test_names_resolve_through_the_pod_hosts_file(lab_network: Network) -> None:
    def getent(pod_name: str, name: str) -> str:
        return proc.run(lab_network.pod_exec_argv(pod_name, ["getent", "hosts", name])).stdout.split()[0]

    assert getent("etcd-0", "etcd-2") == "10.96.0.12"
    assert getent("etcd-0", "etcd-2.default.svc.cluster.local") == "10.96.0.12"
    assert getent("etcd-0", "etcd-0") == "10.244.0.10"
    missing = proc.run(lab_network.pod_exec_argv("etcd-0", ["getent", "hosts", "example.com"]), check=False)
    assert missing.returncode == 2  # not found, at once: no DNS server answers
    plan = lab_network.plan
    assert plan is not None
    node = proc.run(proc.netns_argv(plan.node_netns, ["getent", "hosts", "example.com"]), check=False)
    assert node.returncode == 2  # the node namespace never asks the host's DNS server either


def test_nothing_outside_the_run_is_reachable(lab_network: Network) -> None:
    plan = lab_network.plan
    assert plan is not None
    for ns in plan.namespaces:
        assert proc.run(["ip", "-n", ns, "route", "show", "default"]).stdout.strip() == ""
    probe = textwrap.dedent(
        """
        import socket, sys, time
        start = time.monotonic()
        try:
            socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
            print("connected")
        except OSError as exc:
            print(type(exc).__name__, exc.errno, round(time.monotonic() - start, 3))
        """
    )

    def attempt(ns: str, address: str, port: int) -> list[str]:
        return proc.run(proc.netns_argv(ns, [sys.executable, "-c", probe, address, str(port)])).stdout.split()

    # TEST-NET-1: no route, so the kernel refuses before sending anything.
    for ns in (plan.node_netns, plan.pods[0].netns):
        kind, errno_, seconds = attempt(ns, "192.0.2.1", 80)
        assert (kind, errno_) == ("OSError", "101")  # ENETUNREACH
        assert float(seconds) < 0.5
    # A Service address or port nothing serves is refused at once, not left to time out.
    kind, _errno, seconds = attempt(plan.pods[0].netns, "10.96.0.99", 2380)
    assert kind == "ConnectionRefusedError" and float(seconds) < 0.5


def test_apply_creates_nothing_in_the_host_namespace(netns_capable: None, run_base: Path) -> None:
    before = host_links()
    plan = plan_network(etcd_manifests(3), new_run_id())
    with Network(run_base / plan.run_id) as net:
        net.apply(plan)
        assert host_links() <= before
        state = json.loads((run_base / plan.run_id / network.STATE_FILE).read_text())
        assert state["run_id"] == plan.run_id and state["owner_pid"] == os.getpid()
        assert state["namespaces"] == list(plan.namespaces)


def test_teardown_removes_everything_and_is_idempotent(netns_capable: None, run_base: Path) -> None:
    plan = plan_network(etcd_manifests(3), new_run_id())
    net = Network(run_base / plan.run_id)
    net.apply(plan)
    sleeper = proc.spawn(net.pod_exec_argv("etcd-2", ["sleep", "60"]), stdout_path=run_base / "sleep.log")
    net.teardown()
    net.teardown()
    assert net.created == ()
    assert_gone(plan)
    # A process left in a namespace would keep it alive unnamed: teardown ends it.
    assert sleeper.wait(timeout=5) == -signal.SIGTERM


def test_failed_apply_removes_what_it_had_created(
    netns_capable: None, run_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_network(etcd_manifests(2), new_run_id())
    monkeypatch.setattr(
        network, "iptables_restore_input", lambda plan, pod=None: "*nat\n-A NOSUCHCHAIN -j ACCEPT\nCOMMIT\n"
    )
    net = Network(run_base / plan.run_id)
    with pytest.raises(proc.CommandError, match="iptables-restore"):
        net.apply(plan)
    assert net.created == ()
    assert_gone(plan)


CRASHING_RUN = textwrap.dedent(
    """
    import sys, time
    from lab import proc
    from lab.network import Network, plan_network
    sys.path.insert(0, sys.argv[3])
    from test_lab_network import etcd_manifests
    plan = plan_network(etcd_manifests(2), sys.argv[1])
    net = Network(sys.argv[2])
    net.apply(plan)
    child = proc.spawn(net.pod_exec_argv("etcd-1", ["sleep", "60"]), stdout_path=sys.argv[2] + "/sleep.log")
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def test_cleanup_removes_the_leftovers_of_a_dead_run_only(netns_capable: None, run_base: Path) -> None:
    dead_plan = plan_network(etcd_manifests(2), new_run_id())
    dead_dir = run_base / dead_plan.run_id
    owner = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN, dead_plan.run_id, str(dead_dir), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert owner.stdout is not None
        sleeper_pid = int(owner.stdout.readline())
    finally:
        owner.kill()  # the crash: no teardown runs
        owner.wait()
    assert proc.is_running(sleeper_pid)

    live_plan = plan_network(etcd_manifests(1), new_run_id())
    with Network(run_base / live_plan.run_id) as live:
        live.apply(live_plan)
        removed = mine(cleanup(run_base))
        assert set(removed) == {
            *(f"netns {ns}" for ns in dead_plan.namespaces),
            *(str(ETC_NETNS / ns) for ns in dead_plan.namespaces),
            str(dead_dir),
        }
        assert_gone(dead_plan)
        assert not dead_dir.exists()
        assert not proc.is_running(sleeper_pid)
        # The live run (owner: this process) is untouched.
        assert set(live_plan.namespaces) <= set(network.list_lab_namespaces())
        assert mine(cleanup(run_base)) == []
    assert_gone(live_plan)


def test_a_probe_or_run_of_another_pid_namespace_is_never_an_orphan() -> None:
    """A PID means nothing outside its PID namespace (a lab in a container): plain cleanup
    must not take its live probe or run for dead, whatever that PID is here."""
    ours, other = network._pid_namespace(), network._pid_namespace() + 1
    dead_pid = 2**22 + 1  # above pid_max's limit: never a live process here
    assert network._orphan_probe(f"esl-probe-{ours}-{dead_pid}-1")
    assert not network._orphan_probe(f"esl-probe-{other}-{dead_pid}-1")
    assert not network._orphan_probe(network.probe_name())
    state = {"owner_pid": dead_pid, "owner_start_time": 1}
    assert not network._owner_alive({**state, "owner_pid_namespace": ours})
    assert network._owner_alive({**state, "owner_pid_namespace": other})


def test_removing_an_unused_etc_netns_waits_for_a_run_making_its_entries(tmp_path, monkeypatch) -> None:
    """A run makes /etc/netns (if missing) and its entries under a lock; a teardown that
    finds /etc/netns unused removes it under the same lock, so it can never remove it
    between another run's mkdir and that run's entries."""
    etc_netns = tmp_path / "netns"
    etc_netns.mkdir()
    (etc_netns / network.ETC_NETNS_MARKER).touch()
    monkeypatch.setattr(network, "ETC_NETNS", etc_netns)
    with network._etc_netns_lock():  # a run, between its mkdir and its entries
        teardown = threading.Thread(target=network._remove_etc_netns_if_unused)
        teardown.start()
        teardown.join(timeout=0.5)
        assert teardown.is_alive(), "the teardown did not wait for the lock"
        (etc_netns / "esl-abc123-node").mkdir()
    teardown.join(timeout=10)
    assert not teardown.is_alive()
    assert sorted(os.listdir(etc_netns)) == sorted([network.ETC_NETNS_MARKER, "esl-abc123-node"])
    (etc_netns / "esl-abc123-node").rmdir()  # the run's teardown: now it is unused
    network._remove_etc_netns_if_unused()
    assert not etc_netns.exists()


def test_a_lock_held_elsewhere_delays_nothing_forever(tmp_path, monkeypatch) -> None:
    """Someone else holds the lock (another tool, a lab stopped with Ctrl-Z inside it): a
    teardown leaves /etc/netns for the next one, a run's set-up gives up with an error."""
    etc_netns = tmp_path / "netns"
    etc_netns.mkdir()
    (etc_netns / network.ETC_NETNS_MARKER).touch()
    monkeypatch.setattr(network, "ETC_NETNS", etc_netns)
    monkeypatch.setattr(network, "ETC_NETNS_LOCK_SECONDS", 0.2)
    with network._etc_netns_lock():
        network._remove_etc_netns_if_unused()
        assert etc_netns.is_dir()  # left, not removed, and no hang
        with pytest.raises(TimeoutError, match="stayed locked for 0.2 s"), network._etc_netns_lock():
            pass
    network._remove_etc_netns_if_unused()
    assert not etc_netns.exists()


def test_cleanup_removes_an_orphaned_probe_namespace_only(netns_capable: None, run_base: Path) -> None:
    """The environment check's namespace, left by a lab killed during the check: gone with
    plain `cleanup` once its owner is dead, untouched while it lives."""
    owner = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        started = network._proc_start_time(owner.pid)
        orphan = f"esl-probe-{network._pid_namespace()}-{owner.pid}-{started}"
        alive = network.probe_name()
        for name in (orphan, alive):
            proc.run(["ip", "netns", "add", name])
        assert mine(cleanup(run_base), orphan) == []  # both owners alive
    finally:
        owner.communicate(b"")
    try:
        assert mine(cleanup(run_base), orphan) == [f"netns {orphan}"]
        assert alive in network.list_lab_namespaces()
    finally:
        network.remove_namespaces([orphan, alive])


def test_parallel_runs_do_not_collide(netns_capable: None, run_base: Path) -> None:
    plans = [plan_network(etcd_manifests(3), new_run_id()) for _ in range(2)]

    def one_run(plan: NetworkPlan) -> tuple[str, str]:
        with Network(run_base / plan.run_id) as net:
            net.apply(plan)
            return connect_through_service(net, "etcd-2", "etcd-0", "etcd-0", run_base / f"{plan.run_id}.log")

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one_run, plans))
    # Same addresses in both runs, each connection stayed inside its own run.
    assert results == [("10.96.0.10", "10.244.0.12")] * 2
    for plan in plans:
        assert_gone(plan)


@pytest.mark.parametrize("members", [3, 7])
def test_apply_and_teardown_stay_cheap(netns_capable: None, run_base: Path, members: int) -> None:
    plan = plan_network(etcd_manifests(members), new_run_id())
    start = time.monotonic()
    with Network(run_base / plan.run_id) as net:
        net.apply(plan)
    elapsed = time.monotonic() - start
    # Measured ~0.05-0.1 s here; the bound only catches a per-object regression.
    assert elapsed < 3.0
