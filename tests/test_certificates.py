"""The certificates the program creates, parsed from the Secrets of a whole run.

A real path validator (`cryptography.x509.verification`) checks names and chains, the
way the dialing etcd member (server verifier) and the accepting one (client verifier)
would.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.program import ProgramRun

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
YEAR = dt.timedelta(days=365)


@dataclass(frozen=True)
class TlsSecret:
    cert: x509.Certificate
    key_pem: str
    ca: x509.Certificate


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def tls_secrets(run: ProgramRun) -> dict[str, TlsSecret]:
    """Kubernetes Secret name -> its parsed contents."""
    found = {}
    for manifest in run.manifests("Secret"):
        data = manifest["stringData"]
        assert manifest["type"] == "kubernetes.io/tls"
        assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
        found[manifest["metadata"]["name"]] = TlsSecret(
            load_cert(data["tls.crt"]), data["tls.key"], load_cert(data["ca.crt"])
        )
    return found


def command_of(run: ProgramRun, member: str) -> dict[str, str]:
    pod = next(p for p in run.manifests("Pod") if p["metadata"]["name"] == member)
    options = {}
    for arg in pod["spec"]["containers"][0]["command"][1:]:
        name, _, value = arg.partition("=")
        options[name] = value
    return options


def dns_sans(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


def ip_sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def verifies_as_server(cert: x509.Certificate, ca: x509.Certificate, host: str) -> bool:
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([ca]))
        .build_server_verifier(verification.DNSName(host))
    )
    try:
        verifier.verify(cert, [])
    except verification.VerificationError:
        return False
    return True


def verifies_as_client(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    # etcd (Go) does not require a SAN on client certificates; the web-PKI default does.
    end_entity = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([ca]))
        .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=end_entity)
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, [])
    except verification.VerificationError:
        return False
    return True


@pytest.fixture(scope="module", params=["skip", "noskip"])
def run(request, run_stack) -> ProgramRun:
    return run_stack(request.param)


@pytest.fixture(scope="module")
def secrets(run) -> dict[str, TlsSecret]:
    return tls_secrets(run)


@pytest.fixture(scope="module")
def cas(run) -> tuple[x509.Certificate, x509.Certificate]:
    return load_cert(run.output("peerCaCert")), load_cert(run.output("clientCaCert"))


def members(run: ProgramRun) -> list[str]:
    return sorted(run.output("members"))


def test_every_url_host_is_in_the_served_certificate(run, secrets):
    for member in members(run):
        options = command_of(run, member)
        peer, server = secrets[f"{member}-peer-tls"], secrets[f"{member}-server-tls"]
        own_peer_urls = [entry.split("=", 1)[1] for entry in options["--initial-cluster"].split(",")]
        own_peer_urls = [u for u in own_peer_urls if urlsplit(u).hostname.startswith(f"{member}.")]
        own_peer_urls.append(options["--initial-advertise-peer-urls"])
        assert len(own_peer_urls) == 2
        for url in own_peer_urls:
            host = urlsplit(url).hostname
            assert urlsplit(url).port == 2380
            assert host in dns_sans(peer.cert)
            # What the dialing member checks, with the skip flag or without it.
            assert verifies_as_server(peer.cert, peer.ca, host)
        client_url = urlsplit(options["--advertise-client-urls"])
        assert client_url.port == 2379
        assert client_url.hostname in dns_sans(server.cert)
        assert verifies_as_server(server.cert, server.ca, client_url.hostname)
        # The health command's endpoint: etcdctl inside the Pod dials localhost.
        assert "--endpoints=https://localhost:2379" in run.output("healthCommand")
        assert verifies_as_server(server.cert, server.ca, "localhost")
        # Names of another member are not accepted.
        other = next(m for m in members(run) if m != member)
        assert not verifies_as_server(peer.cert, peer.ca, run.output("members")[other])


def test_peer_sans_are_service_names_only(run, secrets):
    for member in members(run):
        peer = secrets[f"{member}-peer-tls"].cert
        fqdn = run.output("members")[member]
        assert dns_sans(peer) == [member, f"{member}.default", f"{member}.default.svc", fqdn, "localhost"]
        # Pod IPs are unknown at issue time; that is what the demo is about.
        assert ip_sans(peer) == []
        server = secrets[f"{member}-server-tls"].cert
        assert dns_sans(server) == dns_sans(peer)
        assert ip_sans(server) == ["127.0.0.1"]


def test_key_usages(run, secrets):
    for name, secret in secrets.items():
        cert = secret.cert
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature is True
        assert usage.key_cert_sign is False
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca is False
        if name.endswith("-client-tls"):
            assert eku(cert) == {CLIENT_AUTH}
        else:
            # Peers dial with their peer certificate; the gateway dials with the server one.
            assert eku(cert) == {SERVER_AUTH, CLIENT_AUTH}
    assert len(secrets) == 7


def test_every_key_is_ecdsa_p256_and_matches_its_certificate(run, secrets, cas):
    for secret in secrets.values():
        key = serialization.load_pem_private_key(secret.key_pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        public = secret.cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.public_numbers() == key.public_key().public_numbers()
    for ca in cas:
        public = ca.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == "secp256r1"


def test_peer_certificates_chain_to_the_peer_ca_only(run, secrets, cas):
    peer_ca, client_ca = cas
    for member in members(run):
        peer = secrets[f"{member}-peer-tls"]
        assert peer.ca == peer_ca
        # What the accepting member checks: trusted, and not by the client CA.
        assert verifies_as_client(peer.cert, peer_ca)
        assert not verifies_as_client(peer.cert, client_ca)
        assert peer.cert.issuer == peer_ca.subject


def test_client_ca_certificates_are_never_accepted_on_the_peer_port(run, secrets, cas):
    peer_ca, client_ca = cas
    client = secrets[f"etcd-{run.stack}-client-tls"]
    assert client.ca == client_ca
    assert verifies_as_client(client.cert, client_ca)
    assert not verifies_as_client(client.cert, peer_ca)
    for member in members(run):
        server = secrets[f"{member}-server-tls"]
        assert server.ca == client_ca
        assert verifies_as_client(server.cert, client_ca)
        assert not verifies_as_client(server.cert, peer_ca)


def test_peer_and_server_secrets_trust_different_cas(run, secrets):
    for member in members(run):
        peer_ca = secrets[f"{member}-peer-tls"].ca
        server_ca = secrets[f"{member}-server-tls"].ca
        assert peer_ca != server_ca
        assert peer_ca.subject != server_ca.subject
        assert peer_ca.public_key().public_numbers() != server_ca.public_key().public_numbers()


def test_common_names(run, secrets, run_settings):
    settings = run_settings(run)
    stack = run.stack
    for member in members(run):
        peer_cn = secrets[f"{member}-peer-tls"].cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert [a.value for a in peer_cn] == [f"etcd-{stack}-peer"]
        assert settings.peer_common_name == f"etcd-{stack}-peer"
        server_cn = secrets[f"{member}-server-tls"].cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert [a.value for a in server_cn] == [member]
        pinned = command_of(run, member).get("--peer-cert-allowed-cn")
        # The pin is on exactly when the SAN check is skipped, and names the peer CN.
        assert pinned == (f"etcd-{stack}-peer" if stack == "skip" else None)


@pytest.mark.parametrize(
    ("stack", "value", "cn", "pin"),
    [
        ("skip", "foo", "foo", "foo"),
        ("noskip", "foo", "foo", "foo"),
        ("skip", "AUTO", "AUTO", "AUTO"),
        ("skip", "", "etcd-skip-peer", None),
        ("noskip", "auto", "etcd-noskip-peer", None),
    ],
)
def test_peer_certificates_carry_the_pinned_cn(run_stack, stack, value, cn, pin):
    # A pin the members' own certificates do not carry makes them refuse each other.
    run = run_stack(stack, {"peerCertAllowedCn": value})
    secrets = tls_secrets(run)
    for member in members(run):
        peer = secrets[f"{member}-peer-tls"].cert
        assert [a.value for a in peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [cn]
        assert command_of(run, member).get("--peer-cert-allowed-cn") == pin
        # The serving certificate keeps the member's own name.
        server = secrets[f"{member}-server-tls"].cert
        assert [a.value for a in server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [member]
    assert run.output("expectedOutcome") == ("healthy" if stack == "skip" else "peers rejected")


def test_validity(run, secrets, cas):
    now = dt.datetime.now(dt.UTC)
    for secret in secrets.values():
        cert = secret.cert
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime == YEAR
        assert cert.not_valid_before_utc <= now + dt.timedelta(minutes=1)
        assert cert.not_valid_after_utc >= now + YEAR - dt.timedelta(minutes=5)
    for ca in cas:
        lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
        assert lifetime == 5 * YEAR
        assert ca.not_valid_after_utc > max(s.cert.not_valid_after_utc for s in secrets.values())


def test_cas_are_cas(run, cas):
    for ca in cas:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical is True
        assert constraints.value.ca is True
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign is True
        assert usage.crl_sign is True
        assert ca.issuer == ca.subject
        ca.verify_directly_issued_by(ca)
    peer_ca, client_ca = cas
    assert peer_ca.subject.rfc4514_string() == f"CN=etcd-{run.stack} peer CA,O=etcd-peer-san"
    assert client_ca.subject.rfc4514_string() == f"CN=etcd-{run.stack} client CA,O=etcd-peer-san"
