"""Local mode's server supervision (issue 18): a recorded server counts as running only when its PID is
still the process that was started (boot id and start time, not just the number) and it answers; one
found stopped, crashed or unresponsive is started again (on its port, when free); a PID that now belongs
to another program is never stopped. Small `python -m http.server` processes on 127.0.0.1 stand in for
the servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.platform.local import processes, servers
from tandem.platform.local.servers import Supervisor, check
from tandem.platform.local.state import Server, State


def http_server(directory: Path) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory)]


@pytest.fixture()
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    supervisor = Supervisor(State.load(tmp_path), tmp_path)
    yield supervisor
    supervisor.stop_all()


def ensure(supervisor: Supervisor, directory: Path, restarts: list[str] | None = None) -> Server:
    return supervisor.ensure(
        "web",
        "v1",
        lambda port: [*http_server(directory), str(port)],
        ready="/",
        timeout=30,
        on_restart=None if restarts is None else restarts.append,
    )


def test_a_running_server_is_reused_and_its_identity_recorded(supervisor: Supervisor, tmp_path: Path) -> None:
    first = ensure(supervisor, tmp_path)
    assert first.identity == processes.identity(first.pid) and first.identity
    assert check(first).ok
    assert ensure(supervisor, tmp_path).pid == first.pid
    saved = State.load(tmp_path).servers["web"]  # what `tandem status` reads in another process
    assert saved.identity == first.identity and saved.health == "/"


def test_a_killed_server_is_started_again_on_its_port(supervisor: Supervisor, tmp_path: Path) -> None:
    first = ensure(supervisor, tmp_path)
    os.killpg(first.pid, signal.SIGKILL)
    processes.stop(first.pid)  # reaps it
    health = check(first)
    assert not health.ok and not health.running and f"pid {first.pid} is not running" in str(health)
    restarts: list[str] = []
    second = ensure(supervisor, tmp_path, restarts)
    assert second.pid != first.pid and second.port == first.port and check(second).ok
    assert restarts == [f"web pid {first.pid} is not running: restarting it"]


def test_a_pid_that_is_another_program_now_is_neither_ours_nor_stopped(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    first = ensure(supervisor, tmp_path)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # As after a reboot: the number recorded for our server is now another program's.
        processes.stop(first.pid)
        supervisor.state.servers["web"] = Server(
            pid=stranger.pid,
            port=first.port,
            log=first.log,
            fingerprint="v1",
            identity=first.identity,
            health="/",
        )
        health = check(supervisor.state.servers["web"])
        assert not health.ok and not health.running and "another process now" in str(health)
        second = ensure(supervisor, tmp_path)
        assert second.pid != stranger.pid and check(second).ok
        assert stranger.poll() is None  # left alone
        supervisor.state.servers["other"] = Server(
            pid=stranger.pid, port=1, log="", fingerprint="", identity="someone-else", health=None
        )
        assert f"other (pid {stranger.pid} was not running; nothing to stop)" in supervisor.stop_all()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_server_that_runs_but_does_not_answer_is_restarted(
    supervisor: Supervisor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "PROBE_TIMEOUT", 1.0)
    first = ensure(supervisor, tmp_path)
    os.kill(first.pid, signal.SIGSTOP)  # alive, ours, answering nothing
    try:
        health = check(first)
        assert not health.ok and health.running and "does not answer" in str(health)
        second = ensure(supervisor, tmp_path)
        assert second.pid != first.pid and check(second).ok
        assert not processes.alive(first.pid)  # stopped, by its recorded PID
    finally:
        if processes.alive(first.pid):
            os.kill(first.pid, signal.SIGKILL)
