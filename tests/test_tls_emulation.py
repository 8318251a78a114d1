"""The pulumi-tls emulation honours every input, so certificate tests mean something.

Inputs are given as the mocks receive them: camelCase keys, numbers as floats.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress

import pulumi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.runtime import rpc

from lab import tls_emulation as tls
from lab.program import EmulatingMocks, unwrap

PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
SELF_SIGNED = "tls:index/selfSignedCert:SelfSignedCert"
CSR = "tls:index/certRequest:CertRequest"
SIGNED = "tls:index/locallySignedCert:LocallySignedCert"


def load_key(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def extension(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def ec_key() -> str:
    return tls.private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]


@pytest.fixture(scope="module")
def ca(ec_key) -> dict:
    inputs = {
        "privateKeyPem": ec_key,
        "subject": {"commonName": "test CA"},
        "isCaCertificate": True,
        "allowedUses": ["cert_signing", "crl_signing"],
        "validityPeriodHours": 48.0,
        "setSubjectKeyId": True,
    }
    return {**inputs, **tls.self_signed_cert(inputs)}


# ---------------------------------------------------------------- private keys


@pytest.mark.parametrize(
    ("inputs", "key_type", "size", "pem_header"),
    [
        ({"algorithm": "RSA", "rsaBits": 2048.0}, rsa.RSAPrivateKey, 2048, "RSA PRIVATE KEY"),
        ({"algorithm": "RSA", "rsaBits": 3072.0}, rsa.RSAPrivateKey, 3072, "RSA PRIVATE KEY"),
        ({"algorithm": "RSA"}, rsa.RSAPrivateKey, 2048, "RSA PRIVATE KEY"),
        (
            {"algorithm": "ECDSA", "ecdsaCurve": "P224"},
            ec.EllipticCurvePrivateKey,
            "secp224r1",
            "EC PRIVATE KEY",
        ),
        (
            {"algorithm": "ECDSA", "ecdsaCurve": "P256"},
            ec.EllipticCurvePrivateKey,
            "secp256r1",
            "EC PRIVATE KEY",
        ),
        (
            {"algorithm": "ECDSA", "ecdsaCurve": "P384"},
            ec.EllipticCurvePrivateKey,
            "secp384r1",
            "EC PRIVATE KEY",
        ),
        (
            {"algorithm": "ECDSA", "ecdsaCurve": "P521"},
            ec.EllipticCurvePrivateKey,
            "secp521r1",
            "EC PRIVATE KEY",
        ),
        # The provider's default curve is P224 (why the program sets P256).
        ({"algorithm": "ECDSA"}, ec.EllipticCurvePrivateKey, "secp224r1", "EC PRIVATE KEY"),
        ({"algorithm": "ED25519"}, ed25519.Ed25519PrivateKey, None, "PRIVATE KEY"),
    ],
)
def test_private_key(inputs, key_type, size, pem_header):
    outputs = tls.private_key(inputs)
    key = load_key(outputs["privateKeyPem"])
    assert isinstance(key, key_type)
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == size
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        assert key.curve.name == size
    assert outputs["privateKeyPem"].startswith(f"-----BEGIN {pem_header}-----\n")
    assert outputs["privateKeyPemPkcs8"].startswith("-----BEGIN PRIVATE KEY-----\n")
    public = key.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert (
        load_key(outputs["privateKeyPemPkcs8"])
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == der
    )
    assert (
        serialization.load_pem_public_key(outputs["publicKeyPem"].encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == der
    )
    assert outputs["publicKeyFingerprintSha256"] == "SHA256:" + hashlib.sha256(der).hexdigest()
    assert outputs["algorithm"] == inputs["algorithm"]


@pytest.mark.parametrize("inputs", [{"algorithm": "DSA"}, {}, {"algorithm": "ECDSA", "ecdsaCurve": "P192"}])
def test_private_key_refuses_what_the_provider_refuses(inputs):
    with pytest.raises(tls.TlsInputError):
        tls.private_key(inputs)


# ---------------------------------------------------------------- certificates


SUBJECT = {
    "country": "DE",
    "province": "Berlin",
    "locality": "Berlin",
    "organization": "etcd-peer-san",
    "organizationalUnit": "tests",
    "commonName": "member-0",
    "postalCode": "10115",
    "serialNumber": "42",
    "streetAddresses": ["Street 1", "Street 2"],
}
SUBJECT_OIDS = {
    "country": NameOID.COUNTRY_NAME,
    "province": NameOID.STATE_OR_PROVINCE_NAME,
    "locality": NameOID.LOCALITY_NAME,
    "organization": NameOID.ORGANIZATION_NAME,
    "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "commonName": NameOID.COMMON_NAME,
    "postalCode": NameOID.POSTAL_CODE,
    "serialNumber": NameOID.SERIAL_NUMBER,
}
SANS = {
    "dnsNames": ["member-0", "member-0.ns.svc.cluster.local"],
    "ipAddresses": ["10.0.0.7", "fd00::7"],
    "uris": ["spiffe://cluster.local/ns/default/sa/etcd"],
}


def assert_subject(name: x509.Name, subject: dict) -> None:
    for field, oid in SUBJECT_OIDS.items():
        assert [a.value for a in name.get_attributes_for_oid(oid)] == [subject[field]]
    streets = [a.value for a in name.get_attributes_for_oid(NameOID.STREET_ADDRESS)]
    assert streets == subject["streetAddresses"]


def assert_sans(cert_or_csr) -> None:
    san = extension(cert_or_csr, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == SANS["dnsNames"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip) for ip in SANS["ipAddresses"]]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == SANS["uris"]


@pytest.mark.parametrize(
    ("uses", "key_usage", "extended"),
    [
        (
            ["digital_signature", "server_auth", "client_auth"],
            {"digital_signature"},
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        ),
        (
            ["digital_signature", "key_encipherment", "client_auth"],
            {"digital_signature", "key_encipherment"},
            [ExtendedKeyUsageOID.CLIENT_AUTH],
        ),
        (["cert_signing", "crl_signing"], {"key_cert_sign", "crl_sign"}, None),
        (
            ["code_signing", "ocsp_signing"],
            None,
            [ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.OCSP_SIGNING],
        ),
        ([], None, None),
    ],
)
def test_allowed_uses_become_key_usage_and_extended_key_usage(ec_key, uses, key_usage, extended):
    cert = load_cert(
        tls.self_signed_cert({"privateKeyPem": ec_key, "allowedUses": uses, "validityPeriodHours": 1.0})[
            "certPem"
        ]
    )
    all_flags = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    )
    if key_usage is None:
        with pytest.raises(x509.ExtensionNotFound):
            extension(cert, x509.KeyUsage)
    else:
        usage = extension(cert, x509.KeyUsage)
        assert usage.critical is True
        assert {flag for flag in all_flags if getattr(usage.value, flag)} == key_usage
    if extended is None:
        with pytest.raises(x509.ExtensionNotFound):
            extension(cert, x509.ExtendedKeyUsage)
    else:
        assert list(extension(cert, x509.ExtendedKeyUsage).value) == extended


def test_unknown_use_is_refused(ec_key):
    with pytest.raises(tls.TlsInputError, match="allowedUses"):
        tls.self_signed_cert(
            {"privateKeyPem": ec_key, "allowedUses": ["server-auth"], "validityPeriodHours": 1.0}
        )


@pytest.mark.parametrize("hours", [None, 0.0, -1.0])
def test_validity_must_be_positive(ec_key, hours):
    inputs = {"privateKeyPem": ec_key}
    if hours is not None:
        inputs["validityPeriodHours"] = hours
    with pytest.raises(tls.TlsInputError, match="validityPeriodHours"):
        tls.self_signed_cert(inputs)


@pytest.mark.parametrize("algorithm", ["RSA", "ECDSA", "ED25519"])
def test_self_signed_cert_honours_every_input(algorithm):
    key_pem = tls.private_key({"algorithm": algorithm, "ecdsaCurve": "P384"})["privateKeyPem"]
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    outputs = tls.self_signed_cert(
        {
            "privateKeyPem": key_pem,
            "subject": SUBJECT,
            **SANS,
            "isCaCertificate": True,
            "maxPathLength": 2.0,
            "allowedUses": ["cert_signing"],
            "validityPeriodHours": 36.0,
            "setSubjectKeyId": True,
            "setAuthorityKeyId": True,
        }
    )
    cert = load_cert(outputs["certPem"])
    assert_subject(cert.subject, SUBJECT)
    assert cert.issuer == cert.subject
    assert_sans(cert)
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical is True
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=2)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=36)
    assert before <= cert.not_valid_before_utc <= dt.datetime.now(dt.UTC)
    assert outputs["validityStartTime"] == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert outputs["validityEndTime"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    public = load_key(key_pem).public_key()
    assert extension(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        public
    )
    assert extension(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        x509.SubjectKeyIdentifier.from_public_key(public).digest
    )
    assert outputs["keyAlgorithm"] == algorithm
    cert.verify_directly_issued_by(cert)


def test_leaf_without_options_has_no_optional_extensions(ec_key):
    cert = load_cert(tls.self_signed_cert({"privateKeyPem": ec_key, "validityPeriodHours": 1.0})["certPem"])
    assert extension(cert, x509.BasicConstraints).value == x509.BasicConstraints(ca=False, path_length=None)
    for cls in (x509.SubjectAlternativeName, x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier):
        with pytest.raises(x509.ExtensionNotFound):
            extension(cert, cls)
    assert cert.subject == x509.Name([])


@pytest.mark.parametrize("algorithm", ["RSA", "ECDSA", "ED25519"])
def test_cert_request_carries_subject_and_sans(algorithm):
    key_pem = tls.private_key({"algorithm": algorithm})["privateKeyPem"]
    outputs = tls.cert_request({"privateKeyPem": key_pem, "subject": SUBJECT, **SANS})
    csr = x509.load_pem_x509_csr(outputs["certRequestPem"].encode())
    assert csr.is_signature_valid
    assert_subject(csr.subject, SUBJECT)
    assert_sans(csr)
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == load_key(key_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert outputs["keyAlgorithm"] == algorithm


def test_locally_signed_cert_takes_names_from_the_csr_and_uses_from_itself(ca):
    leaf_key = tls.private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    csr = tls.cert_request({"privateKeyPem": leaf_key, "subject": SUBJECT, **SANS})["certRequestPem"]
    outputs = tls.locally_signed_cert(
        {
            "certRequestPem": csr,
            "caPrivateKeyPem": ca["privateKeyPem"],
            "caCertPem": ca["certPem"],
            "allowedUses": ["digital_signature", "server_auth", "client_auth"],
            "validityPeriodHours": 24.0,
            "setSubjectKeyId": True,
        }
    )
    cert = load_cert(outputs["certPem"])
    ca_cert = load_cert(ca["certPem"])
    assert_subject(cert.subject, SUBJECT)
    assert_sans(cert)
    assert cert.issuer == ca_cert.subject
    cert.verify_directly_issued_by(ca_cert)
    assert list(extension(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert extension(cert, x509.KeyUsage).value.digital_signature is True
    assert extension(cert, x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=24)
    # AKI = the CA's SKI; SKI = the leaf's own key.
    ca_ski = extension(ca_cert, x509.SubjectKeyIdentifier).value
    assert extension(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski.digest
    assert extension(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        load_key(leaf_key).public_key()
    )
    assert outputs["caKeyAlgorithm"] == "ECDSA"


def test_locally_signed_cert_refuses_a_tampered_csr(ca):
    leaf_key = tls.private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    csr_pem = tls.cert_request({"privateKeyPem": leaf_key, "subject": {"commonName": "x"}})["certRequestPem"]
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # flip a bit of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(tls.TlsInputError, match="signature"):
        tls.locally_signed_cert(
            {
                "certRequestPem": tampered,
                "caPrivateKeyPem": ca["privateKeyPem"],
                "caCertPem": ca["certPem"],
                "validityPeriodHours": 1.0,
            }
        )


# ---------------------------------------------------------------- the mocks


def new_resource(mocks: EmulatingMocks, typ: str, name: str, inputs: dict) -> dict:
    resource_id, state = mocks.new_resource(pulumi.runtime.MockResourceArgs(typ, name, inputs, custom=True))
    assert resource_id == f"{name}-id"
    return state


def test_mocks_mark_the_providers_secret_outputs(ec_key):
    mocks = EmulatingMocks()
    key_state = new_resource(mocks, PRIVATE_KEY, "k", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    assert rpc.is_rpc_secret(key_state["privateKeyPem"])
    assert rpc.is_rpc_secret(key_state["privateKeyPemPkcs8"])
    assert not rpc.is_rpc_secret(key_state["publicKeyPem"])
    assert "PRIVATE KEY" in rpc.unwrap_rpc_secret(key_state["privateKeyPem"])

    secret_key = key_state["privateKeyPem"]
    ca_state = new_resource(
        mocks,
        SELF_SIGNED,
        "ca",
        {
            "privateKeyPem": secret_key,
            "isCaCertificate": True,
            "validityPeriodHours": 10.0,
            "setSubjectKeyId": True,
        },
    )
    assert rpc.is_rpc_secret(ca_state["privateKeyPem"])
    assert not rpc.is_rpc_secret(ca_state["certPem"])

    csr_state = new_resource(mocks, CSR, "csr", {"privateKeyPem": secret_key, "dnsNames": ["a"]})
    assert rpc.is_rpc_secret(csr_state["privateKeyPem"])
    assert not rpc.is_rpc_secret(csr_state["certRequestPem"])

    # A plain key input (the provider marks caPrivateKeyPem secret itself) comes back secret.
    signed_state = new_resource(
        mocks,
        SIGNED,
        "leaf",
        {
            "certRequestPem": csr_state["certRequestPem"],
            "caPrivateKeyPem": rpc.unwrap_rpc_secret(secret_key),
            "caCertPem": ca_state["certPem"],
            "validityPeriodHours": 5.0,
        },
    )
    assert rpc.is_rpc_secret(signed_state["caPrivateKeyPem"])
    assert not rpc.is_rpc_secret(signed_state["certPem"])
    load_cert(signed_state["certPem"]).verify_directly_issued_by(load_cert(ca_state["certPem"]))
    # Inputs are recorded as received.
    assert mocks.inputs[(SIGNED, "leaf")]["caPrivateKeyPem"] == rpc.unwrap_rpc_secret(secret_key)
    assert rpc.is_rpc_secret(mocks.inputs[(CSR, "csr")]["privateKeyPem"])


def test_mocks_mark_kubernetes_secret_data_and_echo_everything_else():
    mocks = EmulatingMocks()
    secret = new_resource(
        mocks,
        "kubernetes:core/v1:Secret",
        "s",
        {"metadata": {"name": "s"}, "stringData": {"tls.key": "k"}, "data": {"a": "Yg=="}},
    )
    assert rpc.is_rpc_secret(secret["stringData"])
    assert rpc.is_rpc_secret(secret["data"])
    assert not rpc.is_rpc_secret(secret["metadata"])
    assert unwrap(secret) == {
        "metadata": {"name": "s"},
        "stringData": {"tls.key": "k"},
        "data": {"a": "Yg=="},
    }
    pod_inputs = {"metadata": {"name": "p"}, "spec": {"containers": []}}
    assert new_resource(mocks, "kubernetes:core/v1:Pod", "p", pod_inputs) == pod_inputs
