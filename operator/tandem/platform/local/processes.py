"""Long-running local servers (milvus-lite, vLLM, the gateway): started detached, found again by PID.

Each server runs in a session of its own, so Ctrl-C on `tandem up` interrupts the work in progress but
not the servers, and `tandem down` stops each whole process group by the PID recorded in the state
file (never by name: other people's processes on this machine are not ours to kill).

A PID alone does not say the process is still ours: after a reboot or a crash the number can belong to
another program. `identity` (this boot's id and the process's start time) is recorded beside the PID
when the server starts, and a process whose identity differs is never taken for ours, nor stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


class ServerFailed(Exception):
    """A server exited or did not become ready; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by us) is not alive.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def identity(pid: int | None) -> str | None:
    """What tells this process apart from any other that had or will have the same PID: the boot it runs
    in and its start time (clock ticks after boot, field 22 of /proc/PID/stat). None if it is gone."""
    if not pid:
        return None
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        boot = BOOT_ID.read_text().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}/{started}"


def is_ours(pid: int | None, recorded_identity: str) -> bool:
    """The process `pid` is alive and is the one whose identity was recorded when it started."""
    return alive(pid) and identity(pid) == recorded_identity


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` and it can be bound (so a server can be started there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers bind (SO_REUSEADDR): a port whose last server just exited may linger in TIME_WAIT.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int, timeout: float = 2.0) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex(("127.0.0.1", port)) == 0


def answers(url: str, timeout: float = 5.0) -> str | None:
    """None when `url` answers 200 now, else what it did instead (for a status message)."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as e:
        return f"{url} does not answer ({type(e).__name__}: {e or 'no detail'})"
    if response.status_code != 200:
        return f"{url} answers {response.status_code}: {response.text[:200]}"
    return None


def start(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return process.pid


def log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"


def wait_ready(url: str, pid: int, log: Path, timeout: float, what: str) -> None:
    """Poll `url` until it answers 200; fail early, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise ServerFailed(f"{what} exited while starting; the end of {log}:\n{log_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise ServerFailed(f"{what} was not ready after {timeout:.0f}s; the end of {log}:\n{log_tail(log)}")


def group_alive(group: int) -> bool:
    """Any process of the group that is not a zombie (exited, waiting for its parent to reap it)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                return True
    return False


def stop(pid: int | None, timeout: float = 20.0) -> None:
    """SIGTERM the process group `pid` leads, then SIGKILL what is left of it after `timeout`.

    The whole group: vLLM's engine, Ray's workers and the like are children that may outlive their
    parent's exit, and none of them may remain."""
    if not pid or not group_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        os.killpg(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once it runs again
    deadline = time.monotonic() + timeout
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ChildProcessError, ProcessLookupError):
        os.waitpid(pid, os.WNOHANG)
