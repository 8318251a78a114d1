"""Every subprocess the lab starts goes through this module.

One place means one policy: each short command has a timeout and surfaces its
stderr in the error, and long-running processes are tracked so that `stop`
can refuse to signal anything the lab did not start itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import weakref
from pathlib import Path

__all__ = [
    "CommandError",
    "end_pids",
    "is_running",
    "netns_argv",
    "run",
    "spawn",
    "stop",
]

# Popen objects returned by `spawn`; `stop` only accepts these. Weak so that a
# finished, forgotten process does not keep its Popen alive forever.
_SPAWNED: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()

# Interval of every poll-wait below: short enough to add no visible latency,
# long enough not to spin a core.
_POLL_S = 0.01


def one_line(text: str, limit: int | None = None) -> str:
    """An error text (a command's stderr may span lines) as one line, cut at `limit`."""
    flat = " ".join(text.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 3] + "..."


class CommandError(RuntimeError):
    """A command failed (non-zero exit) or did not finish in time."""

    def __init__(self, argv: list[str], message: str, returncode: int | None = None) -> None:
        super().__init__(f"{' '.join(argv)}: {message}")
        self.argv = list(argv)
        self.returncode = returncode


def run(
    argv: list[str],
    *,
    timeout: float = 10,
    check: bool = True,
    input: str | None = None,  # noqa: A002 - mirrors subprocess.run
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion, capturing text stdout and stderr.

    `env` None: the lab's own environment (for the lab's tools); a command that runs
    inside a pod gets that pod's environment instead.
    """
    try:
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            # Without input, do not let the command read the lab's terminal.
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        # subprocess.run has already killed and reaped the child.
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise CommandError(argv, f"timed out after {timeout:g} s; stderr: {(stderr or '').strip()}") from None
    except FileNotFoundError as exc:
        raise CommandError(argv, f"command not found ({exc.strerror})") from None
    if check and result.returncode != 0:
        raise CommandError(
            argv,
            f"exit {result.returncode}; stderr: {result.stderr.strip()}",
            result.returncode,
        )
    return result


def netns_argv(ns: str, argv: list[str]) -> list[str]:
    """Wrap argv to run inside network namespace `ns`.

    `ip netns exec` execs the command (so a spawned PID is the real process),
    and bind-mounts /etc/netns/<ns>/hosts and resolv.conf over /etc/* for it.
    `ip` is found on the lab's PATH: a pod's environment (and PATH) is its own.
    """
    return [shutil.which("ip") or "ip", "netns", "exec", ns, *argv]


def spawn(
    argv: list[str],
    *,
    stdout_path: Path | str,
    stderr_path: Path | str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running process with its output appended to files.

    `env` None inherits the lab's environment; a pod's process gets its own
    (lab.pods.Container.env). stderr goes to stdout_path when stderr_path is
    None. Appending keeps the log of an earlier incarnation when a member is
    restarted with the same paths. The new session keeps Ctrl-C on the lab's terminal from reaching
    the process directly: the lab decides how and when to stop it.
    """
    with open(stdout_path, "ab") as out:
        err = open(stderr_path, "ab") if stderr_path is not None else None  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err if err is not None else subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            if err is not None:
                err.close()
    _SPAWNED.add(proc)
    return proc


def stop(
    proc: subprocess.Popen[bytes],
    sig: int = signal.SIGTERM,
    grace: float = 10.0,
) -> int:
    """Signal a spawned process, wait up to `grace` seconds, then SIGKILL it.

    Returns the exit status (negative signal number if killed by a signal).
    The default grace is above etcd's ~7 s leader-transfer timeout on SIGTERM.
    """
    if proc not in _SPAWNED:
        raise ValueError(f"refusing to stop PID {proc.pid}: it was not started by lab.proc.spawn")
    # Popen.send_signal does nothing once the process is reaped, so a reused
    # PID can never be hit.
    proc.send_signal(sig)
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    if proc.poll() is None:
        proc.kill()
        return proc.wait(timeout=10)
    assert proc.returncode is not None
    return proc.returncode


def is_running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (zombies count as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers signal 0; it has exited for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def end_pids(pids: list[int], grace: float = 5.0) -> list[int]:
    """SIGTERM processes the lab did not spawn in this process, then SIGKILL.

    Only for processes known to be the lab's by other means: those inside the
    lab's own network namespaces (left over by a crashed run, or started
    there by hand). Returns the PIDs that were signalled.
    """
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while any(is_running(p) for p in signalled) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    for pid in signalled:
        if is_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return signalled
