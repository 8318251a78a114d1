"""Acting from a pod's network namespace: clients the lab runs in-process.

A thread that setns(2)s into a pod namespace opens its sockets there, so its traffic
takes the pod's routes, Service DNAT and NetworkPolicy like any process in the pod.
Names are not resolved (threads share the host's /etc/hosts): callers pass addresses and
the name to verify the server certificate against.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .netns_http import enter_netns


def extra_pod(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Pod that only exists in the lab's network plan: it gets an address, cluster DNS,
    the Service DNAT and the NetworkPolicy its labels earn, and runs nothing (the lab
    acts from it in-process)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {"containers": [{"name": name, "image": "none"}]},
    }


@contextlib.contextmanager
def pod_threads(netns: str, workers: int = 4) -> Iterator[ThreadPoolExecutor]:
    """Worker threads whose sockets live in `netns` (setns(2) per thread, as NetnsHttp).

    Shut down before the lab tears the namespace down."""
    pool = ThreadPoolExecutor(max_workers=workers, initializer=enter_netns, initargs=(netns,))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class ServiceHttps(http.client.HTTPSConnection):
    """HTTPS to an address (a Service or pod IP) that verifies the server as `server_name`,
    the way a client that resolved the name through cluster DNS would."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(address, port, timeout=timeout, context=context)
        self.server_name = server_name
        self.tls = context
        self.tcp_connected = False  # did the last connect get past TCP (to TLS)?
        # The address the socket is connected to, as the client sees it: a Service IP stays
        # the Service IP (the DNAT to a pod is invisible to the connecting socket).
        self.peer_address: str | None = None

    def connect(self) -> None:
        self.tcp_connected = False
        self.peer_address = None
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.tcp_connected = True
        self.peer_address = str(sock.getpeername()[0])
        # As HTTPConnection.connect does: http.client writes headers and body separately,
        # and Nagle + delayed ACK would add ~40 ms to every request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self.tls.wrap_socket(sock, server_hostname=self.server_name)
        except BaseException:
            sock.close()
            raise


def tls_context(ca_pem: str, cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Verify the server against `ca_pem`; present the given client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem)
    context.load_cert_chain(str(cert_path), str(key_path))
    return context


@dataclass(frozen=True)
class HttpsResult:
    status: int | None  # None: no HTTP answer (TLS refused, connection failed)
    body: str
    error: str = ""
    connected: bool = True  # False: not even a TCP connection (refused, unreachable)


def https_request(
    connection: ServiceHttps, method: str, path: str, body: dict[str, Any] | None = None
) -> HttpsResult:
    """One request on `connection`; transport and TLS failures become `error`."""
    try:
        payload = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return HttpsResult(response.status, response.read().decode(errors="replace"))
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        return HttpsResult(None, "", f"{type(exc).__name__}: {exc}".strip(), connection.tcp_connected)
