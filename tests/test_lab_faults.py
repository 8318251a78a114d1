"""Member crashes under writes, and a clean stop: real etcd (3.5.1, and 3.4.23 when
available) with the SAN check skipped, writes through the Service addresses. Also the
writer's notion of an acknowledged write, against a fake server (no root needed)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab.etcd_binary import EtcdBinary
from lab.faults import PUT_PATH, Endpoint, FaultsReport, Writer, run_faults
from lab.run import evaluate
from tests.lab_support import lab_namespaces

lab = pytest.mark.lab

MEMBERS = ["etcd-skip-0", "etcd-skip-1", "etcd-skip-2"]
KEYS = 300
# etcd's own line when it starts a clean shutdown on SIGTERM (measured).
SHUTDOWN_LINE = {
    "3.5.1": '"msg":"received signal; shutting down","signal":"terminated"}',
    "3.4.23": " N | pkg/osutil: received terminated signal, shutting down...",
}


@pytest.fixture(scope="module")
def report(etcd_binary: EtcdBinary) -> FaultsReport:
    return run_faults("skip", etcd_binary, target="both", keys=KEYS)


@lab
@pytest.mark.parametrize("target", ["follower", "leader"])
def test_no_acknowledged_write_is_lost_when_a_member_is_killed(report, target):
    phase = report.phase(target)
    assert phase.victim in MEMBERS
    assert phase.victim_was_leader == (target == "leader")
    assert phase.killed_exit == -9  # SIGKILL, no chance to flush anything
    assert (phase.attempted, phase.acknowledged, phase.failed) == (KEYS, KEYS, [])
    assert phase.lost == []
    # Every member, the restarted one included, has every acknowledged key.
    assert {c.member: (c.keys, c.missing) for c in phase.copies} == dict.fromkeys(MEMBERS, (KEYS, 0))
    # The writer started on the victim's Service: the kill broke its connection.
    assert phase.error_samples and phase.error_samples[0].startswith(f"{phase.victim}: ")
    assert phase.ok, phase.as_dict()


@lab
@pytest.mark.parametrize("target", ["follower", "leader"])
def test_each_copy_is_read_from_the_member_it_is_reported_for(report, target):
    phase = report.phase(target)
    # The cluster's member list: one ID per member, by name.
    assert sorted(phase.member_ids) == MEMBERS
    assert len(set(phase.member_ids.values())) == len(MEMBERS)
    # header.member_id of each serializable read: the member itself answered.
    answered = {c.member: c.member_id for c in phase.copies}
    assert answered == phase.member_ids, phase.as_dict()


@lab
@pytest.mark.parametrize("target", ["follower", "leader"])
def test_acknowledged_writes_went_to_service_addresses_only(report, target):
    phase = report.phase(target)
    service_ips = set(report.service_ips.values())
    pod_ips = set(report.pod_ips.values())
    # The network plan: members' Services are cluster IPs in the Service CIDR, apart
    # from the pod IPs.
    assert service_ips and not service_ips & pod_ips
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/12") for ip in service_ips)
    assert sum(phase.acks_by_address.values()) == KEYS
    assert set(phase.acks_by_address) <= service_ips, phase.acks_by_address
    assert not set(phase.acks_by_address) & pod_ips
    # The writer moved on from the killed member's Service to another one.
    assert len(phase.acks_by_address) >= 2, phase.acks_by_address
    assert report.writes_went_to_services


@lab
@pytest.mark.parametrize("target", ["follower", "leader"])
def test_unavailability_and_catch_up_are_measured(report, target):
    phase = report.phase(target)
    for value in (phase.unavailable_seconds, phase.longest_gap_seconds, phase.catch_up_seconds):
        assert isinstance(value, float) and value > 0, phase.as_dict()
    assert phase.unavailable_seconds <= phase.longest_gap_seconds
    assert phase.catch_up_seconds < 20


@lab
def test_losing_the_leader_costs_an_election(report):
    follower, leader = report.phase("follower"), report.phase("leader")
    # Killing a follower changes no leadership; killing the leader needs an election,
    # which a survivor starts only after its election timeout (1 s by default).
    assert follower.leader_after_kill not in (None, follower.victim)
    assert leader.leader_after_kill not in (None, leader.victim)
    assert leader.leader_after_kill_seconds > 0.5, leader.as_dict()
    # No write commits without a leader: the window covers the election (the metric is
    # polled, so allow for one poll's lag).
    assert leader.unavailable_seconds + 0.25 >= leader.leader_after_kill_seconds, leader.as_dict()
    assert leader.unavailable_seconds > follower.unavailable_seconds


@lab
def test_sigterm_stops_every_member_cleanly_within_its_pods_grace_period(report, etcd_binary):
    stop = report.clean_stop
    assert stop is not None
    # The grace period each Pod declares, read from the program itself.
    declared = {
        pod["metadata"]["name"]: float(pod["spec"]["terminationGracePeriodSeconds"])
        for pod in evaluate("skip", etcd_binary, {}).manifests("Pod")
    }
    assert stop.grace_seconds == declared
    assert stop.killed == []
    # Each member ended from the SIGTERM itself: etcd shuts down cleanly, then re-raises
    # the signal (not SIGKILL's -9, not exit 0 from something else).
    assert stop.exits == dict.fromkeys(MEMBERS, -signal.SIGTERM)
    # ...and says so in its own log, after this SIGTERM.
    for member in MEMBERS:
        line = stop.shutdown_lines[member] or ""
        assert SHUTDOWN_LINE[report.etcd_version] in line, (member, line)
    for member, seconds in stop.exit_seconds.items():
        assert seconds is not None and 0 < seconds <= declared[member], stop.as_dict()
    assert stop.ok
    assert report.ok


@lab
def test_nothing_is_left_behind(report):
    assert not [n for n in lab_namespaces() if n.startswith(f"esl-{report.run_id}-")]
    assert not list(Path("/etc/netns").glob(f"esl-{report.run_id}-*"))
    assert not (Path("/tmp/etcd-san-lab") / report.run_id).exists()


# ---------------------------------------------------------------- acknowledgements

FAKE_NAME = "etcd-fake.test"
# etcd's JSON gateway answer to a put (3.4 and 3.5): the response header only.
ETCD_PUT_ANSWER = b'{"header":{"cluster_id":"1","member_id":"2","revision":"7","raft_term":"3"}}'


@dataclass
class FakeGateway:
    """A loopback HTTPS server that answers each request as `answers` says, in order
    (the last one repeats): (status, body), or None to close the connection unanswered."""

    answers: list[tuple[int, bytes] | None]
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self, method: str, path: str, body: dict) -> tuple[int, bytes] | None:
        with self.lock:
            self.requests.append((method, path, body))
            index = min(len(self.requests), len(self.answers)) - 1
            return self.answers[index]


def _tls_pair() -> tuple[bytes, bytes, bytes]:
    """A CA, and a server certificate for FAKE_NAME signed by it: (ca, cert, key) PEM."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FAKE_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(FAKE_NAME)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    ca, cert, key = _tls_pair()
    directory = tmp_path_factory.mktemp("fake-gateway")
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)
    return ca.decode(), directory / "tls.crt", directory / "tls.key"


@pytest.fixture
def serve(tls_files: tuple[str, Path, Path]) -> Iterator:
    """`serve(answers)` starts a FakeGateway on 127.0.0.1 (this process only)."""
    _, cert, key = tls_files
    servers: list[ThreadingHTTPServer] = []

    def start(answers: list[tuple[int, bytes] | None]) -> FakeGateway:
        fake = FakeGateway(answers)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as etcd's gateway

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                answer = fake.next_answer("POST", self.path, body)
                if answer is None:
                    self.close_connection = True  # hang up without an answer
                    return
                status, payload = answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        fake.port = server.server_address[1]
        return fake

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _writer(fake: FakeGateway, ca_pem: str, count: int) -> Writer:
    endpoint = Endpoint("etcd-fake", "127.0.0.1", "127.0.0.1", FAKE_NAME, port=fake.port)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem)
    return Writer([endpoint], context, "ack/key-", count, start=0)


def _run_until(writer: Writer, fake: FakeGateway, requests: int) -> None:
    """Run the writer until it is done, or stop it once the fake has seen `requests`."""
    thread = threading.Thread(target=writer.run)
    thread.start()
    deadline = time.monotonic() + 10
    while thread.is_alive() and len(fake.requests) < requests and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


NOT_ACKNOWLEDGED = {
    "503 no leader": (503, b'{"error":"etcdserver: no leader","code":14}'),
    "500": (500, b'{"error":"etcdserver: request timed out","code":2}'),
    "connection closed": None,
    "200 not JSON": (200, b"<html>OK</html>"),
    "200 JSON without etcd's header": (200, b"{}"),
}


@pytest.mark.parametrize("answer", list(NOT_ACKNOWLEDGED.values()), ids=list(NOT_ACKNOWLEDGED))
def test_an_answer_that_is_not_etcds_put_answer_acknowledges_nothing(serve, tls_files, answer):
    fake = serve([answer])
    writer = _writer(fake, tls_files[0], count=1)
    _run_until(writer, fake, requests=3)
    assert len(fake.requests) >= 3, "the writer retries the same key"
    assert writer.acks == []
    assert writer.failed == ["ack/key-0000"]  # stopped while still trying the first key
    assert len(writer.errors) >= 3


def test_only_a_200_from_kv_put_with_etcds_json_is_an_acknowledgement(serve, tls_files):
    fake = serve([*NOT_ACKNOWLEDGED.values(), (200, ETCD_PUT_ANSWER)])
    writer = _writer(fake, tls_files[0], count=2)
    _run_until(writer, fake, requests=len(NOT_ACKNOWLEDGED) + 2)
    assert [a.key for a in writer.acks] == ["ack/key-0000", "ack/key-0001"]
    assert writer.failed == []
    # The first key was acknowledged by the first real answer, after every bad one.
    assert writer.tries == len(NOT_ACKNOWLEDGED) + 2
    assert len(writer.errors) == len(NOT_ACKNOWLEDGED)
    # What was acknowledged is what was sent: a put of that key and value.
    method, path, body = fake.requests[len(NOT_ACKNOWLEDGED)]
    assert (method, path) == ("POST", PUT_PATH)
    assert base64.b64decode(body["key"]).decode() == "ack/key-0000"
    assert base64.b64decode(body["value"]).decode() == Writer.value("ack/key-0000")
    assert {a.address for a in writer.acks} == {"127.0.0.1"}
