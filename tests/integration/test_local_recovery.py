"""`tandem up` brings back the Milvus a KnowledgeBase needs before calling it Ready (issue 18), with the
real milvus-lite server and embedding model (no vLLM: see test_local_up_recovery.py for the endpoint):

- after `tandem down`, the next reconcile restarts the milvus-lite server on its port, finds the
  collection in its data directory (nothing is ingested again) and the KnowledgeBase answers searches;
- a killed or hung milvus-lite server, or a recorded PID that is now another program's, is started
  again (the other program is left alone);
- a KnowledgeBase on a Milvus of its own that stops answering is `MilvusUnavailable` (not Ready), and
  Ready again once it answers;
- `tandem status` probes: it lists milvus with its health now, and a KnowledgeBase whose server is
  down is shown not Ready whatever was recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.cli import app
from tandem.platform.local import platform as local_platform
from tandem.platform.local import processes
from tandem.platform.local.manifests import Manifests, load
from tandem.platform.local.platform import LocalPlatform
from tandem.platform.local.state import State
from tests.corpus import write_handbook

pytestmark = pytest.mark.integration
runner = CliRunner()
KEY = "KnowledgeBase/default/handbook"


def manifest(directory: Path, docs: Path, milvus_uri: str | None = None) -> Path:
    milvus = f"\n  milvus: {{uri: '{milvus_uri}'}}" if milvus_uri else ""
    path = directory / "kb.yaml"
    path.write_text(
        f"""apiVersion: tandem.dev/v1alpha1
kind: KnowledgeBase
metadata: {{name: handbook, namespace: default}}
spec:
  sources:
    - {{name: handbook, directory: {{path: "{docs}"}}}}{milvus}
"""
    )
    return path


def search(kb: Path, state: Path) -> str:
    found = runner.invoke(
        app, ["search", "-f", str(kb), "travel desk code", "-k", "2", "--state", str(state)]
    )
    assert found.exit_code == 0, found.output
    return found.output


def status(state: Path) -> str:
    shown = runner.invoke(app, ["status", "--state", str(state)])
    assert shown.exit_code == 0, shown.output
    return shown.output


def row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if f" {name} " in line)


def ingest_log(state: Path) -> str:
    log = state / "logs" / "KnowledgeBase-default-handbook.log"
    return log.read_text() if log.exists() else ""


@pytest.fixture()
def local(tmp_path: Path) -> Iterator[tuple[LocalPlatform, Manifests, Path, Path]]:
    state = tmp_path / ".tandem"
    kb = manifest(tmp_path, write_handbook(tmp_path / "docs"))
    platform = LocalPlatform(state)
    try:
        yield platform, load(kb, state), kb, state
    finally:
        LocalPlatform(state).down()


def test_down_then_up_restarts_milvus_and_keeps_the_collection(
    local: tuple[LocalPlatform, Manifests, Path, Path],
) -> None:
    platform, manifests, kb, state = local
    assert platform.reconcile(manifests), platform.state.resources
    first = platform.state.servers["milvus"]
    assert "QF-TRV-7" in search(kb, state)
    indexed = ingest_log(state)

    LocalPlatform(state).down()
    after_down = State.load(state).resources[KEY]
    assert not after_down.ready and after_down.reason == "Stopped"
    shown = status(state)
    assert "Process" not in shown  # nothing runs, nothing is listed as running
    assert "False" in row(shown, "default/handbook")

    again = LocalPlatform(state)
    assert again.reconcile(manifests), again.state.resources
    kb_state = again.state.resources[KEY]
    assert kb_state.ready and kb_state.reason == "Indexed"
    second = again.state.servers["milvus"]
    assert second.pid != first.pid and second.port == first.port  # same URL: nothing else changes
    assert ingest_log(state) == indexed  # no ingest ran: the data directory kept the collection
    assert "QF-TRV-7" in search(kb, state)
    milvus = row(status(state), "milvus")
    assert "True" in milvus and f"pid {second.pid}" in milvus


def test_a_killed_hung_or_stale_milvus_is_started_again(
    local: tuple[LocalPlatform, Manifests, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, manifests, kb, state = local
    monkeypatch.setattr(local_platform, "MILVUS_PROBE_SECONDS", 3.0)
    assert platform.reconcile(manifests)
    first = platform.state.servers["milvus"]

    os.killpg(first.pid, signal.SIGKILL)
    processes.stop(first.pid)
    shown = status(state)  # observed now, not as recorded
    assert "False" in row(shown, "milvus") and "is not running" in row(shown, "milvus")
    assert "MilvusUnavailable" in row(shown, "default/handbook")
    assert platform.reconcile(manifests)
    second = platform.state.servers["milvus"]
    assert second.pid != first.pid and processes.alive(second.pid)
    assert "QF-TRV-7" in search(kb, state)

    # After a reboot the recorded PID may be any program's: it is not ours, so it is neither taken for
    # the server nor stopped.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        processes.stop(second.pid)
        platform.state.servers["milvus"].pid = stranger.pid
        platform.state.save()
        assert "another process now" in row(status(state), "milvus")
        assert platform.reconcile(manifests)
        third = platform.state.servers["milvus"]
        assert third.pid not in (second.pid, stranger.pid) and stranger.poll() is None
        assert "QF-TRV-7" in search(kb, state)
    finally:
        stranger.kill()
        stranger.wait()

    # Hung: the process is ours and its port accepts connections, but Milvus answers nothing.
    os.kill(third.pid, signal.SIGSTOP)
    assert platform.reconcile(manifests)
    fourth = platform.state.servers["milvus"]
    assert fourth.pid != third.pid and not processes.alive(third.pid)
    assert "QF-TRV-7" in search(kb, state)


def test_a_milvus_of_its_own_that_stops_answering_is_reported_then_recovers(tmp_path: Path) -> None:
    port = processes.free_port()
    data = tmp_path / "external-milvus"

    def milvus() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("milvus-lite")),
                "server",
                "--data-dir",
                str(data),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not processes.listening(port, 1.0):
            assert time.monotonic() < deadline and server.poll() is None, "milvus-lite did not start"
            time.sleep(0.2)
        return server

    state = tmp_path / ".tandem"
    kb = manifest(tmp_path, write_handbook(tmp_path / "docs"), f"http://127.0.0.1:{port}")
    manifests = load(kb, state)
    server = milvus()
    platform = LocalPlatform(state)
    try:
        assert platform.reconcile(manifests), platform.state.resources
        assert "milvus" not in platform.state.servers  # not local mode's to run

        processes.stop(server.pid)
        started = time.monotonic()
        assert not platform.reconcile(manifests)
        kb_state = platform.state.resources[KEY]
        assert not kb_state.ready and kb_state.reason == "MilvusUnavailable"
        assert f"127.0.0.1:{port}" in kb_state.message
        assert time.monotonic() - started < 10  # a refused connection is seen at once

        server = milvus()
        assert platform.reconcile(manifests), platform.state.resources
        assert platform.state.resources[KEY].reason == "Indexed"
    finally:
        processes.stop(server.pid)
        platform.down()
