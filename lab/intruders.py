"""python -m lab intruders: what still guards the peer port once the SAN check is skipped.

With the skip flag, etcd no longer compares a connecting peer's certificate with its
source address, so the peer port trusts exactly this: a certificate that chains to the
peer CA (`--peer-trusted-ca-file`) and, when `--peer-cert-allowed-cn` is set, carries
that common name. The scenario proves both from an extra "intruder" pod that joins the
lab network (a pod IP, the hosts file, the Service DNAT) but runs no etcd. From there it
connects to every member's peer port through the member's Service address, verifies the
member as its Service name against the peer CA, presents a client certificate and asks
for `GET /members` (etcd's peer handler; a peer that passes the TLS checks gets 200 and
the member list):

  control     peer CA, the members' CN and SANs   -> accepted (the setup is not vacuous:
                                                     the intruder's pod IP is in no SAN)
  foreign-ca  a CA the lab makes, with the peer   -> refused: unknown authority
              CA's subject; members' CN and SANs
  client-ca   the program's client CA             -> refused: unknown authority
  other-cn    peer CA, CN "intruder"              -> refused while the CN is pinned
                                                     (client certificate authentication
                                                     failed), accepted when it is not

Each refusal is matched with the receiving member's own log line, and afterwards the
cluster must still be healthy with exactly its real members.

The program also declares a NetworkPolicy that admits only the members to the peer port.
Labels are not an identity (anyone who may create a pod in the namespace can copy them),
so the intruder carries the labels the policy admits, and TLS is what it must get past.
A second extra pod without those labels shows the policy itself:

  no-labels   the control certificate, from an    -> blocked (TCP reset before TLS)
              unlabelled pod                         when a policy guards the peer port

The pod-namespace clients live in `lab.pod_clients` (shared with `lab.faults`).
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from components.cluster_plan import PEER_PORT
from components.settings import Settings

from .etcd_binary import EtcdBinary
from .evidence import LogTail
from .network_policy import PortAccess, port_access
from .pod_clients import HttpsResult, ServiceHttps, extra_pod, https_request, pod_threads, tls_context
from .pods import Container, flag_value, has_skip_flag
from .program import LabInputError, ProgramRun
from .report import run_header
from .run import Lab, evaluate, given_config

INTRUDER_POD = "intruder"
OUTSIDER_POD = "outsider"
PEER_MEMBERS_PATH = "/members"
OTHER_CN = "intruder"
# How long a refusal may take to reach the receiving member's log.
LOG_WAIT_SECONDS = 3.0
POLL_SECONDS = 0.02
ATTEMPT_TIMEOUT = 3.0
# The error texts etcd logs inside its "rejected connection" line (3.4 and 3.5 alike).
UNKNOWN_AUTHORITY = "unknown authority"
CN_REFUSED = "client certificate authentication failed"
REJECTED = "rejected connection"

# accepted: HTTP answer; refused: TCP connected, TLS failed; blocked: no TCP connection.
Result = Literal["accepted", "refused", "blocked"]


class IntruderSetupError(RuntimeError):
    """The stack cannot host this scenario (e.g. the SAN check is not skipped)."""


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Credentials:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path


def _public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def ca_key_for(program: ProgramRun, ca_cert: x509.Certificate) -> ec.EllipticCurvePrivateKey:
    """The program's private key behind `ca_cert` (matched by public key, not by name)."""
    wanted = _public_der(ca_cert.public_key())
    for resource in program.of_type("tls:index/privateKey:PrivateKey"):
        key = serialization.load_pem_private_key(
            resource.plain_outputs["privateKeyPem"].encode(), password=None
        )
        if _public_der(key.public_key()) == wanted:
            assert isinstance(key, ec.EllipticCurvePrivateKey), type(key)
            return key
    raise IntruderSetupError(f"the program declared no key for the CA {ca_cert.subject.rfc4514_string()}")


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(
        now + dt.timedelta(hours=1)
    )


def foreign_ca(like: x509.Certificate) -> Credentials:
    """A fresh CA with the same subject as `like`: only the signature tells them apart."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(like.subject)
        .issuer_name(like.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return Credentials(_validity(builder).sign(key, hashes.SHA256()), key)


def issue_like(template: x509.Certificate, ca: Credentials, common_name: str | None = None) -> Credentials:
    """A new key and certificate with the template's subject (CN replaced if given),
    SANs and usages, signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = template.subject
    if common_name is not None:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name) if a.oid == NameOID.COMMON_NAME else a
                for a in template.subject
            ]
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
    )
    for extension in template.extensions:
        if extension.oid in (ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER):
            continue
        builder = builder.add_extension(extension.value, extension.critical)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    return Credentials(_validity(builder).sign(ca.key, hashes.SHA256()), key)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class IntruderCase:
    name: str
    summary: str
    credentials: Credentials
    expected: Result
    log_marker: str | None  # the error the receiving member must log when it refuses
    source: str = INTRUDER_POD  # the extra pod the attempt comes from


def intruder_cases(program: ProgramRun, member: Container, peer_access: PortAccess) -> list[IntruderCase]:
    """The cases against the PKI a member really uses (read from its command line); what
    `other-cn` expects depends on whether `--peer-cert-allowed-cn` is set, and what
    `no-labels` expects on whether a NetworkPolicy guards the peer port."""
    peer_ca_path = flag_value(member.argv, "peer-trusted-ca-file")
    peer_cert_path = flag_value(member.argv, "peer-cert-file")
    client_ca_path = flag_value(member.argv, "trusted-ca-file")
    if not (peer_ca_path and peer_cert_path and client_ca_path):
        raise IntruderSetupError(f"{member.pod} runs without peer and client TLS: nothing to attack")
    peer_ca_cert = x509.load_pem_x509_certificate(Path(peer_ca_path).read_bytes())
    client_ca_cert = x509.load_pem_x509_certificate(Path(client_ca_path).read_bytes())
    template = x509.load_pem_x509_certificate(Path(peer_cert_path).read_bytes())
    peer_ca = Credentials(peer_ca_cert, ca_key_for(program, peer_ca_cert))
    client_ca = Credentials(client_ca_cert, ca_key_for(program, client_ca_cert))
    pinned = flag_value(member.argv, "peer-cert-allowed-cn")
    member_cn = common_name(template)
    # peerCertAllowedCn may be any CN, even this one: "another CN" differs from both.
    candidates = (OTHER_CN, f"{OTHER_CN}-2", f"{OTHER_CN}-3")
    other_cn = next(cn for cn in candidates if cn not in (pinned, member_cn))
    control = issue_like(template, peer_ca)
    return [
        IntruderCase(
            "control",
            f"peer CA, CN {member_cn!r}, a member's SANs",
            control,
            "accepted",
            None,
        ),
        IntruderCase(
            "foreign-ca",
            "a CA made by the lab (with the peer CA's subject), the members' CN and SANs",
            issue_like(template, foreign_ca(peer_ca_cert)),
            "refused",
            UNKNOWN_AUTHORITY,
        ),
        IntruderCase(
            "client-ca",
            "the program's client CA, the members' CN and SANs",
            issue_like(template, client_ca),
            "refused",
            UNKNOWN_AUTHORITY,
        ),
        IntruderCase(
            "other-cn",
            f"peer CA, CN {other_cn!r}, a member's SANs",
            issue_like(template, peer_ca, common_name=other_cn),
            "refused" if pinned else "accepted",
            CN_REFUSED if pinned else None,
        ),
        IntruderCase(
            "no-labels",
            "the control certificate, from a pod without the labels the NetworkPolicy admits",
            control,
            "blocked" if peer_access.guarded else "accepted",
            None,
            source=OUTSIDER_POD,
        ),
    ]


# ---------------------------------------------------------------- results


@dataclass
class Attempt:
    member: str
    service_ip: str
    result: Result
    status: int | None
    error: str
    members_listed: list[str] | None  # names in the 200 answer of GET /members
    log_line: str | None  # the receiving member's "rejected connection" line for us

    def as_dict(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "serviceIp": self.service_ip,
            "result": self.result,
            "status": self.status,
            "clientError": self.error or None,
            "membersListed": self.members_listed,
            "logLine": self.log_line,
        }


@dataclass
class CaseResult:
    case: IntruderCase
    attempts: list[Attempt]

    @property
    def observed(self) -> str:
        results = {a.result for a in self.attempts}
        return results.pop() if len(results) == 1 else "mixed"

    @property
    def evidence_ok(self) -> bool:
        """A refusal counts only with the receiving member's own log line for it; a
        blocked connection must not have reached etcd at all."""
        marker = self.case.log_marker
        if self.case.expected == "blocked":
            return all(a.log_line is None for a in self.attempts)  # etcd never saw it
        if self.case.expected == "accepted" or marker is None:
            return True
        return all(a.log_line is not None and marker in a.log_line for a in self.attempts)

    @property
    def ok(self) -> bool:
        return self.observed == self.case.expected and self.evidence_ok

    def as_dict(self) -> dict[str, Any]:
        cert = self.case.credentials.cert
        return {
            "case": self.case.name,
            "summary": self.case.summary,
            # The PEM lets a reader check the signer, not just the names it claims.
            "certificate": {
                "subjectCn": common_name(cert),
                "issuer": cert.issuer.rfc4514_string(),
                "dnsNames": dns_names(cert),
                "pem": pem(cert),
            },
            "source": self.case.source,
            "expected": self.case.expected,
            "observed": self.observed,
            "logMarker": self.case.log_marker,
            "ok": self.ok,
            "attempts": [a.as_dict() for a in self.attempts],
        }


@dataclass
class ClusterCheck:
    healthy: dict[str, bool]
    leaders: list[str]
    running: dict[str, bool]
    members_declared: list[str]
    members_before: list[str]
    members_after: dict[str, list[str] | None]  # each member's own answer

    @property
    def ok(self) -> bool:
        declared = sorted(self.members_declared)
        return (
            all(self.healthy.values())
            and len(self.leaders) == 1
            and all(self.running.values())
            and sorted(self.members_before) == declared
            and all(sorted(v or []) == declared for v in self.members_after.values())
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "leaders": self.leaders,
            "running": self.running,
            "membersDeclared": self.members_declared,
            "membersBefore": self.members_before,
            "membersAfter": self.members_after,
            "ok": self.ok,
        }


@dataclass
class IntrudersReport:
    stack: str
    etcd_path: str
    etcd_version: str
    run_id: str
    intruder_ip: str
    intruder_labels: dict[str, str]
    outsider_ip: str
    peer_port_guarded: bool  # a NetworkPolicy limits the peer port to labelled pods
    skip: bool
    pinned_cn: str | None
    # What the attack certificates are measured against: the CA certificates the program
    # exports (stack outputs) and each member's peer certificate as mounted in its pod.
    peer_ca_pem: str
    client_ca_pem: str
    member_peer_certs: dict[str, str]
    cases: list[CaseResult]
    cluster: ClusterCheck | None
    timings: dict[str, float] = field(default_factory=dict)
    problem: str | None = None  # why the scenario could not be carried out

    @property
    def ok(self) -> bool:
        return (
            self.problem is None
            and self.cluster is not None
            and self.cluster.ok
            and bool(self.cases)
            and all(c.ok for c in self.cases)
        )

    def case(self, name: str) -> CaseResult:
        return next(c for c in self.cases if c.case.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "etcd": {"path": self.etcd_path, "version": self.etcd_version},
            "runId": self.run_id,
            "intruderIp": self.intruder_ip,
            "intruderLabels": self.intruder_labels,
            "outsiderIp": self.outsider_ip,
            "peerPortGuardedByNetworkPolicy": self.peer_port_guarded,
            "skipClientSanVerification": self.skip,
            "peerCertAllowedCn": self.pinned_cn,
            "stackOutputs": {"peerCaCert": self.peer_ca_pem, "clientCaCert": self.client_ca_pem},
            "memberPeerCertificates": self.member_peer_certs,
            "cases": [c.as_dict() for c in self.cases],
            "cluster": self.cluster.as_dict() if self.cluster else None,
            "problem": self.problem,
            "ok": self.ok,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


# ---------------------------------------------------------------- acting


def _peer_cert_pem(member: Container) -> str:
    path = flag_value(member.argv, "peer-cert-file")
    if path is None:
        raise IntruderSetupError(f"{member.pod} runs without a peer certificate: nothing to attack")
    return Path(path).read_text()


def _member_names(body: str) -> list[str] | None:
    try:
        return [str(m["name"]) for m in json.loads(body)]
    except (ValueError, TypeError, KeyError):
        return None


def _peer_get_members(address: str, server_name: str, context: ssl.SSLContext) -> HttpsResult:
    connection = ServiceHttps(address, PEER_PORT, server_name, context, ATTEMPT_TIMEOUT)
    try:
        return https_request(connection, "GET", PEER_MEMBERS_PATH)
    finally:
        connection.close()


def wait_for_line(tail: LogTail, matches: Callable[[str], bool], seconds: float) -> str | None:
    """The first new line of `tail` that `matches`, polled until the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        for line in tail.new_lines():
            if matches(line):
                return line.rstrip()
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def classify(answer: HttpsResult) -> Result:
    if answer.status is not None:
        return "accepted"  # any HTTP answer: the TLS handshake, client certificate included, passed
    return "refused" if answer.connected else "blocked"


class PeerProbe:
    """Acts as a peer from the extra pods: one TLS connection per (certificate, member)."""

    def __init__(self, lab: Lab, sources: dict[str, tuple[ThreadPoolExecutor, str]], work_dir: Path) -> None:
        self.lab = lab
        self.sources = sources  # pod -> (threads in its namespace, its IP)
        self.work_dir = work_dir
        fqdns = lab.program.output("members")
        self.targets = [
            (c, str(lab.service_ip(c.pod)), str(fqdns[c.pod]))
            for c in lab.containers
            if lab.service_ip(c.pod)
        ]
        ca_path = flag_value(lab.containers[0].argv, "peer-trusted-ca-file")
        assert ca_path is not None
        self.peer_ca_pem = Path(ca_path).read_text()

    def context(self, name: str, credentials: Credentials) -> ssl.SSLContext:
        cert_path, key_path = credentials.write(self.work_dir, name)
        return tls_context(self.peer_ca_pem, cert_path, key_path)

    def attempt(self, case: IntruderCase) -> CaseResult:
        context = self.context(case.name, case.credentials)
        pool, source_ip = self.sources[case.source]
        attempts = []
        for container, service_ip, fqdn in self.targets:
            tail = LogTail(container.log_path)
            tail.new_lines()  # only what this attempt causes counts
            answer = pool.submit(_peer_get_members, service_ip, fqdn, context).result()
            result = classify(answer)

            def ours(text: str) -> bool:
                return REJECTED in text and f"{source_ip}:" in text

            # A refusal is logged at once; a blocked connection never reaches etcd.
            wait = LOG_WAIT_SECONDS if result == "refused" else 0.0
            attempts.append(
                Attempt(
                    member=container.pod,
                    service_ip=service_ip,
                    result=result,
                    status=answer.status,
                    error=answer.error or ("" if answer.status == 200 else answer.body.strip()),
                    members_listed=_member_names(answer.body) if answer.status == 200 else None,
                    log_line=wait_for_line(tail, ours, wait),
                )
            )
        return CaseResult(case, attempts)

    def members_seen(self, context: ssl.SSLContext) -> dict[str, list[str] | None]:
        """Each member's own member list (GET /members with an accepted certificate)."""
        pool, _ = self.sources[INTRUDER_POD]
        seen = {}
        for container, service_ip, fqdn in self.targets:
            answer = pool.submit(_peer_get_members, service_ip, fqdn, context).result()
            seen[container.pod] = _member_names(answer.body) if answer.status == 200 else None
        return seen


def check_request(stack: str, settings: Settings) -> None:
    """Raise LabInputError when the stack's configuration cannot serve this scenario (the
    command line asks before anything is created)."""
    if not settings.skip_client_san_verification:
        raise LabInputError(
            f"intruders needs skipClientSanVerification = true (stack {stack!r} runs without the "
            "skip flag: its members reject each other, and any intruder, by SAN, so there is no "
            "healthy cluster to attack)"
        )


def run_intruders(
    stack: str,
    binary: EtcdBinary,
    *,
    timeout: float = 30.0,
    overrides: dict[str, str] | None = None,
) -> IntrudersReport:
    """Build the stack's cluster plus an intruder pod, attack, and check the cluster after."""
    total_started = time.monotonic()
    check_request(stack, given_config(stack, overrides or {})[1])
    program = evaluate(stack, binary, overrides or {})
    program_seconds = time.monotonic() - total_started
    member_pod = program.manifests("Pod")[0]
    namespace = member_pod["metadata"].get("namespace", "default")
    # The intruder wears the labels the NetworkPolicy admits to the peer port: labels are
    # no identity, so TLS is what it has to get past. The outsider wears none.
    access = port_access(program.manifests(), member_pod, PEER_PORT)
    if access.guarded and not access.labels:
        raise LabInputError(
            f"intruders: stack {stack!r} declares a NetworkPolicy that admits no pod to the peer "
            "port, so there is nothing to get past"
        )
    labels = access.labels[0] if access.labels else {}
    extra = [extra_pod(INTRUDER_POD, namespace, labels), extra_pod(OUTSIDER_POD, namespace)]
    with Lab(program, binary, extra_pods=extra) as lab:
        assert lab.plan is not None
        lab.timings["program"] = program_seconds
        intruder, outsider = lab.plan.pod(INTRUDER_POD), lab.plan.pod(OUTSIDER_POD)
        first = lab.containers[0]
        report = IntrudersReport(
            stack=stack,
            etcd_path=str(binary.etcd),
            etcd_version=str(binary.version),
            run_id=lab.run_id,
            intruder_ip=intruder.ip,
            intruder_labels=labels,
            outsider_ip=outsider.ip,
            peer_port_guarded=access.guarded,
            skip=has_skip_flag(first.argv),
            pinned_cn=flag_value(first.argv, "peer-cert-allowed-cn"),
            peer_ca_pem=str(program.output("peerCaCert")),
            client_ca_pem=str(program.output("clientCaCert")),
            member_peer_certs={c.pod: _peer_cert_pem(c) for c in lab.containers},
            cases=[],
            cluster=None,
            timings=lab.timings,
        )
        cases = intruder_cases(program, first, access)
        lab.start()
        verdict, _, _ = lab.observe(timeout)
        if verdict != "healthy":
            report.problem = f"the cluster did not become healthy within {timeout:g} s ({verdict})"
            return report
        started = time.monotonic()
        with pod_threads(intruder.netns) as pool, pod_threads(outsider.netns) as outside:
            sources = {INTRUDER_POD: (pool, intruder.ip), OUTSIDER_POD: (outside, outsider.ip)}
            probe = PeerProbe(lab, sources, lab.run_dir / "intruder")
            control = probe.context("control-list", cases[0].credentials)
            before = probe.members_seen(control)
            report.cases = [probe.attempt(case) for case in cases]
            after = probe.members_seen(control)
        lab.timings["attempts"] = time.monotonic() - started
        state = lab.wait_settled(5.0)
        report.cluster = ClusterCheck(
            healthy={pod: h for pod, (h, _) in state.items()},
            leaders=[pod for pod, (_, leader) in state.items() if leader],
            running={pod: p.poll() is None for pod, p in lab.processes.items()},
            members_declared=[c.pod for c in lab.containers],
            members_before=before.get(first.pod) or [],
            members_after=after,
        )
    lab.timings["total"] = time.monotonic() - total_started
    return report


# ---------------------------------------------------------------- human report


def render(report: IntrudersReport) -> str:
    pin = repr(report.pinned_cn) if report.pinned_cn else "off"
    lines = [
        run_header(report.stack, report.etcd_version, report.etcd_path, report.run_id),
        f"skip flag: {'on' if report.skip else 'off'}; peer CN pin (--peer-cert-allowed-cn): {pin}; "
        f"NetworkPolicy on the peer port: {'yes' if report.peer_port_guarded else 'no'}",
        f"intruder pod {report.intruder_ip} (labels "
        + (", ".join(f"{k}={v}" for k, v in report.intruder_labels.items()) or "none")
        + f"); outsider pod {report.outsider_ip} (no labels)",
        "",
    ]
    if report.problem:
        lines += [f"cannot run the scenario: {report.problem}", ""]
    for result in report.cases:
        mark = "as expected" if result.ok else "NOT AS EXPECTED"
        lines.append(
            f"{result.case.name} (from the {result.case.source}): {result.case.summary}\n"
            f"  expected {result.case.expected}, observed {result.observed}: {mark}"
        )
        for a in result.attempts:
            detail = f"HTTP {a.status}" if a.status is not None else a.error
            if a.members_listed is not None:
                detail += f", members {', '.join(a.members_listed)}"
            lines.append(f"  {a.member} via {a.service_ip}:{PEER_PORT}: {a.result} ({detail})")
            if a.log_line:
                lines.append(f"    log: {a.log_line}")
        lines.append("")
    if report.cluster:
        c = report.cluster
        lines.append(
            f"cluster afterwards: {'healthy' if all(c.healthy.values()) else 'UNHEALTHY'}, "
            f"leader {', '.join(c.leaders) or 'none'}, members "
            f"{', '.join(sorted(c.members_before))} -> "
            + "; ".join(f"{pod} sees {len(names or [])}" for pod, names in c.members_after.items())
            + (": ok" if c.ok else ": NOT OK")
        )
    t = report.timings
    lines.append(
        f"result: {'ok' if report.ok else 'FAILED'}; total {t.get('total', 0):.2f} s "
        f"(attempts {t.get('attempts', 0):.2f} s, program {t.get('program', 0):.2f} s)"
    )
    return "\n".join(lines)
