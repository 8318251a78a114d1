"""The program's NetworkPolicy, modelled by the lab and enforced with iptables."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab import network
from lab.netns_http import enter_netns
from lab.network_policy import IngressAllow, iptables_input_rules, plan_ingress
from lab.run import Lab, evaluate
from tests.lab_support import etcd35, require_lab

CLIENT_LABEL = "etcd-peer-san/client"


def extra_pod(name: str, labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "client", "image": "none"}]},
    }


def test_policy_plan_from_the_program(skip_run):
    manifests = [
        *skip_run.manifests(),
        extra_pod("outsider", {}),
        extra_pod("client", {CLIENT_LABEL: "etcd-skip"}),
    ]
    plan = network.plan_network(manifests, "abcdef")
    ips = {p.name: p.ip for p in plan.pods}
    members = tuple(ips[f"etcd-skip-{i}"] for i in range(3))
    allowed = plan_ingress(skip_run.manifests("NetworkPolicy"), list(plan.pods))
    # Only the members are selected: the extra pods admit everything.
    assert set(allowed) == {f"etcd-skip-{i}" for i in range(3)}
    assert allowed["etcd-skip-0"] == [
        IngressAllow(members, 2380),
        IngressAllow(members, 2379),
        IngressAllow((ips["client"],), 2379),
        IngressAllow(None, 2381),
    ]
    rules = iptables_input_rules(allowed["etcd-skip-0"], "10.244.0.1")
    assert "-A INPUT -s 10.244.0.1/32 -j ACCEPT" in rules  # kubelet probes from the node
    assert rules[-2:] == ["-A INPUT -p tcp -j REJECT --reject-with tcp-reset", "-A INPUT -j REJECT"]
    assert f"-A INPUT -s {ips['outsider']}/32 -p tcp -m tcp --dport 2380 -j ACCEPT" not in rules
    assert plan.pod("outsider").ingress_rules == ()


def _connects(netns: str, ip: str, port: int) -> bool:
    def attempt() -> bool:
        try:
            socket.create_connection((ip, port), timeout=2).close()
            return True
        except ConnectionRefusedError:
            return False

    with ThreadPoolExecutor(1, initializer=enter_netns, initargs=(netns,)) as pool:
        return pool.submit(attempt).result()


def test_only_members_reach_the_peer_port():
    require_lab()
    binary = etcd35()
    program = evaluate("skip", binary, {})
    extras = [extra_pod("outsider", {}), extra_pod("client", {CLIENT_LABEL: "etcd-skip"})]
    with Lab(program, binary, extra_pods=extras) as lab:
        lab.start()
        verdict, _, _ = lab.observe(30)
        assert verdict == "healthy"  # members reach each other through the policy
        assert lab.plan is not None
        service = {s.name: s.cluster_ip for s in lab.plan.services}["etcd-skip-1"]
        pod_ip = lab.plan.pod("etcd-skip-1").ip
        netns = {p.name: p.netns for p in lab.plan.pods}
        assert service is not None
        # Peer and client ports through the Service; metrics is on the pod only.
        target = {2380: service, 2379: service, 2381: pod_ip}
        results = {
            (who, port): _connects(netns[who], target[port], port)
            for who in ("outsider", "client", "etcd-skip-0")
            for port in (2380, 2379, 2381)
        }
    assert results == {
        ("outsider", 2380): False,
        ("outsider", 2379): False,
        ("outsider", 2381): True,
        ("client", 2380): False,
        ("client", 2379): True,
        ("client", 2381): True,
        ("etcd-skip-0", 2380): True,
        ("etcd-skip-0", 2379): True,
        ("etcd-skip-0", 2381): True,
    }


@pytest.fixture
def skip_run(run_stack):
    return run_stack("skip", {})
