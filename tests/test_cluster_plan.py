"""The pure plan: members, each member's etcd command line, names, outcome, commands."""

from __future__ import annotations

import posixpath
from urllib.parse import urlsplit

import pytest

from components import cluster_plan as plan

IMAGE = "gcr.io/etcd-development/etcd:v{}"
EXPERIMENTAL = "--experimental-peer-skip-client-san-verification=true"
STABLE = "--peer-skip-client-san-verification=true"


def common_args(stack: str, index: int, members: int = 3, ns: str = "default", domain: str = "cluster.local"):
    """Every member's arguments before the optional ones, written out independently."""

    def fqdn(i: int) -> str:
        return f"etcd-{stack}-{i}.{ns}.svc.{domain}"

    cluster = ",".join(f"etcd-{stack}-{i}=https://{fqdn(i)}:2380" for i in range(members))
    return [
        f"--name=etcd-{stack}-{index}",
        "--data-dir=/var/lib/etcd/data",
        f"--initial-cluster={cluster}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token=etcd-{stack}-{ns}",
        "--listen-peer-urls=https://0.0.0.0:2380",
        f"--initial-advertise-peer-urls=https://{fqdn(index)}:2380",
        "--listen-client-urls=https://0.0.0.0:2379",
        f"--advertise-client-urls=https://{fqdn(index)}:2379",
        "--listen-metrics-urls=http://0.0.0.0:2381",
        "--peer-cert-file=/etc/etcd/pki/peer/tls.crt",
        "--peer-key-file=/etc/etcd/pki/peer/tls.key",
        "--peer-trusted-ca-file=/etc/etcd/pki/peer/ca.crt",
        "--peer-client-cert-auth=true",
        "--cert-file=/etc/etcd/pki/server/tls.crt",
        "--key-file=/etc/etcd/pki/server/tls.key",
        "--trusted-ca-file=/etc/etcd/pki/server/ca.crt",
        "--client-cert-auth=true",
    ]


def test_skip_member_command_is_exactly_this(make_settings):
    settings = make_settings("skip", skipClientSanVerification=True, image=IMAGE.format("3.6.16"))
    member = plan.members_of(settings)[0]
    cluster = ",".join(
        f"etcd-skip-{i}=https://etcd-skip-{i}.default.svc.cluster.local:2380" for i in range(3)
    )
    assert plan.etcd_command(settings, member) == [
        "/usr/local/bin/etcd",
        "--name=etcd-skip-0",
        "--data-dir=/var/lib/etcd/data",
        f"--initial-cluster={cluster}",
        "--initial-cluster-state=new",
        "--initial-cluster-token=etcd-skip-default",
        "--listen-peer-urls=https://0.0.0.0:2380",
        "--initial-advertise-peer-urls=https://etcd-skip-0.default.svc.cluster.local:2380",
        "--listen-client-urls=https://0.0.0.0:2379",
        "--advertise-client-urls=https://etcd-skip-0.default.svc.cluster.local:2379",
        "--listen-metrics-urls=http://0.0.0.0:2381",
        "--peer-cert-file=/etc/etcd/pki/peer/tls.crt",
        "--peer-key-file=/etc/etcd/pki/peer/tls.key",
        "--peer-trusted-ca-file=/etc/etcd/pki/peer/ca.crt",
        "--peer-client-cert-auth=true",
        "--cert-file=/etc/etcd/pki/server/tls.crt",
        "--key-file=/etc/etcd/pki/server/tls.key",
        "--trusted-ca-file=/etc/etcd/pki/server/ca.crt",
        "--client-cert-auth=true",
        "--peer-cert-allowed-cn=etcd-skip-peer",
        "--peer-skip-client-san-verification=true",
    ]


@pytest.mark.parametrize(
    ("version", "skip", "tail"),
    [
        ("3.4.23", True, ["--peer-cert-allowed-cn=etcd-demo-peer", EXPERIMENTAL]),
        ("3.4.23", False, []),
        ("3.5.1", True, ["--peer-cert-allowed-cn=etcd-demo-peer", EXPERIMENTAL]),
        ("3.5.21", True, ["--peer-cert-allowed-cn=etcd-demo-peer", EXPERIMENTAL]),
        ("3.5.21", False, []),
        ("3.6.0", True, ["--peer-cert-allowed-cn=etcd-demo-peer", STABLE]),
        ("3.6.16", True, ["--peer-cert-allowed-cn=etcd-demo-peer", STABLE]),
        ("3.6.16", False, []),
        ("3.7.0", True, ["--peer-cert-allowed-cn=etcd-demo-peer", STABLE]),
        ("3.7.0", False, []),
    ],
)
@pytest.mark.parametrize("index", [0, 2])
def test_full_argument_list_by_version(make_settings, version, skip, tail, index):
    settings = make_settings("demo", skipClientSanVerification=skip, image=IMAGE.format(version))
    member = plan.members_of(settings)[index]
    args = plan.etcd_args(settings, member)
    assert args == common_args("demo", index) + tail
    assert plan.etcd_command(settings, member) == ["/usr/local/bin/etcd", *args]
    # Exactly one spelling ever: 3.6 refuses both together, 3.7 knows no experimental flag.
    assert sum("skip-client-san-verification" in a for a in args) == (1 if skip else 0)


@pytest.mark.parametrize(
    ("version", "flag"),
    [("3.4.23", EXPERIMENTAL), ("3.5.21", EXPERIMENTAL), ("3.6.16", STABLE), ("3.7.0", STABLE)],
)
def test_version_from_etcd_version_key_decides_spelling_for_digest_images(make_settings, version, flag):
    image = "gcr.io/etcd-development/etcd@sha256:" + "ab" * 32
    settings = make_settings("demo", skipClientSanVerification=True, image=image, etcdVersion=version)
    assert plan.etcd_args(settings, plan.members_of(settings)[1])[-1] == flag


@pytest.mark.parametrize("version", ["3.4.23", "3.5.1", "3.6.16", "3.7.0"])
@pytest.mark.parametrize("skip", [True, False])
def test_pod_never_sets_the_environment_variable_form(make_settings, version, skip):
    settings = make_settings("demo", skipClientSanVerification=skip, image=IMAGE.format(version))
    for member in plan.members_of(settings):
        pod = plan.pod_manifest(settings, member)
        (container,) = pod["spec"]["containers"]
        assert "env" not in container
        assert "envFrom" not in container
        assert not any("ETCD_" in part for part in container["command"])
        assert container["command"] == plan.etcd_command(settings, member)


@pytest.mark.parametrize(
    ("cn_value", "skip", "expected"),
    [
        ("auto", True, "--peer-cert-allowed-cn=etcd-demo-peer"),
        ("auto", False, None),
        ("", True, None),
        ("etcd-custom-peer", False, "--peer-cert-allowed-cn=etcd-custom-peer"),
        ("etcd-custom-peer", True, "--peer-cert-allowed-cn=etcd-custom-peer"),
        # Only `auto` exactly means auto: any other spelling is a CN like any other.
        ("AUTO", False, "--peer-cert-allowed-cn=AUTO"),
        ("foo", True, "--peer-cert-allowed-cn=foo"),
    ],
)
def test_peer_cert_allowed_cn(make_settings, cn_value, skip, expected):
    settings = make_settings("demo", skipClientSanVerification=skip, peerCertAllowedCn=cn_value)
    args = plan.etcd_args(settings, plan.members_of(settings)[0])
    pinned = [a for a in args if a.startswith("--peer-cert-allowed")]
    assert pinned == ([] if expected is None else [expected])


def test_initial_cluster_lists_every_member_by_service_fqdn(make_settings):
    settings = make_settings("demo", members=5, namespace="etcd-ns", clusterDomain="example.internal")
    members = plan.members_of(settings)
    assert [m.name for m in members] == [f"etcd-demo-{i}" for i in range(5)]
    expected = ",".join(
        f"etcd-demo-{i}=https://etcd-demo-{i}.etcd-ns.svc.example.internal:2380" for i in range(5)
    )
    for member in members:
        args = plan.etcd_args(settings, member)
        assert f"--initial-cluster={expected}" in args
        assert args == common_args("demo", member.index, 5, "etcd-ns", "example.internal")


def test_member_names_and_urls(make_settings):
    settings = make_settings("demo", namespace="etcd-ns", clusterDomain="example.internal")
    member = plan.members_of(settings)[2]
    assert member.service_names == (
        "etcd-demo-2",
        "etcd-demo-2.etcd-ns",
        "etcd-demo-2.etcd-ns.svc",
        "etcd-demo-2.etcd-ns.svc.example.internal",
    )
    assert member.service_fqdn == "etcd-demo-2.etcd-ns.svc.example.internal"
    assert member.peer_url == "https://etcd-demo-2.etcd-ns.svc.example.internal:2380"
    assert member.client_url == "https://etcd-demo-2.etcd-ns.svc.example.internal:2379"


def test_cluster_token_is_per_stack_and_shared_by_members(make_settings):
    skip, noskip = make_settings("skip"), make_settings("noskip")
    assert plan.cluster_token(skip) == "etcd-skip-default"
    assert plan.cluster_token(noskip) == "etcd-noskip-default"
    assert plan.cluster_token(make_settings("skip", namespace="other")) == "etcd-skip-other"
    tokens = {
        next(a for a in plan.etcd_args(skip, m) if a.startswith("--initial-cluster-token="))
        for m in plan.members_of(skip)
    }
    assert tokens == {"--initial-cluster-token=etcd-skip-default"}


@pytest.mark.parametrize(
    ("skip", "members", "outcome"),
    [
        (True, 3, "healthy"),
        (False, 3, "peers rejected"),
        (True, 5, "healthy"),
        (False, 5, "peers rejected"),
        (False, 2, "peers rejected"),
        # A single member never opens a peer connection.
        (False, 1, "healthy"),
        (True, 1, "healthy"),
    ],
)
def test_expected_outcome(make_settings, skip, members, outcome):
    settings = make_settings("demo", skipClientSanVerification=skip, members=members)
    assert plan.expected_outcome(settings) == outcome


def test_certificate_names_cover_every_url_host_and_no_pod_ip(make_settings):
    settings = make_settings("demo", namespace="etcd-ns", clusterDomain="example.internal")
    for member in plan.members_of(settings):
        names = list(member.service_names)
        assert plan.peer_dns_names(member) == [*names, "localhost"]
        assert plan.server_dns_names(member) == [*names, "localhost"]
        assert urlsplit(member.peer_url).hostname in plan.peer_dns_names(member)
        assert urlsplit(member.client_url).hostname in plan.server_dns_names(member)
    # etcdctl inside the Pod talks to https://localhost:2379.
    assert plan.SERVER_IP_ADDRESSES == ["127.0.0.1"]


def test_kubectl_commands(make_settings):
    settings = make_settings("skip", namespace="etcd-ns")
    assert plan.kubectl_health_command(settings) == (
        "kubectl exec -n etcd-ns etcd-skip-0 -- /usr/local/bin/etcdctl"
        " --endpoints=https://localhost:2379"
        " --cacert=/etc/etcd/pki/client/ca.crt"
        " --cert=/etc/etcd/pki/client/tls.crt"
        " --key=/etc/etcd/pki/client/tls.key"
        " endpoint health --cluster"
    )
    assert plan.kubectl_logs_command(settings) == (
        "kubectl logs -n etcd-ns"
        " -l app.kubernetes.io/name=etcd,app.kubernetes.io/instance=etcd-skip,etcd-peer-san/member"
        " --prefix --tail=-1"
    )
    assert plan.REJECTION_MARKER == "does not match any of DNSNames"


def selects(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes equality-based selector semantics (`k=v` and `k` for "exists")."""
    for requirement in selector.split(","):
        key, eq, value = requirement.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


@pytest.mark.parametrize("members", [1, 3, 9])
def test_logs_selector_matches_exactly_this_stacks_member_pods(make_settings, members):
    settings = make_settings("skip", members=members)
    selector = plan.member_pod_selector(settings)
    # One shell word: `$(pulumi stack output logsCommand)` must work unquoted.
    assert selector.split() == [selector]
    assert not set(selector) & set("'\"$!*?[]() ")
    pods = [plan.pod_manifest(settings, m)["metadata"]["labels"] for m in plan.members_of(settings)]
    assert all(selects(selector, labels) for labels in pods)
    others = {
        # The lab's fault-scenario client and its intruder (which copies the labels the
        # NetworkPolicy admits to the peer port), and a client wearing both.
        "client": {plan.CLIENT_LABEL: "etcd-skip"},
        "intruder": plan.cluster_labels(settings),
        "client-with-cluster-labels": {**plan.cluster_labels(settings), plan.CLIENT_LABEL: "etcd-skip"},
        "other-stack-member": plan.members_of(make_settings("noskip"))[0].labels,
    }
    for name, labels in others.items():
        assert not selects(selector, labels), name


@pytest.mark.parametrize("skip", [True, False])
def test_every_tls_file_in_the_commands_is_mounted_from_a_tls_secret(make_settings, skip):
    settings = make_settings("demo", skipClientSanVerification=skip)
    tls_options = ("--cacert", "--cert", "--key")
    health_files = [a.split("=", 1)[1] for a in plan.etcdctl_argv(settings) if a.split("=")[0] in tls_options]
    assert len(health_files) == 3
    for member in plan.members_of(settings):
        pod = plan.pod_manifest(settings, member)
        (container,) = pod["spec"]["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        files = [a.split("=", 1)[1] for a in container["command"] if a.endswith((".crt", ".key"))]
        assert len(files) == 6
        for path in files + health_files:
            directory, key = posixpath.split(path)
            assert key in ("tls.crt", "tls.key", "ca.crt")
            mount = mounts[directory]
            assert mount["readOnly"] is True
            secret = volumes[mount["name"]]["secret"]
            assert secret["defaultMode"] == 0o440
            owner = settings.cluster_name if directory.endswith("/client") else member.name
            assert secret["secretName"] == f"{owner}-{posixpath.basename(directory)}-tls"


@pytest.mark.parametrize(
    ("version", "readiness", "liveness"),
    [
        ("3.4.23", "/health", "/metrics"),
        ("3.4.29", "/readyz", "/livez"),
        ("3.5.1", "/health", "/metrics"),
        ("3.5.11", "/readyz", "/livez"),
        ("3.6.16", "/readyz", "/livez"),
        ("3.7.0", "/readyz", "/livez"),
    ],
)
def test_pod_probes_follow_the_version_table(make_settings, version, readiness, liveness):
    settings = make_settings("demo", image=IMAGE.format(version))
    (container,) = plan.pod_manifest(settings, plan.members_of(settings)[0])["spec"]["containers"]
    metrics = next(p for p in container["ports"] if p["name"] == "metrics")
    assert metrics["containerPort"] == 2381
    assert "--listen-metrics-urls=http://0.0.0.0:2381" in container["command"]
    assert container["readinessProbe"]["httpGet"] == {"path": readiness, "port": "metrics", "scheme": "HTTP"}
    assert container["livenessProbe"]["httpGet"] == {"path": liveness, "port": "metrics", "scheme": "HTTP"}
    assert not any(
        "exec" in container.get(p, {}) for p in ("readinessProbe", "livenessProbe", "startupProbe")
    )


def test_pod_runs_restricted_and_outlives_leader_transfer(make_settings):
    settings = make_settings("demo")
    pod = plan.pod_manifest(settings, plan.members_of(settings)[0])
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert spec["terminationGracePeriodSeconds"] > 7
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["fsGroup"] == container["securityContext"]["runAsGroup"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert set(container["resources"]) == {"requests", "limits"}
    # A custom build loaded into the node (`kind load docker-image`) is not in any registry.
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert {"name": "data", "emptyDir": {}} in spec["volumes"]
    assert {"name": "data", "mountPath": "/var/lib/etcd"} in container["volumeMounts"]


def test_each_service_selects_exactly_its_own_member(make_settings):
    settings = make_settings("demo", members=3)
    members = plan.members_of(settings)
    for member in members:
        service = plan.service_manifest(settings, member)
        assert service["metadata"]["name"] == member.name
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert service["spec"]["type"] == "ClusterIP"
        assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
            ("client", 2379, "client"),
            ("peer", 2380, "peer"),
        ]
        selector = service["spec"]["selector"].items()
        selected = [
            m for m in members if selector <= plan.pod_manifest(settings, m)["metadata"]["labels"].items()
        ]
        assert selected == [member]
