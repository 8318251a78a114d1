"""Pure decisions about the cluster: members, their etcd command line, certificate
names and the Kubernetes manifests. Plain data in, plain data out; no Pulumi here.

Manifests are camelCase dicts exactly as Kubernetes shows them, so the same values
feed pulumi-kubernetes, the schema validator, the security scanner and the lab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .settings import Settings
from .versions import probe_paths_for, skip_flag_for

CLIENT_PORT = 2379
PEER_PORT = 2380
METRICS_PORT = 2381

ETCD_BINARY = "/usr/local/bin/etcd"
ETCDCTL_BINARY = "/usr/local/bin/etcdctl"
DATA_MOUNT = "/var/lib/etcd"
# A subdirectory of the emptyDir, so etcd creates it with the 0700 mode it wants.
DATA_DIR = f"{DATA_MOUNT}/data"
PKI_ROOT = "/etc/etcd/pki"
# UID/GID of the distroless "nonroot" user; fsGroup makes the 0440 key files and the
# emptyDir readable/writable for it and nobody else.
RUN_AS = 65532
# Above etcd's ~7 s leader-transfer timeout on SIGTERM (measured: ~7 s when
# the peers are stopping too).
TERMINATION_GRACE_SECONDS = 30

TlsRole = Literal["peer", "server", "client"]
TLS_ROLES: tuple[TlsRole, ...] = ("peer", "server", "client")

Outcome = Literal["healthy", "peers rejected"]
# The exact error text etcd logs for this problem (3.4 and 3.5 loggers alike).
REJECTION_MARKER = "does not match any of DNSNames"
# Unique per member (each Service selects exactly one Pod); only member Pods carry it.
MEMBER_LABEL = "etcd-peer-san/member"


@dataclass(frozen=True)
class Member:
    index: int
    name: str
    namespace: str
    cluster_domain: str

    @property
    def service_names(self) -> tuple[str, str, str, str]:
        """Every name cluster DNS answers for the member's Service, shortest first."""
        ns_name = f"{self.name}.{self.namespace}"
        return (self.name, ns_name, f"{ns_name}.svc", f"{ns_name}.svc.{self.cluster_domain}")

    @property
    def service_fqdn(self) -> str:
        return self.service_names[-1]

    @property
    def peer_url(self) -> str:
        return f"https://{self.service_fqdn}:{PEER_PORT}"

    @property
    def client_url(self) -> str:
        return f"https://{self.service_fqdn}:{CLIENT_PORT}"

    @property
    def cluster_name(self) -> str:
        return self.name.rsplit("-", 1)[0]

    @property
    def labels(self) -> dict[str, str]:
        return {
            **_labels(self.cluster_name),
            MEMBER_LABEL: self.name,
        }


def _labels(cluster_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": cluster_name}


def cluster_labels(settings: Settings) -> dict[str, str]:
    """Labels of the objects that belong to the whole cluster, not to one member."""
    return _labels(settings.cluster_name)


def members_of(settings: Settings) -> tuple[Member, ...]:
    return tuple(
        Member(i, f"{settings.cluster_name}-{i}", settings.namespace, settings.cluster_domain)
        for i in range(settings.members)
    )


def tls_dir(role: TlsRole) -> str:
    return f"{PKI_ROOT}/{role}"


def secret_name(settings: Settings, member: Member | None, role: TlsRole) -> str:
    """Peer and server material is per member; the etcdctl client material is shared."""
    owner = settings.cluster_name if member is None else member.name
    return f"{owner}-{role}-tls"


def cluster_token(settings: Settings) -> str:
    return f"{settings.cluster_name}-{settings.namespace}"


def etcd_args(settings: Settings, member: Member) -> list[str]:
    """The member's etcd arguments (without the binary), as etcd parses them."""
    peer, server = tls_dir("peer"), tls_dir("server")
    initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in members_of(settings))
    options: list[tuple[str, str]] = [
        ("name", member.name),
        ("data-dir", DATA_DIR),
        ("initial-cluster", initial_cluster),
        ("initial-cluster-state", "new"),
        ("initial-cluster-token", cluster_token(settings)),
        ("listen-peer-urls", f"https://0.0.0.0:{PEER_PORT}"),
        ("initial-advertise-peer-urls", member.peer_url),
        ("listen-client-urls", f"https://0.0.0.0:{CLIENT_PORT}"),
        ("advertise-client-urls", member.client_url),
        # Plain HTTP /health, /livez, /readyz, /metrics for kubelet probes (no client cert).
        ("listen-metrics-urls", f"http://0.0.0.0:{METRICS_PORT}"),
        ("peer-cert-file", f"{peer}/tls.crt"),
        ("peer-key-file", f"{peer}/tls.key"),
        ("peer-trusted-ca-file", f"{peer}/ca.crt"),
        ("peer-client-cert-auth", "true"),
        ("cert-file", f"{server}/tls.crt"),
        ("key-file", f"{server}/tls.key"),
        ("trusted-ca-file", f"{server}/ca.crt"),
        ("client-cert-auth", "true"),
    ]
    if settings.peer_cert_allowed_cn is not None:
        options.append(("peer-cert-allowed-cn", settings.peer_cert_allowed_cn))
    args = [f"--{name}={value}" for name, value in options]
    if settings.skip_client_san_verification:
        flag = skip_flag_for(settings.etcd_version)
        if flag is None:  # parse_settings rejects this; keep the function total.
            raise ValueError(f"etcd {settings.etcd_version} has no skip option")
        args.append(f"{flag}=true")
    return args


def etcd_command(settings: Settings, member: Member) -> list[str]:
    return [ETCD_BINARY, *etcd_args(settings, member)]


def peer_dns_names(member: Member) -> list[str]:
    """SANs of the member's peer certificate: its Service names, never a pod IP (pod IPs
    are unknown when the certificate is issued, which is the whole point)."""
    return [*member.service_names, "localhost"]


def server_dns_names(member: Member) -> list[str]:
    return [*member.service_names, "localhost"]


SERVER_IP_ADDRESSES = ["127.0.0.1"]


def expected_outcome(settings: Settings) -> Outcome:
    if settings.skip_client_san_verification or settings.members == 1:
        return "healthy"
    return "peers rejected"


def etcdctl_argv(settings: Settings, *command: str) -> list[str]:
    client = tls_dir("client")
    return [
        ETCDCTL_BINARY,
        f"--endpoints=https://localhost:{CLIENT_PORT}",
        f"--cacert={client}/ca.crt",
        f"--cert={client}/tls.crt",
        f"--key={client}/tls.key",
        *command,
    ]


def kubectl_health_command(settings: Settings) -> str:
    first = members_of(settings)[0]
    argv = etcdctl_argv(settings, "endpoint", "health", "--cluster")
    return f"kubectl exec -n {settings.namespace} {first.name} -- " + " ".join(argv)


def member_pod_selector(settings: Settings) -> str:
    """A label selector for exactly this stack's member Pods: the cluster's labels plus the
    member label, which other pods that share the cluster's labels (clients, the lab's
    extra pods) do not carry. No quotes or spaces: it survives `$(...)` word splitting."""
    return ",".join([*(f"{k}={v}" for k, v in cluster_labels(settings).items()), MEMBER_LABEL])


def kubectl_logs_command(settings: Settings) -> str:
    # Every member logs the rejections it receives: all of them, each line prefixed with
    # its pod, and all lines (a selector alone would default to the last 10 per pod).
    return f"kubectl logs -n {settings.namespace} -l {member_pod_selector(settings)} --prefix --tail=-1"


# ---------------------------------------------------------------- manifests


def _metadata(settings: Settings, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": settings.namespace, "labels": dict(labels)}


def service_manifest(settings: Settings, member: Member) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **_metadata(settings, member.name, member.labels),
            # Pods reference the Services by name only; waiting here for endpoints
            # would only delay the Pods (a Service is never replaced by a toggle).
            "annotations": {"pulumi.com/skipAwait": "true"},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {MEMBER_LABEL: member.name},
            # Members must reach each other before any of them can be Ready.
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": "client", "port": CLIENT_PORT, "targetPort": "client", "protocol": "TCP"},
                {"name": "peer", "port": PEER_PORT, "targetPort": "peer", "protocol": "TCP"},
            ],
        },
    }


def secret_manifest(
    settings: Settings, member: Member | None, role: TlsRole, data: dict[str, Any]
) -> dict[str, Any]:
    """A kubernetes.io/tls Secret; `data` maps tls.crt, tls.key, ca.crt to PEM text."""
    labels = cluster_labels(settings) if member is None else member.labels
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(settings, secret_name(settings, member, role), labels),
        "type": "kubernetes.io/tls",
        "stringData": data,
    }


# Pods carrying `CLIENT_LABEL: <cluster name>` may use the client port.
CLIENT_LABEL = "etcd-peer-san/client"


def network_policy_manifest(settings: Settings) -> dict[str, Any]:
    """Ingress to the members: peer port only from members, client port from members and
    labelled clients, plain-HTTP health/metrics from anywhere (no secrets there).

    Defence in depth: with the SAN check skipped, TLS trust in the peer CA (and the CN
    pin) is what admits a peer; this keeps other pods from even reaching the peer port.
    """
    members = cluster_labels(settings)
    tcp = [{"port": port, "protocol": "TCP"} for port in (PEER_PORT, CLIENT_PORT)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(settings, settings.cluster_name, members),
        "spec": {
            "podSelector": {"matchLabels": dict(members)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": dict(members)}}], "ports": tcp},
                {
                    "from": [{"podSelector": {"matchLabels": {CLIENT_LABEL: settings.cluster_name}}}],
                    "ports": [{"port": CLIENT_PORT, "protocol": "TCP"}],
                },
                {"ports": [{"port": METRICS_PORT, "protocol": "TCP"}]},
            ],
        },
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "metrics", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def pod_manifest(settings: Settings, member: Member) -> dict[str, Any]:
    paths = probe_paths_for(settings.etcd_version)
    annotations: dict[str, str] = {}
    if not settings.skip_client_san_verification and settings.members > 1:
        # No member can become Ready without a leader: let `pulumi up` return once the
        # Pods run instead of timing out after 10 minutes. Not skipAwait: it also
        # skips the await on delete, so a replacement could race the old Pod.
        annotations["pulumi.com/waitFor"] = "jsonpath={.status.phase}=Running"
    container: dict[str, Any] = {
        "name": "etcd",
        "image": settings.image,
        # Not Always: a custom build loaded into the node with `kind load docker-image`
        # (the etcdVersion use case) is in no registry, so a pull would fail.
        "imagePullPolicy": "IfNotPresent",
        "command": etcd_command(settings, member),
        "ports": [
            {"name": "client", "containerPort": CLIENT_PORT, "protocol": "TCP"},
            {"name": "peer", "containerPort": PEER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # httpGet on the plain metrics listener: official images have no shell for exec
        # probes. Paths by version (versions.probe_paths_for): liveness never on /health,
        # which answers 503 without a leader.
        "readinessProbe": _probe(paths.readiness, 5, 3),
        "livenessProbe": _probe(paths.liveness, 10, 6),
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            *({"name": f"{role}-tls", "mountPath": tls_dir(role), "readOnly": True} for role in TLS_ROLES),
        ],
    }
    metadata = _metadata(settings, member.name, member.labels)
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "hostname": member.name,
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                *(
                    {
                        "name": f"{role}-tls",
                        "secret": {
                            "secretName": secret_name(settings, None if role == "client" else member, role),
                            # 0440: owner root, group fsGroup; nobody else.
                            "defaultMode": 0o440,
                        },
                    }
                    for role in TLS_ROLES
                ),
            ],
        },
    }
