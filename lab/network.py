"""The lab's model of one Kubernetes node's pod network, and its executor.

Plan, then act: `plan_network` turns Pod and Service manifests into a frozen
`NetworkPlan` (namespaces, addresses, DNAT rules, hosts files) without side
effects; `Network` applies a plan with as few commands as possible and records
everything it creates so that `teardown` removes exactly that; `cleanup`
removes what crashed runs left behind.

Topology: a "node" namespace holds a bridge; each Pod gets its own namespace
whose `eth0` is a veth peer on that bridge. Services exist only as DNAT rules
in every pod namespace's `nat OUTPUT` chain, the way kube-proxy's iptables mode
rewrites connections on the sending node, so the receiver sees the sender's
pod IP (no SNAT): that is what etcd's peer SAN check trips over. Names come
from per-namespace hosts files that mirror cluster DNS; no DNS server exists.

Safety: nothing is created in the host namespace (veth pairs are made inside
the node namespace with the peer created straight in the pod namespace), no
namespace has a default route, and IPv6 address generation is off on every
link, so no packet can leave the namespaces of a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import proc

# Where the lab keeps one directory per run (logs, etcd data, state file).
RUN_BASE = Path(tempfile.gettempdir()) / "etcd-san-lab"

NETNS_PREFIX = "esl-"
STATE_FILE = "network-state.json"
# Written into a run directory that `--keep` keeps: `cleanup` leaves it unless asked.
KEPT_MARKER = "KEPT"
# `ip netns` keeps its namespace handles here; `ip netns exec` reads /etc/netns.
RUN_NETNS = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
# Left in /etc/netns when a lab run had to create it; `ip netns exec` only
# reads /etc/netns/<name>/, so the file is inert. It lets the last run out
# remove the directory without ever removing one that someone else made.
ETC_NETNS_MARKER = ".created-by-etcd-san-lab"

POD_CIDR = ipaddress.IPv4Network("10.244.0.0/24")
BRIDGE = "br0"
BRIDGE_IP = ipaddress.IPv4Address("10.244.0.1")
FIRST_POD_HOST = 10  # pod i gets 10.244.0.(10 + i)
MAX_PODS = 200  # keeps every pod address inside the /24
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
FIRST_SERVICE_IP = ipaddress.IPv4Address("10.96.0.10")

# Kinds that carry no networking: the lab accepts and ignores them.
_IGNORED_KINDS = frozenset({"Secret", "ConfigMap", "ServiceAccount", "Namespace", "PodDisruptionBudget"})
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_RUN_ID = re.compile(r"^[0-9a-f]{4,8}$")


class LabPlanError(ValueError):
    """The manifests ask for something the lab network cannot model."""


class LabNetworkError(RuntimeError):
    """Applying or removing a plan failed."""


# --------------------------------------------------------------------------
# Plan data
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PodPlan:
    name: str
    namespace: str  # the Kubernetes namespace (metadata.namespace)
    index: int
    netns: str  # the Linux network namespace
    ip: str
    host_veth: str  # the veth end in the node namespace, attached to the bridge
    hostname: str  # spec.hostname, else the pod name (as kubelet does)
    spec_hostname: str | None  # only an explicit one names headless endpoints
    subdomain: str | None
    labels: tuple[tuple[str, str], ...]
    named_ports: tuple[tuple[str, int], ...]  # containers[].ports[] with a name
    hosts: str = ""  # contents of /etc/netns/<netns>/hosts
    resolv_conf: str = ""  # contents of /etc/netns/<netns>/resolv.conf
    # filter INPUT rules from the NetworkPolicies that select the pod; empty: admit all.
    ingress_rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    target_port: int | str  # as written; a string names a container port
    protocol: str


@dataclass(frozen=True)
class ServicePlan:
    name: str
    namespace: str
    cluster_ip: str | None  # None: headless
    ports: tuple[ServicePort, ...]
    endpoints: tuple[str, ...]  # names of the selected pods, manifest order
    # The lab does not model readiness: every selected pod is an endpoint, as
    # if this were true. Kept so callers can point out the difference.
    publish_not_ready_addresses: bool


@dataclass(frozen=True)
class DnatRule:
    service: str  # <namespace>/<name>
    cluster_ip: str
    port: int
    protocol: str
    pod: str
    pod_ip: str
    target_port: int


@dataclass(frozen=True)
class DnsRecord:
    """One name cluster DNS would answer, before search-path expansion.

    `relative` is the part before `.<namespace>.svc.<domain>`: `<svc>` or, for
    headless endpoints, `<hostname-or-dashed-ip>.<svc>`.
    """

    fqdn: str
    relative: str
    namespace: str
    ip: str


@dataclass(frozen=True)
class NetworkPlan:
    run_id: str
    node_netns: str
    bridge: str
    bridge_cidr: str
    pod_cidr: str
    service_cidr: str
    cluster_domain: str
    pods: tuple[PodPlan, ...]
    services: tuple[ServicePlan, ...]
    dnat_rules: tuple[DnatRule, ...]
    dns_records: tuple[DnsRecord, ...]
    # The node namespace resolves nothing either: only localhost, no server.
    node_hosts: str
    node_resolv_conf: str

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every network namespace of the run, node first."""
        return (self.node_netns, *(p.netns for p in self.pods))

    @property
    def etc_files(self) -> tuple[tuple[str, str, str], ...]:
        """(netns, hosts, resolv.conf) for /etc/netns/<netns>/, node first."""
        return (
            (self.node_netns, self.node_hosts, self.node_resolv_conf),
            *((p.netns, p.hosts, p.resolv_conf) for p in self.pods),
        )

    def pod(self, name: str) -> PodPlan:
        """The pod called `name` (`<namespace>/<name>` if the name is ambiguous)."""
        ns, _, short = name.rpartition("/")
        found = [p for p in self.pods if p.name == short and (not ns or p.namespace == ns)]
        if len(found) != 1:
            known = ", ".join(f"{p.namespace}/{p.name}" for p in self.pods)
            raise KeyError(f"{len(found)} pods match {name!r}; pods: {known}")
        return found[0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def new_run_id() -> str:
    """A short random id: it keeps namespace names short and runs apart."""
    return secrets.token_hex(3)


# --------------------------------------------------------------------------
# Planning (pure)
# --------------------------------------------------------------------------


def plan_network(
    manifests: Iterable[Mapping[str, Any]],
    run_id: str,
    *,
    cluster_domain: str = "cluster.local",
) -> NetworkPlan:
    """Compute the whole lab network for the Pods and Services in `manifests`."""
    if not _RUN_ID.match(run_id):
        raise LabPlanError(f"run id {run_id!r} must be 4-8 lowercase hex digits (see new_run_id())")
    if not _DNS_SUBDOMAIN.match(cluster_domain):
        raise LabPlanError(f"cluster domain {cluster_domain!r} is not a DNS name")
    pod_ms: list[Mapping[str, Any]] = []
    svc_ms: list[Mapping[str, Any]] = []
    policy_ms: list[Mapping[str, Any]] = []
    for m in manifests:
        kind = m.get("kind")
        if kind == "Pod":
            pod_ms.append(m)
        elif kind == "Service":
            svc_ms.append(m)
        elif kind == "NetworkPolicy":
            policy_ms.append(m)
        elif kind not in _IGNORED_KINDS:
            raise LabPlanError(
                f"kind {kind!r} ({_meta_name(m)}) is not supported by the lab network; "
                "give it Pods, Services and NetworkPolicies"
            )
    if len(pod_ms) > MAX_PODS:
        raise LabPlanError(f"{len(pod_ms)} pods: the lab supports at most {MAX_PODS}")

    pods = [_plan_pod(i, m, run_id) for i, m in enumerate(pod_ms)]
    _check_unique("Pod", [(p.namespace, p.name) for p in pods])
    services = _plan_services(svc_ms, pods)
    rules = tuple(_dnat_rules(services, pods))
    records = tuple(_dns_records(services, pods, cluster_domain))
    from lab.network_policy import iptables_input_rules, plan_ingress  # it imports this module

    ingress = plan_ingress(policy_ms, pods)
    pods = [
        dataclasses.replace(
            p,
            hosts=render_hosts(p, records, cluster_domain),
            resolv_conf=render_resolv_conf(p.namespace, cluster_domain),
            ingress_rules=tuple(iptables_input_rules(ingress[p.name], str(BRIDGE_IP)))
            if p.name in ingress
            else (),
        )
        for p in pods
    ]
    return NetworkPlan(
        run_id=run_id,
        node_netns=f"{NETNS_PREFIX}{run_id}-node",
        bridge=BRIDGE,
        bridge_cidr=f"{BRIDGE_IP}/{POD_CIDR.prefixlen}",
        pod_cidr=str(POD_CIDR),
        service_cidr=str(SERVICE_CIDR),
        cluster_domain=cluster_domain,
        pods=tuple(pods),
        services=services,
        dnat_rules=rules,
        dns_records=records,
        node_hosts=_LOCALHOST,
        node_resolv_conf=_NO_DNS + "nameserver 127.0.0.1\n",
    )


def _meta_name(m: Mapping[str, Any]) -> str:
    meta = m.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def _metadata(m: Mapping[str, Any], kind: str, name_re: re.Pattern[str]) -> tuple[str, str]:
    meta = m.get("metadata") or {}
    name = meta.get("name")
    namespace = meta.get("namespace") or "default"
    # Names end up in hosts files and interface-free namespace names, so a
    # malformed one must stop here rather than corrupt a file.
    if not isinstance(name, str) or not name_re.match(name):
        raise LabPlanError(f"{kind} name {name!r} is not a valid Kubernetes name")
    if not _DNS_LABEL.match(namespace):
        raise LabPlanError(f"{kind} {name}: namespace {namespace!r} is not a valid Kubernetes name")
    return namespace, name


def _check_unique(kind: str, keys: list[tuple[str, str]]) -> None:
    seen: set[tuple[str, str]] = set()
    for key in keys:
        if key in seen:
            raise LabPlanError(f"two {kind}s are called {key[0]}/{key[1]}")
        seen.add(key)


def _plan_pod(index: int, m: Mapping[str, Any], run_id: str) -> PodPlan:
    namespace, name = _metadata(m, "Pod", _DNS_SUBDOMAIN)
    spec = m.get("spec") or {}
    where = f"Pod {namespace}/{name}"
    if spec.get("hostNetwork"):
        raise LabPlanError(f"{where}: hostNetwork is not supported (the lab never uses the host network)")
    if spec.get("dnsPolicy", "ClusterFirst") not in ("ClusterFirst", "ClusterFirstWithHostNet"):
        raise LabPlanError(f"{where}: dnsPolicy {spec['dnsPolicy']!r} is not supported (only ClusterFirst)")
    if spec.get("hostAliases"):
        raise LabPlanError(f"{where}: hostAliases are not supported by the lab")
    hostname = spec.get("hostname") or name.split(".")[0]
    subdomain = spec.get("subdomain") or None
    for label in (hostname, subdomain):
        if label is not None and not _DNS_LABEL.match(label):
            raise LabPlanError(f"{where}: {label!r} is not a valid hostname/subdomain")
    labels = (m.get("metadata") or {}).get("labels") or {}
    named: list[tuple[str, int]] = []
    for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        for p in c.get("ports") or []:
            if p.get("name"):
                if not isinstance(p.get("containerPort"), int):
                    raise LabPlanError(f"{where}: port {p['name']!r} has no integer containerPort")
                named.append((str(p["name"]), p["containerPort"]))
    return PodPlan(
        name=name,
        namespace=namespace,
        index=index,
        netns=f"{NETNS_PREFIX}{run_id}-p{index}",
        ip=str(POD_CIDR.network_address + FIRST_POD_HOST + index),
        host_veth=f"vh{index}",
        hostname=hostname,
        spec_hostname=spec.get("hostname") or None,
        subdomain=subdomain,
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        named_ports=tuple(named),
    )


def selects(selector: Mapping[str, str], pod: PodPlan, service_namespace: str) -> bool:
    """Kubernetes equality selection: same namespace, every key/value present.

    An empty selector selects nothing (a Service without a selector has its
    endpoints managed by hand, which the lab does not model).
    """
    if not selector or pod.namespace != service_namespace:
        return False
    labels = dict(pod.labels)
    return all(labels.get(str(k)) == str(v) for k, v in selector.items())


def _plan_services(svc_ms: list[Mapping[str, Any]], pods: list[PodPlan]) -> tuple[ServicePlan, ...]:
    parsed = []
    explicit: dict[ipaddress.IPv4Address, str] = {}
    for m in svc_ms:
        namespace, name = _metadata(m, "Service", _DNS_LABEL)
        where = f"Service {namespace}/{name}"
        spec = m.get("spec") or {}
        if (spec.get("type") or "ClusterIP") != "ClusterIP":
            raise LabPlanError(f"{where}: type {spec['type']!r} is not supported (only ClusterIP)")
        for unsupported in ("externalIPs", "externalName"):
            if spec.get(unsupported):
                raise LabPlanError(f"{where}: {unsupported} is not supported")
        families = spec.get("ipFamilies") or ["IPv4"]
        if families[0] != "IPv4" or spec.get("ipFamilyPolicy") == "RequireDualStack":
            raise LabPlanError(f"{where}: the lab network is IPv4 only")
        cluster_ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
        if cluster_ip not in (None, "", "None"):
            ip = _parse_cluster_ip(where, cluster_ip)
            if ip in explicit:
                raise LabPlanError(f"{where}: clusterIP {ip} is already used by {explicit[ip]}")
            explicit[ip] = where
        ports = tuple(_service_port(where, p) for p in spec.get("ports") or [])
        selector = spec.get("selector") or {}
        endpoints = [p for p in pods if selects(selector, p, namespace)]
        parsed.append((namespace, name, cluster_ip, ports, endpoints, spec))
    _check_unique("Service", [(ns, n) for ns, n, *_ in parsed])

    # Services without a clusterIP get the next free address in manifest order,
    # skipping the ones other manifests asked for, so plans are deterministic.
    next_ip = FIRST_SERVICE_IP
    services = []
    for namespace, name, cluster_ip, ports, endpoints, spec in parsed:
        if cluster_ip == "None":
            ip_text: str | None = None
        elif cluster_ip:
            ip_text = str(ipaddress.IPv4Address(cluster_ip))
        else:
            while next_ip in explicit:
                next_ip += 1
            if next_ip not in SERVICE_CIDR or next_ip == SERVICE_CIDR.broadcast_address:
                raise LabPlanError("the Service CIDR is exhausted")
            ip_text = str(next_ip)
            next_ip += 1
        services.append(
            ServicePlan(
                name=name,
                namespace=namespace,
                cluster_ip=ip_text,
                ports=ports,
                endpoints=tuple(p.name for p in endpoints),
                publish_not_ready_addresses=bool(spec.get("publishNotReadyAddresses", False)),
            )
        )
    return tuple(services)


def _parse_cluster_ip(where: str, text: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        raise LabPlanError(f"{where}: clusterIP {text!r} is not an IPv4 address") from None
    if ip not in SERVICE_CIDR or ip in (SERVICE_CIDR.network_address, SERVICE_CIDR.broadcast_address):
        raise LabPlanError(f"{where}: clusterIP {ip} is outside the lab's Service CIDR {SERVICE_CIDR}")
    return ip


def _service_port(where: str, p: Mapping[str, Any]) -> ServicePort:
    protocol = p.get("protocol", "TCP")
    if protocol != "TCP":
        raise LabPlanError(f"{where}: protocol {protocol!r} is not supported (only TCP)")
    port = p.get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise LabPlanError(f"{where}: port {port!r} is not a port number")
    target = p.get("targetPort", port)
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if isinstance(target, int) and not 0 < target < 65536:
        raise LabPlanError(f"{where}: targetPort {target!r} is not a port number")
    return ServicePort(name=p.get("name"), port=port, target_port=target, protocol=protocol)


def _dnat_rules(services: tuple[ServicePlan, ...], pods: list[PodPlan]) -> Iterable[DnatRule]:
    by_key = {(p.namespace, p.name): p for p in pods}
    for svc in services:
        if svc.cluster_ip is None or not svc.endpoints:
            continue  # headless: no proxying; no endpoints: the REJECT rule answers
        # With several endpoints the lab always picks the first pod (manifest
        # order) instead of kube-proxy's random choice: runs stay reproducible.
        pod = by_key[(svc.namespace, svc.endpoints[0])]
        for sp in svc.ports:
            yield DnatRule(
                service=f"{svc.namespace}/{svc.name}",
                cluster_ip=svc.cluster_ip,
                port=sp.port,
                protocol=sp.protocol,
                pod=pod.name,
                pod_ip=pod.ip,
                target_port=_target_port(svc, sp, pod),
            )


def _target_port(svc: ServicePlan, sp: ServicePort, pod: PodPlan) -> int:
    if isinstance(sp.target_port, int):
        return sp.target_port
    named = dict(pod.named_ports)
    if sp.target_port not in named:
        raise LabPlanError(
            f"Service {svc.namespace}/{svc.name}: targetPort {sp.target_port!r} names no container "
            f"port of pod {pod.name} (named ports: {sorted(named) or 'none'})"
        )
    return named[sp.target_port]


def _dashed(ip: str) -> str:
    return ip.replace(".", "-")


def _dns_records(services: tuple[ServicePlan, ...], pods: list[PodPlan], domain: str) -> Iterable[DnsRecord]:
    def record(svc: ServicePlan, relative: str, ip: str) -> DnsRecord:
        return DnsRecord(f"{relative}.{svc.namespace}.svc.{domain}", relative, svc.namespace, ip)

    by_key = {(p.namespace, p.name): p for p in pods}
    for svc in services:
        if svc.cluster_ip is not None:
            yield record(svc, svc.name, svc.cluster_ip)
            continue
        endpoints = [by_key[(svc.namespace, n)] for n in svc.endpoints]
        # Headless: each endpoint has its own name, as CoreDNS serves it:
        # `<hostname>.<svc>` when the pod sets hostname and subdomain=<svc>,
        # else the dashed IP. They come first so a reverse lookup of the pod IP
        # returns them, as CoreDNS's PTR answer would.
        for p in endpoints:
            # Kubernetes' ShouldSetHostname: explicit hostname and subdomain == service.
            label = p.spec_hostname if p.spec_hostname and p.subdomain == svc.name else _dashed(p.ip)
            yield record(svc, f"{label}.{svc.name}", p.ip)
        for p in endpoints:
            yield record(svc, svc.name, p.ip)


def render_hosts(pod: PodPlan, records: Iterable[DnsRecord], domain: str) -> str:
    """The pod's hosts file: what kubelet writes plus what cluster DNS answers.

    FQDN first on each line (glibc's canonical name and reverse answer). A
    short name resolves only in the record's own namespace, as the search path
    `<ns>.svc.<domain>` makes it in Kubernetes. Names on the pod's own line
    shadow service names, as /etc/hosts shadows DNS in a real pod.
    """
    if pod.subdomain:
        own_names = [f"{pod.hostname}.{pod.subdomain}.{pod.namespace}.svc.{domain}", pod.hostname]
    else:
        own_names = [pod.hostname]
    lines = [
        f"# Kubernetes-style hosts for pod {pod.namespace}/{pod.name}, written by the etcd SAN lab.",
        _LOCALHOST.rstrip("\n"),
        f"{pod.ip}\t{' '.join(own_names)}",
    ]
    taken = set(own_names)
    for r in records:
        names = [r.fqdn, f"{r.relative}.{r.namespace}.svc", f"{r.relative}.{r.namespace}"]
        if r.namespace == pod.namespace:
            names.append(r.relative)
        names = [n for n in names if n not in taken]
        if names:
            lines.append(f"{r.ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


_LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_NO_DNS = "# Written by the etcd SAN lab: no DNS server runs here; names come from /etc/hosts.\n"


def render_resolv_conf(namespace: str, domain: str) -> str:
    """ClusterFirst resolv.conf whose nameserver does not exist.

    Nothing listens on 127.0.0.1:53 inside a pod namespace, so a name missing
    from the hosts file fails at once instead of reaching any real DNS server.
    """
    return (
        _NO_DNS + "nameserver 127.0.0.1\n"
        f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
        "options ndots:5\n"
    )


# Commands, still pure: the executor only feeds these to `ip` and iptables.


def node_batch(plan: NetworkPlan) -> str:
    """`ip -n <node> -batch -` input: the bridge, and one veth pair per pod.

    Each veth is created inside the node namespace with its peer created
    directly in the pod namespace, so no end ever exists in the host.
    `addrgenmode none` keeps IPv6 link-local addresses (and with them router
    and neighbour solicitations) off every link.
    """
    lines = [
        "link set lo up",
        f"link add {plan.bridge} type bridge",
        f"link set {plan.bridge} addrgenmode none",
        f"addr add {plan.bridge_cidr} dev {plan.bridge}",
        f"link set {plan.bridge} up",
    ]
    for p in plan.pods:
        lines += [
            f"link add {p.host_veth} type veth peer name eth0 netns {p.netns}",
            f"link set {p.host_veth} addrgenmode none",
            f"link set {p.host_veth} master {plan.bridge}",
            f"link set {p.host_veth} up",
        ]
    return "\n".join(lines) + "\n"


def pod_batch(plan: NetworkPlan, pod: PodPlan) -> str:
    """`ip -n <pod> -batch -` input. The pod subnet is on-link; the only other
    route covers the Service CIDR, because routing happens before the nat
    OUTPUT DNAT. There is no default route, so anything else is unreachable."""
    return (
        "link set lo up\n"
        "link set eth0 addrgenmode none\n"
        f"addr add {pod.ip}/{POD_CIDR.prefixlen} dev eth0\n"
        "link set eth0 up\n"
        f"route add {plan.service_cidr} dev eth0\n"
    )


def iptables_restore_input(plan: NetworkPlan, pod: PodPlan | None = None) -> str:
    """`iptables-restore --noflush` input for a pod namespace.

    One DNAT per Service port, like kube-proxy. The filter rule rejects what
    is still addressed to the Service CIDR after DNAT (no endpoints, unknown
    port), so such a connect fails at once with "connection refused". The pod's
    NetworkPolicy ingress rules, if any, go into filter INPUT.
    """
    lines = ["*nat"]
    for r in plan.dnat_rules:
        lines.append(
            f"-A OUTPUT -d {r.cluster_ip}/32 -p tcp -m tcp --dport {r.port} "
            f"-j DNAT --to-destination {r.pod_ip}:{r.target_port}"
        )
    lines += ["COMMIT", "*filter", f"-A OUTPUT -d {plan.service_cidr} -j REJECT"]
    lines += list(pod.ingress_rules) if pod is not None else []
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Executor
# --------------------------------------------------------------------------


def _proc_start_time(pid: int) -> int | None:
    """Kernel start time of a process: with the PID it tells reuse apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_namespace() -> int:
    """This process's PID namespace: a PID only means something inside its own."""
    return os.stat("/proc/self/ns/pid").st_ino


def _owner_alive(state: Mapping[str, Any]) -> bool:
    pid = state.get("owner_pid")
    if not isinstance(pid, int):
        return False
    if state.get("owner_pid_namespace", _pid_namespace()) != _pid_namespace():
        return True  # another PID namespace (a container): cannot tell, so never an orphan
    started = _proc_start_time(pid)
    return started is not None and started == state.get("owner_start_time")


def pids_in_namespaces(namespaces: Iterable[str]) -> dict[str, list[int]]:
    """PIDs per named network namespace, from one pass over /proc.

    Same method as `ip netns pids` (compare /proc/<pid>/ns/net with the
    namespace's handle) without one subprocess per namespace.
    """
    ids: dict[tuple[int, int], str] = {}
    for ns in namespaces:
        try:
            st = os.stat(RUN_NETNS / ns)
        except FileNotFoundError:
            continue
        ids[(st.st_dev, st.st_ino)] = ns
    return _pids_by_namespace_id(ids)


def _pids_by_namespace_id(ids: Mapping[tuple[int, int], str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {ns: [] for ns in ids.values()}
    if not ids:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue  # exited meanwhile, or a kernel thread
        owner = ids.get((st.st_dev, st.st_ino))
        if owner is not None:
            found[owner].append(int(entry.name))
    return found


# The environment check's throwaway namespace: named after its owner's PID (and start
# time, as run state files are), so `cleanup` knows when it is an orphan. Not a run id:
# run ids are hex, so no run's namespaces can start like this.
_PROBE = re.compile(rf"^{re.escape(NETNS_PREFIX)}probe-(\d+)-(\d+)-(\d+)$")


def probe_name() -> str:
    pid = os.getpid()
    return f"{NETNS_PREFIX}probe-{_pid_namespace()}-{pid}-{_proc_start_time(pid)}"


def _orphan_probe(name: str) -> bool:
    match = _PROBE.match(name)
    if not match:
        return False
    pid_namespace, pid, started = (int(group) for group in match.groups())
    # The same test as for a run's owner (another PID namespace counts as alive).
    return not _owner_alive(
        {"owner_pid": pid, "owner_start_time": started, "owner_pid_namespace": pid_namespace}
    )


def probe_namespace(name: str) -> None:
    """Create namespace `name` and do in it what a run does: a bridge with a veth pair,
    an iptables-restore of a Service DNAT and the REJECT rule. The caller deletes it
    (remove_namespaces), whatever happened.

    Raises LabNetworkError naming the first step this machine cannot do.
    """
    rules = (
        "*nat\n"
        f"-A OUTPUT -d {FIRST_SERVICE_IP}/32 -p tcp -m tcp --dport 2380 "
        f"-j DNAT --to-destination {POD_CIDR.network_address + FIRST_POD_HOST}:2380\n"
        f"COMMIT\n*filter\n-A OUTPUT -d {SERVICE_CIDR} -j REJECT\nCOMMIT\n"
    )
    links = (
        f"link add {BRIDGE} type bridge\n"
        "link add vh0 type veth peer name eth0\n"
        f"link set vh0 master {BRIDGE}\n"
    )
    steps = (
        ("no network namespaces", ["ip", "netns", "add", name], None),
        ("no bridge or veth links in a network namespace", ["ip", "-n", name, "-batch", "-"], links),
        (
            "no iptables DNAT and REJECT in a network namespace",
            proc.netns_argv(name, ["iptables-restore", "--noflush"]),
            rules,
        ),
    )
    for missing, argv, script in steps:
        try:
            proc.run(argv, input=script)
        except proc.CommandError as exc:
            raise LabNetworkError(f"{missing}: {exc}") from None


def list_lab_namespaces() -> list[str]:
    """Names of existing network namespaces with the lab's prefix."""
    out = proc.run(["ip", "netns", "list"]).stdout
    names = (line.split()[0] for line in out.splitlines() if line.strip())
    return [n for n in names if n.startswith(NETNS_PREFIX)]


def remove_namespaces(names: Iterable[str]) -> list[str]:
    """End the processes in the given lab namespaces, then delete them.

    Only lab processes live in lab namespaces, and a namespace with a process
    in it outlives `ip netns del` without a name, so they must end. An open
    fd on each namespace keeps it, and so the inode we match processes by,
    alive until we are done: a process that entered it during the first scan
    (an `ip netns exec` between open and setns) is found by the second, and
    the inode cannot be reused by someone else's namespace meanwhile.
    Missing namespaces are skipped; names without the lab prefix are refused.
    Returns the names deleted.
    """
    fds: dict[str, int] = {}
    try:
        for n in names:
            if not n.startswith(NETNS_PREFIX) or "/" in n:
                raise LabNetworkError(f"refusing to delete {n!r}: not a lab namespace")
            with contextlib.suppress(FileNotFoundError):
                fds[n] = os.open(RUN_NETNS / n, os.O_RDONLY)
        ids = {(st.st_dev, st.st_ino): n for n, fd in fds.items() for st in [os.fstat(fd)]}
        _end_pids(ids)
        if fds:
            # One command for all; -force keeps going past one that vanished.
            script = "".join(f"netns del {n}\n" for n in fds)
            proc.run(["ip", "-force", "-batch", "-"], input=script, check=False)
        _end_pids(ids)
    finally:
        for fd in fds.values():
            os.close(fd)
    left = [n for n in fds if (RUN_NETNS / n).exists()]
    if left:
        raise LabNetworkError(f"could not delete network namespaces: {', '.join(left)}")
    return list(fds)


def _end_pids(ids: Mapping[tuple[int, int], str]) -> None:
    pids = [pid for ps in _pids_by_namespace_id(ids).values() for pid in ps]
    if pids:
        proc.end_pids(pids)


class Network:
    """Applies one NetworkPlan and removes exactly what it created.

    Use as a context manager: leaving the block tears the network down.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.plan: NetworkPlan | None = None
        # (kind, name) in creation order; teardown walks it backwards.
        self._created: list[tuple[str, str]] = []

    @property
    def created(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._created)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def apply(self, plan: NetworkPlan) -> None:
        if self.plan is not None:
            raise LabNetworkError("this Network has already applied a plan")
        self.plan = plan
        try:
            self._apply(plan)
        except BaseException:
            self.teardown()
            raise

    def _apply(self, plan: NetworkPlan) -> None:
        clash = [n for n in plan.namespaces if (RUN_NETNS / n).exists() or (ETC_NETNS / n).exists()]
        if clash:
            # Never adopt (and later delete) something this run did not make.
            raise LabNetworkError(f"network namespaces already exist: {', '.join(clash)}")

        # The state file comes first, so even a crash in the next line leaves
        # enough behind for `cleanup` to find everything.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_state(self.run_dir, plan)
        try:
            with _etc_netns_lock():  # a parallel run's teardown must not remove it meanwhile
                with contextlib.suppress(FileExistsError):  # a parallel run may make it first
                    ETC_NETNS.mkdir()
                    (ETC_NETNS / ETC_NETNS_MARKER).touch()
                    self._created.append(("etc_netns_root", str(ETC_NETNS)))
                for netns, hosts, resolv_conf in plan.etc_files:
                    d = ETC_NETNS / netns
                    d.mkdir()
                    self._created.append(("etc_netns_dir", str(d)))
                    (d / "hosts").write_text(hosts)
                    (d / "resolv.conf").write_text(resolv_conf)
        except TimeoutError as exc:  # only the lock times out
            raise LabNetworkError(f"cannot create the pods' /etc/netns entries: {exc}") from None

        add = "".join(f"netns add {n}\n" for n in plan.namespaces)
        try:
            proc.run(["ip", "-batch", "-"], input=add)
        finally:
            # None existed before (checked above): whatever exists now is ours.
            self._created += [("netns", n) for n in plan.namespaces if (RUN_NETNS / n).exists()]

        proc.run(["ip", "-n", plan.node_netns, "-batch", "-"], input=node_batch(plan))
        for p in plan.pods:
            proc.run(["ip", "-n", p.netns, "-batch", "-"], input=pod_batch(plan, p))
        for p in plan.pods:
            proc.run(
                proc.netns_argv(p.netns, ["iptables-restore", "--noflush"]),
                input=iptables_restore_input(plan, p),
            )

    def teardown(self) -> None:
        """Remove what apply created, newest first. Idempotent.

        Already-gone objects count as removed. Whatever cannot be removed
        stays recorded (a later call retries it) and is reported at the end.
        """
        errors: list[str] = []
        namespaces = [name for kind, name in self._created if kind == "netns"]
        for item in reversed(list(self._created)):
            kind, name = item
            if item not in self._created:
                continue  # went with its batch
            try:
                if kind == "netns":
                    # Created by one command, deleted by one command.
                    remove_namespaces(namespaces)
                    self._created = [c for c in self._created if c[0] != "netns"]
                    continue
                if kind == "etc_netns_dir" and Path(name).exists():
                    shutil.rmtree(name)
                elif kind == "etc_netns_root":
                    _remove_etc_netns_if_unused()
                self._created.remove(item)
            except Exception as exc:
                errors.append(f"{kind} {name}: {exc}")
                if kind == "netns":
                    namespaces = []  # do not retry the batch for each remaining one
        # A parallel run may have created it and left before us.
        _remove_etc_netns_if_unused()
        if errors:
            raise LabNetworkError("teardown incomplete: " + "; ".join(errors))

    def pod_exec_argv(self, pod_name: str, argv: list[str]) -> list[str]:
        """argv that runs `argv` inside the pod's network namespace."""
        if self.plan is None:
            raise LabNetworkError("no plan applied")
        return proc.netns_argv(self.plan.pod(pod_name).netns, argv)


# Lab processes hold the lock for a few file operations; waiting longer means someone else
# holds it (or a lab was stopped inside), and a run or teardown must not hang on that.
ETC_NETNS_LOCK_SECONDS = 10.0


@contextlib.contextmanager
def _etc_netns_lock(timeout: float | None = None) -> Iterator[None]:
    """Serialises, across lab processes, making /etc/netns with a run's entries against
    removing it when unused: otherwise a teardown can remove it between another run's
    mkdir and that run's entries. The lock is on the parent directory, so it creates
    nothing. Raises TimeoutError when it is not free within `timeout` seconds (default
    ETC_NETNS_LOCK_SECONDS)."""
    timeout = ETC_NETNS_LOCK_SECONDS if timeout is None else timeout
    fd = os.open(ETC_NETNS.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{ETC_NETNS.parent} stayed locked for {timeout:g} s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_etc_netns_if_unused() -> None:
    """Remove /etc/netns if a lab run created it and no namespace uses it now (left for the
    next run's teardown if the lock stays taken)."""
    with contextlib.suppress(TimeoutError), _etc_netns_lock():
        try:
            if os.listdir(ETC_NETNS) != [ETC_NETNS_MARKER]:
                return  # someone else's, or still in use (then its last user removes it)
        except FileNotFoundError:
            return
        with contextlib.suppress(OSError):  # only a non-lab writer could interfere now
            (ETC_NETNS / ETC_NETNS_MARKER).unlink()
            ETC_NETNS.rmdir()


def _write_state(run_dir: Path, plan: NetworkPlan) -> None:
    state = {
        "run_id": plan.run_id,
        "owner_pid": os.getpid(),
        "owner_start_time": _proc_start_time(os.getpid()),
        "owner_pid_namespace": _pid_namespace(),
        "namespaces": list(plan.namespaces),
        "etc_netns": [str(ETC_NETNS / netns) for netns, _, _ in plan.etc_files],
    }
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(run_dir / STATE_FILE)  # atomic: cleanup never reads half a file


# --------------------------------------------------------------------------
# Cleanup of crashed runs
# --------------------------------------------------------------------------


def cleanup(base_dir: Path | str = RUN_BASE, *, force: bool = False, kept: bool = False) -> list[str]:
    """Remove the leftovers of runs whose owner process is gone.

    A run is a directory under `base_dir` holding a state file. For each run
    whose owner is dead (every run with `force`), end the processes in its
    namespaces, delete the namespaces, their /etc/netns entries and the run
    directory. A directory kept with `--keep` (it holds KEPT_MARKER; its
    namespaces and processes were removed when its run ended) is only removed
    with `kept`. `force` also removes every `esl-` namespace on the machine,
    including those of live runs with another base directory. Returns what
    was removed.
    """
    base = Path(base_dir)
    run_dirs: list[Path] = []
    doomed: set[str] = set()
    run_ids: set[str] = set()
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        state_path = d / STATE_FILE
        if not state_path.is_file():
            continue
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            continue  # written atomically, so unreadable means not ours
        if (d / KEPT_MARKER).is_file():
            # The run has ended (its owner may still live, e.g. a test): only the directory is left.
            if not kept:
                continue
        elif not force and _owner_alive(state):
            continue
        run_dirs.append(d)
        run_ids.add(str(state.get("run_id")))
        doomed.update(n for n in state.get("namespaces", []) if isinstance(n, str))

    existing = list_lab_namespaces()
    for n in existing:
        if force or _orphan_probe(n) or any(n.startswith(f"{NETNS_PREFIX}{rid}-") for rid in run_ids):
            doomed.add(n)
    # Only names with the lab's prefix and no path tricks, whatever a state file says.
    targets = sorted(n for n in doomed if n.startswith(NETNS_PREFIX) and "/" not in n)
    etc_dirs = [ETC_NETNS / n for n in targets]
    if ETC_NETNS.is_dir():
        for d in ETC_NETNS.iterdir():
            if not d.is_dir():
                continue
            rid = d.name[len(NETNS_PREFIX) :].split("-")[0]
            if d.name.startswith(NETNS_PREFIX) and (force or rid in run_ids) and d not in etc_dirs:
                etc_dirs.append(d)

    removed: list[str] = []
    removed += [f"netns {n}" for n in remove_namespaces(targets)]
    for d in etc_dirs:
        if d.is_dir():
            shutil.rmtree(d)
            removed.append(str(d))
    for d in run_dirs:
        shutil.rmtree(d)
        removed.append(str(d))
    _remove_etc_netns_if_unused()
    return removed
