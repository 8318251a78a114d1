"""What the pulumi-tls provider would return, computed with `cryptography`.

Used by the Pulumi mocks (tests and lab alike) so that the program's certificates are
real: keys, CSRs and certificates that honour every input the program gives
(algorithm, curve or bits, subject, DNS/IP/URI SANs, CA flag, allowed uses as key
usage and extended key usage, validity, key identifiers).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKeyTypes = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P224": ec.SECP224R1,
    "P256": ec.SECP256R1,
    "P384": ec.SECP384R1,
    "P521": ec.SECP521R1,
}
# The provider's defaults when an input is absent.
DEFAULT_ECDSA_CURVE = "P224"
DEFAULT_RSA_BITS = 2048

# pulumi-tls use name -> cryptography's KeyUsage argument.
KEY_USAGES = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
    "encipher_only": "encipher_only",
    "decipher_only": "decipher_only",
}
EXTENDED_KEY_USAGES: dict[str, x509.ObjectIdentifier] = {
    "any_extended": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "ipsec_end_system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec_tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec_user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
}
SUBJECT_FIELDS: dict[str, x509.ObjectIdentifier] = {
    "country": NameOID.COUNTRY_NAME,
    "province": NameOID.STATE_OR_PROVINCE_NAME,
    "locality": NameOID.LOCALITY_NAME,
    "organization": NameOID.ORGANIZATION_NAME,
    "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "commonName": NameOID.COMMON_NAME,
    "postalCode": NameOID.POSTAL_CODE,
    "serialNumber": NameOID.SERIAL_NUMBER,
}


class TlsInputError(ValueError):
    """An input the real provider would refuse."""


def _pem(data: bytes) -> str:
    return data.decode()


def private_key(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """tls:index/privateKey:PrivateKey -> its outputs (unwrapped)."""
    algorithm = inputs.get("algorithm")
    key: PrivateKeyTypes
    if algorithm == "RSA":
        key = rsa.generate_private_key(65537, int(inputs.get("rsaBits") or DEFAULT_RSA_BITS))
        legacy = serialization.PrivateFormat.TraditionalOpenSSL
    elif algorithm == "ECDSA":
        curve = str(inputs.get("ecdsaCurve") or DEFAULT_ECDSA_CURVE)
        if curve not in CURVES:
            raise TlsInputError(f"ecdsaCurve {curve!r}: allowed {sorted(CURVES)}")
        key = ec.generate_private_key(CURVES[curve]())
        legacy = serialization.PrivateFormat.TraditionalOpenSSL
    elif algorithm == "ED25519":
        key = ed25519.Ed25519PrivateKey.generate()
        legacy = serialization.PrivateFormat.PKCS8
    else:
        raise TlsInputError(f"algorithm {algorithm!r}: allowed RSA, ECDSA, ED25519")
    none = serialization.NoEncryption()
    enc = serialization.Encoding.PEM
    public = key.public_key()
    public_der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        **inputs,
        "privateKeyPem": _pem(key.private_bytes(enc, legacy, none)),
        "privateKeyPemPkcs8": _pem(key.private_bytes(enc, serialization.PrivateFormat.PKCS8, none)),
        "publicKeyPem": _pem(public.public_bytes(enc, serialization.PublicFormat.SubjectPublicKeyInfo)),
        "publicKeyFingerprintSha256": "SHA256:" + hashlib.sha256(public_der).hexdigest(),
    }


def load_private_key(pem: str) -> PrivateKeyTypes:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise TlsInputError(f"unsupported private key type {type(key).__name__}")
    return key


def key_algorithm(key: PrivateKeyTypes) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ECDSA"
    return "ED25519"


def _subject(subject: Mapping[str, Any] | None) -> x509.Name:
    attributes: list[x509.NameAttribute] = []
    for field, oid in SUBJECT_FIELDS.items():
        value = (subject or {}).get(field)
        if value:
            attributes.append(x509.NameAttribute(oid, str(value)))
    for street in (subject or {}).get("streetAddresses") or []:
        attributes.append(x509.NameAttribute(NameOID.STREET_ADDRESS, str(street)))
    return x509.Name(attributes)


def _sans(inputs: Mapping[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(str(n)) for n in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(str(ip))) for ip in inputs.get("ipAddresses") or []]
    names += [x509.UniformResourceIdentifier(str(uri)) for uri in inputs.get("uris") or []]
    return names


def _signature_hash(key: PrivateKeyTypes) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _usage_extensions(
    builder: x509.CertificateBuilder, uses: list[str], is_ca: bool, max_path_length: int | None
) -> x509.CertificateBuilder:
    unknown = [u for u in uses if u not in KEY_USAGES and u not in EXTENDED_KEY_USAGES]
    if unknown:
        raise TlsInputError(f"allowedUses {unknown}: allowed {[*KEY_USAGES, *EXTENDED_KEY_USAGES]}")
    flags = {argument: name in uses for name, argument in KEY_USAGES.items()}
    if any(flags.values()):
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    extended = [EXTENDED_KEY_USAGES[u] for u in uses if u in EXTENDED_KEY_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    path_length = max_path_length if is_ca and max_path_length not in (None, -1) else None
    return builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)


def _validity(inputs: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    hours = inputs.get("validityPeriodHours")
    if hours is None or float(hours) <= 0:
        raise TlsInputError(f"validityPeriodHours {hours!r}: must be a positive number of hours")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return start, start + dt.timedelta(hours=float(hours))


def _certificate(
    inputs: Mapping[str, Any],
    *,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    public_key: Any,
    issuer: x509.Name,
    signing_key: PrivateKeyTypes,
    issuer_cert: x509.Certificate | None,
) -> dict[str, Any]:
    start, end = _validity(inputs)
    is_ca = bool(inputs.get("isCaCertificate"))
    max_path = inputs.get("maxPathLength")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    builder = _usage_extensions(
        builder, list(inputs.get("allowedUses") or []), is_ca, None if max_path is None else int(max_path)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if inputs.get("setSubjectKeyId"):
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if issuer_cert is not None:
        try:
            ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
        except x509.ExtensionNotFound:
            pass
    elif inputs.get("setAuthorityKeyId"):
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
    cert = builder.sign(signing_key, _signature_hash(signing_key))
    return {
        "certPem": _pem(cert.public_bytes(serialization.Encoding.PEM)),
        "validityStartTime": start.isoformat().replace("+00:00", "Z"),
        "validityEndTime": end.isoformat().replace("+00:00", "Z"),
        "readyForRenewal": False,
    }


def self_signed_cert(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """tls:index/selfSignedCert:SelfSignedCert -> its outputs (unwrapped)."""
    key = load_private_key(str(inputs["privateKeyPem"]))
    subject = _subject(inputs.get("subject"))
    outputs = _certificate(
        inputs,
        subject=subject,
        sans=_sans(inputs),
        public_key=key.public_key(),
        issuer=subject,
        signing_key=key,
        issuer_cert=None,
    )
    return {**inputs, **outputs, "keyAlgorithm": key_algorithm(key)}


def cert_request(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """tls:index/certRequest:CertRequest -> its outputs (unwrapped)."""
    key = load_private_key(str(inputs["privateKeyPem"]))
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(inputs.get("subject")))
    sans = _sans(inputs)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(key, _signature_hash(key))
    return {
        **inputs,
        "certRequestPem": _pem(csr.public_bytes(serialization.Encoding.PEM)),
        "keyAlgorithm": key_algorithm(key),
    }


def locally_signed_cert(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """tls:index/locallySignedCert:LocallySignedCert -> its outputs (unwrapped).

    Like the provider, subject and SANs come from the CSR; uses and validity from the
    resource's own inputs.
    """
    csr = x509.load_pem_x509_csr(str(inputs["certRequestPem"]).encode())
    if not csr.is_signature_valid:
        raise TlsInputError("certRequestPem: the CSR's signature is invalid")
    ca_key = load_private_key(str(inputs["caPrivateKeyPem"]))
    ca_cert = x509.load_pem_x509_certificate(str(inputs["caCertPem"]).encode())
    try:
        sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    outputs = _certificate(
        inputs,
        subject=csr.subject,
        sans=sans,
        public_key=csr.public_key(),
        issuer=ca_cert.subject,
        signing_key=ca_key,
        issuer_cert=ca_cert,
    )
    return {**inputs, **outputs, "caKeyAlgorithm": key_algorithm(ca_key)}


# Resource type -> (emulation, outputs the real provider marks secret).
TLS_RESOURCES = {
    "tls:index/privateKey:PrivateKey": (
        private_key,
        ("privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh"),
    ),
    "tls:index/selfSignedCert:SelfSignedCert": (self_signed_cert, ("privateKeyPem",)),
    "tls:index/certRequest:CertRequest": (cert_request, ("privateKeyPem",)),
    "tls:index/locallySignedCert:LocallySignedCert": (locally_signed_cert, ("caPrivateKeyPem",)),
}
