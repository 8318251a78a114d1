"""With the SAN check skipped, the peer port still refuses every certificate that is not a
member's: real etcd (3.5.1, and 3.4.23 when available) in the lab, attacked from an
extra pod through the members' Service addresses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from lab.etcd_binary import EtcdBinary
from lab.intruders import IntrudersReport, run_intruders
from tests.lab_support import ROOT, lab_namespaces, require_lab

pytestmark = pytest.mark.lab

MEMBERS = ["etcd-skip-0", "etcd-skip-1", "etcd-skip-2"]
PINNED_CN = "etcd-skip-peer"


@pytest.fixture(scope="module")
def pinned(etcd_binary: EtcdBinary) -> IntrudersReport:
    """The skip stack as declared: peerCertAllowedCn 'auto' pins the members' CN."""
    return run_intruders("skip", etcd_binary)


@pytest.fixture(scope="module")
def unpinned(etcd_binary: EtcdBinary) -> IntrudersReport:
    return run_intruders("skip", etcd_binary, overrides={"peerCertAllowedCn": ""})


def assert_gone(report: IntrudersReport) -> None:
    assert not [n for n in lab_namespaces() if n.startswith(f"esl-{report.run_id}-")]
    assert not list(Path("/etc/netns").glob(f"esl-{report.run_id}-*"))
    assert not (Path("/tmp/etcd-san-lab") / report.run_id).exists()


def test_a_peer_ca_certificate_with_the_members_cn_is_accepted_from_any_address(pinned):
    # Not vacuous: the intruder's pod IP is in no SAN, and the skip flag lets it through.
    assert pinned.skip and pinned.pinned_cn == PINNED_CN
    control = pinned.case("control")
    assert control.observed == "accepted", control.as_dict()
    assert pinned.intruder_ip not in control.as_dict()["certificate"]["dnsNames"]
    for attempt in control.attempts:
        assert attempt.status == 200
        assert attempt.service_ip.startswith("10.96."), "reached through the Service address"
        assert sorted(attempt.members_listed or []) == MEMBERS
        assert attempt.log_line is None


REFUSALS = [
    # case, what the receiving member logs, what else its line names
    (
        "foreign-ca",
        "certificate signed by unknown authority",
        'candidate authority certificate \\"etcd-skip peer CA\\"',
    ),
    ("client-ca", "certificate signed by unknown authority", "failed to verify client certificate"),
    ("other-cn", "client certificate authentication failed", '"etcd-skip-0.default.svc.cluster.local"'),
]


@pytest.mark.parametrize(("case", "error", "also"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_the_peer_port_refuses_non_member_certificates(pinned, case, error, also):
    result = pinned.case(case)
    assert result.observed == "refused", result.as_dict()
    assert result.ok, result.as_dict()
    for attempt in result.attempts:
        assert attempt.status is None
        # Go's TLS server answers a failed client-certificate check with this alert.
        assert "SSLError" in attempt.error and "bad certificate" in attempt.error, attempt.error
        line = attempt.log_line or ""
        assert "rejected connection" in line, attempt
        assert f"{pinned.intruder_ip}:" in line, "the refusal is the intruder's, from its pod IP"
        assert error in line and also in line, line


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Signed by `ca`'s key (and naming it as issuer): the signature decides, not the name."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def assert_attack_certificates(report: dict) -> None:
    """What each attack certificate really is, read from the scenario's JSON: a refusal
    proves something only if the certificate differs from a member's where it claims to."""
    cases = {c["case"]: _cert(c["certificate"]["pem"]) for c in report["cases"]}
    peer_ca = _cert(report["stackOutputs"]["peerCaCert"])
    client_ca = _cert(report["stackOutputs"]["clientCaCert"])
    members = {pod: _cert(pem) for pod, pem in report["memberPeerCertificates"].items()}
    assert sorted(members) == MEMBERS
    member_dns = [sorted(_san(m).get_values_for_type(x509.DNSName)) for m in members.values() if _san(m)]
    assert len(member_dns) == len(MEMBERS) and all(member_dns), "members' peer certificates carry DNS SANs"
    pin = report["peerCertAllowedCn"] or PINNED_CN
    assert {_cn(m) for m in members.values()} == {pin}, "the members share the pinned CN"
    assert all(_issued_by(m, peer_ca) for m in members.values())

    # foreign-ca: a member's CN and DNS SANs, the peer CA's name as issuer, another key.
    foreign = cases["foreign-ca"]
    assert _cn(foreign) == pin
    san = _san(foreign)
    assert san is not None, "the foreign-CA certificate has no SAN extension"
    assert sorted(san.get_values_for_type(x509.DNSName)) in member_dns
    assert san.get_values_for_type(x509.IPAddress) == []
    assert foreign.issuer == peer_ca.subject
    assert not _issued_by(foreign, peer_ca), "the foreign-CA certificate verifies against the peer CA"

    # client-ca: really signed by the program's client CA, and not by the peer CA.
    assert _issued_by(cases["client-ca"], client_ca), "the client-ca certificate is not the client CA's"
    assert not _issued_by(cases["client-ca"], peer_ca)

    # other-cn: the peer CA's own signature, with a CN that is neither the pin nor a member's.
    other = cases["other-cn"]
    assert _issued_by(other, peer_ca), "the other-cn certificate is not the peer CA's"
    assert _cn(other) != pin

    # control: a member's twin (same signer, CN and DNS SANs), so the refusals are not vacuous.
    control = cases["control"]
    assert _issued_by(control, peer_ca) and _cn(control) == pin
    assert sorted(_san(control).get_values_for_type(x509.DNSName)) in member_dns


def test_each_attack_certificate_differs_from_a_members_only_where_it_claims(pinned, unpinned):
    for report in (pinned, unpinned):
        assert_attack_certificates(json.loads(json.dumps(report.as_dict())))


def test_labels_get_the_intruder_to_the_peer_port_and_nothing_else(pinned):
    # The NetworkPolicy admits the members' labels, which any pod can wear: TLS decides.
    assert pinned.peer_port_guarded
    assert pinned.intruder_labels == {
        "app.kubernetes.io/name": "etcd",
        "app.kubernetes.io/instance": "etcd-skip",
    }
    outsider = pinned.case("no-labels")
    assert outsider.observed == "blocked" and outsider.ok, outsider.as_dict()
    for attempt in outsider.attempts:
        # The policy's TCP reset: no TLS, and nothing in etcd's log.
        assert attempt.error.startswith("ConnectionRefusedError"), attempt.error
        assert attempt.log_line is None


def test_the_cn_pin_is_what_refuses_another_cn(unpinned):
    assert unpinned.skip and unpinned.pinned_cn is None
    other = unpinned.case("other-cn")
    assert other.observed == "accepted", other.as_dict()
    assert all(sorted(a.members_listed or []) == MEMBERS for a in other.attempts)
    # Without the pin the CA still decides.
    for case in ("foreign-ca", "client-ca"):
        result = unpinned.case(case)
        assert result.observed == "refused" and result.ok, result.as_dict()
    assert unpinned.ok


def test_the_cluster_stays_healthy_with_its_real_members(pinned, unpinned):
    for report in (pinned, unpinned):
        cluster = report.cluster
        assert cluster is not None
        assert cluster.healthy == dict.fromkeys(MEMBERS, True)
        assert len(cluster.leaders) == 1
        assert cluster.running == dict.fromkeys(MEMBERS, True)
        assert sorted(cluster.members_before) == MEMBERS
        after = {pod: sorted(names or []) for pod, names in cluster.members_after.items()}
        assert after == dict.fromkeys(MEMBERS, MEMBERS)
        assert report.ok
        assert_gone(report)


def _lab_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_command_line_exits_0_with_a_json_report():
    require_lab()
    result = _lab_cli("intruders", "--stack", "skip", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["peerCertAllowedCn"] == PINNED_CN
    assert_attack_certificates(report)
    assert {c["case"]: c["observed"] for c in report["cases"]} == {
        "control": "accepted",
        "foreign-ca": "refused",
        "client-ca": "refused",
        "other-cn": "refused",
        "no-labels": "blocked",
    }
