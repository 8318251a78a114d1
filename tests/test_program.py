"""The whole program, run for each stack file as the CLI would pass its config."""

from __future__ import annotations

from collections import Counter

import pytest

from components import cluster_plan as plan
from lab.program import ProgramRun, project_config_defaults, run_program, stack_config

COMPONENT = "etcdpeersan:index:EtcdCluster"
SERVICE = "kubernetes:core/v1:Service"
POD = "kubernetes:core/v1:Pod"
SECRET = "kubernetes:core/v1:Secret"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
KEY = "tls:index/privateKey:PrivateKey"
SELF_SIGNED = "tls:index/selfSignedCert:SelfSignedCert"
CSR = "tls:index/certRequest:CertRequest"
SIGNED = "tls:index/locallySignedCert:LocallySignedCert"
WAIT_FOR = "pulumi.com/waitFor"


def by_k8s_name(run: ProgramRun, type_: str) -> dict[str, object]:
    return {r.manifest()["metadata"]["name"]: r for r in run.of_type(type_)}


def expected_counts(members: int) -> dict[str, int]:
    leaves = 2 * members + 1  # peer + server per member, one etcdctl client
    return {
        COMPONENT: 1,
        SERVICE: members,
        POD: members,
        SECRET: leaves,
        NETPOL: 1,
        KEY: leaves + 2,  # + the two CAs
        SELF_SIGNED: 2,
        CSR: leaves,
        SIGNED: leaves,
    }


@pytest.mark.parametrize(("members", "overrides"), [(3, {}), (5, {"members": "5"}), (1, {"members": "1"})])
@pytest.mark.parametrize("stack", ["skip", "noskip"])
def test_resource_counts_and_types(run_stack, stack, members, overrides):
    run = run_stack(stack, overrides)
    assert Counter(r.type for r in run.resources) == expected_counts(members)


def test_resource_names(stack_run):
    s = stack_run.stack
    names = {r.name for r in stack_run.resources}
    expected = {"etcd", "etcd-peer-ca-key", "etcd-client-ca-key", "etcd-peer-ca-cert", "etcd-client-ca-cert"}
    expected |= {"etcd-etcdctl-key", "etcd-etcdctl-csr", "etcd-etcdctl-cert", "etcd-shared-client-tls"}
    expected |= {"etcd-netpol"}
    for i in range(3):
        expected |= {f"etcd-{i}-svc", f"etcd-{i}-pod", f"etcd-{i}-peer-tls", f"etcd-{i}-server-tls"}
        expected |= {
            f"etcd-{i}-{role}-{kind}" for role in ("peer", "server") for kind in ("key", "csr", "cert")
        }
    assert names == expected
    assert len(stack_run.resources) == len(expected)
    assert set(by_k8s_name(stack_run, POD)) == {f"etcd-{s}-{i}" for i in range(3)}
    assert set(by_k8s_name(stack_run, SERVICE)) == {f"etcd-{s}-{i}" for i in range(3)}
    assert set(by_k8s_name(stack_run, SECRET)) == {
        f"etcd-{s}-client-tls",
        *(f"etcd-{s}-{i}-{role}-tls" for i in range(3) for role in ("peer", "server")),
    }
    assert set(by_k8s_name(stack_run, NETPOL)) == {f"etcd-{s}"}
    for manifest in stack_run.manifests():
        assert manifest["metadata"]["namespace"] == "default"


def test_one_component_parents_everything(stack_run):
    (component,) = stack_run.of_type(COMPONENT)
    assert component.name == "etcd"
    assert component.custom is False
    stack_urn = (
        f"urn:pulumi:{stack_run.stack}::etcd-peer-san::pulumi:pulumi:Stack::etcd-peer-san-{stack_run.stack}"
    )
    assert component.parent == stack_urn
    children = [r for r in stack_run.resources if r is not component]
    assert children
    assert {r.parent for r in children} == {component.urn}
    assert all(r.custom for r in children)


def test_pods_depend_on_their_secrets_every_service_and_the_policy(stack_run):
    s = stack_run.stack
    secrets = {name: r.urn for name, r in by_k8s_name(stack_run, SECRET).items()}
    services = {r.urn for r in stack_run.of_type(SERVICE)}
    (policy,) = stack_run.of_type(NETPOL)
    assert len(services) == 3
    for name, pod in by_k8s_name(stack_run, POD).items():
        own = {secrets[f"{name}-peer-tls"], secrets[f"{name}-server-tls"], secrets[f"etcd-{s}-client-tls"]}
        # The policy exists before any member starts: no window with an open peer port.
        assert set(pod.dependencies) == own | services | {policy.urn}


def test_network_policy_admits_peers_only_from_members(stack_run, run_settings):
    settings = run_settings(stack_run)
    (policy,) = stack_run.of_type(NETPOL)
    spec = policy.manifest()["spec"]
    members = {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": f"etcd-{stack_run.stack}"}
    assert spec["podSelector"] == {"matchLabels": members}
    assert spec["policyTypes"] == ["Ingress"]
    by_port: dict[int, list[object]] = {}
    for rule in spec["ingress"]:
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).append(rule.get("from"))
    assert by_port[2380] == [[{"podSelector": {"matchLabels": members}}]]
    assert by_port[2379] == [
        [{"podSelector": {"matchLabels": members}}],
        [{"podSelector": {"matchLabels": {"etcd-peer-san/client": f"etcd-{stack_run.stack}"}}}],
    ]
    assert by_port[2381] == [None]  # plain-HTTP health and metrics: from anywhere
    for pod in stack_run.manifests("Pod"):
        assert members.items() <= pod["metadata"]["labels"].items()
    assert policy.manifest() == plan.network_policy_manifest(settings)


def test_only_pods_are_deleted_before_replacement(stack_run):
    # Fixed metadata.name: a replacement must delete the old Pod first.
    assert {r.type for r in stack_run.resources if r.delete_before_replace} == {POD}
    assert all(r.delete_before_replace for r in stack_run.of_type(POD))


def test_each_pod_runs_the_planned_command(stack_run, run_settings):
    settings = run_settings(stack_run)
    pods = by_k8s_name(stack_run, POD)
    for member in plan.members_of(settings):
        manifest = pods[member.name].manifest()
        (container,) = manifest["spec"]["containers"]
        assert container["command"] == plan.etcd_command(settings, member)
        assert container["image"] == "gcr.io/etcd-development/etcd:v3.6.16"
        assert manifest == plan.pod_manifest(settings, member)


@pytest.mark.parametrize(
    ("stack", "skip_args"),
    [
        ("skip", ["--peer-cert-allowed-cn=etcd-skip-peer", "--peer-skip-client-san-verification=true"]),
        ("noskip", []),
    ],
)
def test_stack_file_commands_end_with_the_skip_options(run_stack, stack, skip_args):
    for pod in run_stack(stack).manifests("Pod"):
        command = pod["spec"]["containers"][0]["command"]
        assert command[:2] == ["/usr/local/bin/etcd", f"--name={pod['metadata']['name']}"]
        assert command[19:] == skip_args
        assert command[18] == "--client-cert-auth=true"


@pytest.mark.parametrize(("stack", "outcome"), [("skip", "healthy"), ("noskip", "peers rejected")])
def test_stack_outputs(run_stack, stack, outcome):
    run = run_stack(stack)
    assert set(run.outputs) == {
        "members",
        "expectedOutcome",
        "healthCommand",
        "logsCommand",
        "logLookFor",
        "peerCaCert",
        "clientCaCert",
    }
    assert run.output("members") == {
        f"etcd-{stack}-{i}": f"etcd-{stack}-{i}.default.svc.cluster.local" for i in range(3)
    }
    assert run.output("expectedOutcome") == outcome
    assert run.output("healthCommand") == (
        f"kubectl exec -n default etcd-{stack}-0 -- /usr/local/bin/etcdctl --endpoints=https://localhost:2379"
        " --cacert=/etc/etcd/pki/client/ca.crt --cert=/etc/etcd/pki/client/tls.crt"
        " --key=/etc/etcd/pki/client/tls.key endpoint health --cluster"
    )
    assert run.output("logsCommand") == (
        f"kubectl logs -n default -l app.kubernetes.io/name=etcd,app.kubernetes.io/instance=etcd-{stack},"
        "etcd-peer-san/member --prefix --tail=-1"
    )
    assert run.output("logLookFor") == "does not match any of DNSNames"
    secrets = {name: r.plain_inputs["stringData"] for name, r in by_k8s_name(run, SECRET).items()}
    assert run.output("peerCaCert") == secrets[f"etcd-{stack}-0-peer-tls"]["ca.crt"]
    assert run.output("clientCaCert") == secrets[f"etcd-{stack}-0-server-tls"]["ca.crt"]
    assert run.output("peerCaCert").startswith("-----BEGIN CERTIFICATE-----")
    assert run.output("peerCaCert") != run.output("clientCaCert")
    # Public data only, so nothing in the outputs needs to be secret.
    assert {name for name, out in run.outputs.items() if out.secret} == set()


def test_logs_command_selects_every_member_pod_and_nothing_else(stack_run):
    command = stack_run.output("logsCommand").split()
    assert command[:4] == ["kubectl", "logs", "-n", "default"]
    assert command[4] == "-l"
    assert command[6:] == ["--prefix", "--tail=-1"]
    requirements = command[5].split(",")
    selected = [
        pod["metadata"]["name"]
        for pod in stack_run.manifests()
        if pod["kind"] == "Pod"
        and all(
            (key in pod["metadata"]["labels"]) if not eq else pod["metadata"]["labels"].get(key) == value
            for key, eq, value in (r.partition("=") for r in requirements)
        )
    ]
    assert sorted(selected) == [f"etcd-{stack_run.stack}-{i}" for i in range(3)]


def test_noskip_pods_wait_for_running_only(noskip_run):
    pods = noskip_run.manifests("Pod")
    assert len(pods) == 3
    for pod in pods:
        assert pod["metadata"]["annotations"] == {WAIT_FOR: "jsonpath={.status.phase}=Running"}


def test_skip_pods_wait_for_ready(skip_run):
    pods = skip_run.manifests("Pod")
    assert len(pods) == 3
    for pod in pods:
        assert WAIT_FOR not in pod["metadata"].get("annotations", {})


@pytest.mark.parametrize(("stack", "overrides"), [("skip", {}), ("noskip", {}), ("noskip", {"members": "1"})])
def test_no_pod_skips_await(run_stack, stack, overrides):
    # skipAwait on a replaceable Pod races its own replacement: the
    # annotation skips the await on delete too, so the new Pod can meet the old one.
    for pod in run_stack(stack, overrides).manifests("Pod"):
        assert "pulumi.com/skipAwait" not in pod["metadata"].get("annotations", {})


def test_single_noskip_member_waits_for_ready(run_stack):
    # One member never needs a peer, so it becomes Ready and `up` can wait for that.
    (pod,) = run_stack("noskip", {"members": "1"}).manifests("Pod")
    assert WAIT_FOR not in pod["metadata"].get("annotations", {})


def test_toggling_skip_changes_every_pod_command(run_stack):
    on = {p["metadata"]["name"]: p for p in run_stack("skip").manifests("Pod")}
    off = {
        p["metadata"]["name"]: p
        for p in run_stack("skip", {"skipClientSanVerification": "false"}).manifests("Pod")
    }
    assert set(on) == set(off) == {"etcd-skip-0", "etcd-skip-1", "etcd-skip-2"}
    for name in on:
        on_container = on[name]["spec"]["containers"][0]
        off_container = off[name]["spec"]["containers"][0]
        # The command is part of the container spec: a change replaces the Pod.
        assert on_container["command"] == [
            *off_container["command"],
            "--peer-cert-allowed-cn=etcd-skip-peer",
            "--peer-skip-client-san-verification=true",
        ]
        assert {**on_container, "command": None} == {**off_container, "command": None}


def test_overrides_flow_into_names_and_urls(run_stack):
    run = run_stack("skip", {"members": "5", "namespace": "etcd-demo", "clusterDomain": "example.internal"})
    fqdns = {f"etcd-skip-{i}": f"etcd-skip-{i}.etcd-demo.svc.example.internal" for i in range(5)}
    assert run.output("members") == fqdns
    assert {m["metadata"]["namespace"] for m in run.manifests()} == {"etcd-demo"}
    assert {p["metadata"]["name"] for p in run.manifests("Pod")} == set(fqdns)
    assert {s["metadata"]["name"] for s in run.manifests("Service")} == set(fqdns)
    cluster = ",".join(f"{name}=https://{fqdn}:2380" for name, fqdn in fqdns.items())
    for pod in run.manifests("Pod"):
        command = pod["spec"]["containers"][0]["command"]
        name = pod["metadata"]["name"]
        assert f"--initial-cluster={cluster}" in command
        assert f"--initial-advertise-peer-urls=https://{fqdns[name]}:2380" in command
        assert f"--advertise-client-urls=https://{fqdns[name]}:2379" in command
        assert "--initial-cluster-token=etcd-skip-etcd-demo" in command
    assert run.output("healthCommand").startswith("kubectl exec -n etcd-demo etcd-skip-0 -- ")
    assert run.output("logsCommand") == (
        "kubectl logs -n etcd-demo -l app.kubernetes.io/name=etcd,app.kubernetes.io/instance=etcd-skip,"
        "etcd-peer-san/member --prefix --tail=-1"
    )


def test_other_image_versions_flow_into_pods(run_stack):
    run = run_stack("skip", {"image": "localhost:5000/etcd:v3.5.1"})
    for pod in run.manifests("Pod"):
        (container,) = pod["spec"]["containers"]
        assert container["image"] == "localhost:5000/etcd:v3.5.1"
        assert container["command"][-1] == "--experimental-peer-skip-client-san-verification=true"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"
        assert container["livenessProbe"]["httpGet"]["path"] == "/metrics"


@pytest.mark.parametrize(
    ("members", "warning"),
    [
        ("1", "members = 1: a single member never opens a peer connection, so the SAN check cannot show"),
        ("2", "members = 2: an even count tolerates no more failures than 1"),
        ("4", "members = 4: an even count tolerates no more failures than 3"),
        ("3", None),
        ("5", None),
        ("9", None),
    ],
)
def test_member_count_warnings(run_stack, members, warning):
    run = run_stack("noskip", {"members": members})
    assert run.warnings == ([] if warning is None else [warning])
    assert len(run.manifests("Pod")) == int(members)


def test_stack_files_run_without_warnings(stack_run):
    assert stack_run.warnings == []


def without_pem(value: object) -> object:
    """`value` with every PEM block (fresh keys and certificates per run) replaced by its label."""
    if isinstance(value, dict):
        return {k: without_pem(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_pem(v) for v in value]
    if isinstance(value, str) and value.startswith("-----BEGIN "):
        return value.splitlines()[0]
    return value


def test_pulumi_yaml_defaults_are_what_the_cli_passes():
    assert project_config_defaults() == {
        "etcd-peer-san:skipClientSanVerification": "false",
        "etcd-peer-san:image": "gcr.io/etcd-development/etcd:v3.6.16",
        "etcd-peer-san:etcdVersion": "",
        "etcd-peer-san:members": "3",
        "etcd-peer-san:namespace": "default",
        "etcd-peer-san:clusterDomain": "cluster.local",
        "etcd-peer-san:peerCertAllowedCn": "auto",
    }


@pytest.mark.parametrize("stack", ["skip", "noskip"])
def test_stack_files_with_the_pulumi_yaml_defaults_declare_the_same(run_stack, stack):
    # The CLI passes Pulumi.yaml's defaults (as strings) under the stack file's values.
    with_defaults = run_program(stack, {**project_config_defaults(), **stack_config(stack)})
    assert len(with_defaults.config) == 7
    without = run_stack(stack)
    assert len(without.config) == 2

    def declared(run: ProgramRun) -> list[tuple[str, str, object]]:
        return sorted(
            ((r.type, r.name, without_pem(r.plain_inputs)) for r in run.resources), key=lambda t: t[:2]
        )

    assert declared(with_defaults) == declared(without)
    assert len(declared(without)) == 40
    assert with_defaults.manifests("Pod") == without.manifests("Pod")
    assert {name: without_pem(out.value) for name, out in with_defaults.outputs.items()} == {
        name: without_pem(out.value) for name, out in without.outputs.items()
    }
    assert with_defaults.warnings == without.warnings == []
