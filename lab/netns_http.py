"""Plain-HTTP GETs from inside a network namespace, without a subprocess per request.

The network namespace is a per-thread property on Linux: a worker thread that calls
setns(2) once opens every later socket inside that namespace. The lab uses one worker
in the "node" namespace, which is where kubelet's probes come from on a real node.
Names are never resolved here (the thread shares the host's /etc/hosts): callers pass
IP addresses.
"""

from __future__ import annotations

import ctypes
import http.client
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000


def enter_netns(netns: str) -> None:
    """Move the calling thread into network namespace `netns`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class HttpResult:
    status: int | None  # None: no answer (refused, timeout)
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        """Success as kubelet counts it for an httpGet probe."""
        return self.status is not None and 200 <= self.status < 400


class NetnsHttp:
    """Worker threads that all live in `netns`."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._pool = ThreadPoolExecutor(max_workers=8, initializer=enter_netns, initargs=(netns,))

    def get_async(self, host: str, port: int, path: str, timeout: float = 1.0) -> Future[HttpResult]:
        return self._pool.submit(_get, host, port, path, timeout)

    def get(self, host: str, port: int, path: str, timeout: float = 1.0) -> HttpResult:
        return self.get_async(host, port, path, timeout).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> NetnsHttp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _get(host: str, port: int, path: str, timeout: float) -> HttpResult:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return HttpResult(response.status, response.read().decode(errors="replace"))
    except (OSError, http.client.HTTPException) as exc:
        return HttpResult(None, "", f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
