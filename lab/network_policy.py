"""NetworkPolicy (ingress) in the lab: iptables filter INPUT rules per pod namespace.

Models what the program declares and what a NetworkPolicy-enforcing CNI does with it:
a pod selected by a policy with Ingress accepts only the listed (source, port) pairs,
traffic from its own node (kubelet probes) and replies; everything else is refused.
Refused with a TCP reset rather than dropped, so a blocked connect fails at once.
Supported: podSelector.matchLabels, from[].podSelector.matchLabels (same namespace),
from[].namespaceSelector {} (any pod), ports by number or container-port name, TCP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .network import LabPlanError, PodPlan


@dataclass(frozen=True)
class IngressAllow:
    sources: tuple[str, ...] | None  # pod IPs; None: any source
    port: int | None  # None: every port


def _matches(selector: Mapping[str, Any], pod: PodPlan) -> bool:
    if set(selector) - {"matchLabels"}:
        raise LabPlanError(f"selector {dict(selector)}: the lab supports matchLabels only")
    labels = dict(pod.labels)
    return all(labels.get(str(k)) == str(v) for k, v in (selector.get("matchLabels") or {}).items())


def _sources(
    peers: list[Mapping[str, Any]] | None, namespace: str, pods: list[PodPlan]
) -> tuple[str, ...] | None:
    if not peers:
        return None  # no `from`: every source
    ips: list[str] = []
    for peer in peers:
        if set(peer) - {"podSelector", "namespaceSelector"} or "ipBlock" in peer:
            raise LabPlanError(f"ingress from {dict(peer)}: the lab supports podSelector/namespaceSelector")
        if "namespaceSelector" in peer:
            if peer["namespaceSelector"]:
                raise LabPlanError("namespaceSelector with labels is not modelled; use {}")
            selected = [p for p in pods if _matches(peer.get("podSelector") or {}, p)]
        else:
            selected = [p for p in pods if p.namespace == namespace and _matches(peer["podSelector"], p)]
        ips += [p.ip for p in selected]
    return tuple(dict.fromkeys(ips))


def _ports(ports: list[Mapping[str, Any]] | None, pod: PodPlan) -> list[int | None]:
    if not ports:
        return [None]
    found: list[int | None] = []
    for entry in ports:
        if entry.get("protocol", "TCP") != "TCP":
            raise LabPlanError(f"policy port {dict(entry)}: the lab models TCP only")
        port = entry.get("port")
        if isinstance(port, str):
            named = dict(pod.named_ports)
            if port not in named:
                continue  # a named port the pod lacks matches nothing on it
            port = named[port]
        found.append(None if port is None else int(port))
    return found


def plan_ingress(policies: Iterable[Mapping[str, Any]], pods: list[PodPlan]) -> dict[str, list[IngressAllow]]:
    """pod name -> what it admits; pods no Ingress policy selects are absent (admit all)."""
    allowed: dict[str, list[IngressAllow]] = {}
    for policy in policies:
        meta, spec = policy.get("metadata") or {}, policy.get("spec") or {}
        namespace = meta.get("namespace") or "default"
        types = spec.get("policyTypes") or ["Ingress"]
        if "Ingress" not in types:
            continue
        for pod in pods:
            if pod.namespace != namespace or not _matches(spec.get("podSelector") or {}, pod):
                continue
            rules = allowed.setdefault(pod.name, [])
            for rule in spec.get("ingress") or []:
                sources = _sources(rule.get("from"), namespace, pods)
                rules += [IngressAllow(sources, port) for port in _ports(rule.get("ports"), pod)]
    return allowed


def iptables_input_rules(allows: list[IngressAllow], node_ip: str) -> list[str]:
    """filter INPUT lines for one pod selected by an Ingress policy."""
    lines = [
        "-A INPUT -i lo -j ACCEPT",
        "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        # The node itself (kubelet's probes) is always admitted, as CNIs do.
        f"-A INPUT -s {node_ip}/32 -j ACCEPT",
    ]
    for allow in allows:
        port = "" if allow.port is None else f" -p tcp -m tcp --dport {allow.port}"
        if allow.sources is None:
            lines.append(f"-A INPUT{port} -j ACCEPT")
        else:
            lines += [f"-A INPUT -s {ip}/32{port} -j ACCEPT" for ip in allow.sources]
    lines += ["-A INPUT -p tcp -j REJECT --reject-with tcp-reset", "-A INPUT -j REJECT"]
    return lines


@dataclass(frozen=True)
class PortAccess:
    """Who may reach a member port under the declared NetworkPolicies."""

    guarded: bool  # an Ingress policy selects the members and restricts the port
    labels: tuple[dict[str, str], ...]  # label sets, any one of which admits a pod


def port_access(manifests: list[dict[str, Any]], member: dict[str, Any], port: int) -> PortAccess:
    """Which pod labels the policies selecting `member` (a Pod manifest) admit to `port`."""
    member_labels = (member.get("metadata") or {}).get("labels") or {}
    named = {
        p["name"]: int(p["containerPort"])
        for c in member["spec"].get("containers") or []
        for p in c.get("ports") or []
        if "name" in p
    }
    guarded, found = False, []
    for policy in manifests:
        spec = policy.get("spec") or {}
        selector = (spec.get("podSelector") or {}).get("matchLabels") or {}
        if policy.get("kind") != "NetworkPolicy" or "Ingress" not in (spec.get("policyTypes") or ["Ingress"]):
            continue
        if any(member_labels.get(k) != v for k, v in selector.items()):
            continue
        guarded = True
        for rule in spec.get("ingress") or []:
            ports = [named.get(p.get("port"), p.get("port")) for p in rule.get("ports") or []]
            if ports and port not in ports:
                continue
            if not rule.get("from"):
                return PortAccess(False, ())  # open to every source
            for peer in rule["from"]:
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    return PortAccess(False, ())  # not modelled here: count it as open
                found.append(dict((peer.get("podSelector") or {}).get("matchLabels") or {}))
    return PortAccess(guarded, tuple(found))
