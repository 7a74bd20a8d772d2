"""Issue 18 end to end, with the real engines (milvus-lite server, vLLM's CPU build, the gateway), driven
through the `tandem` command as a user would: after `tandem down`, `tandem up --detach` brings back every
server, milvus-lite included, and retrieval answers again; a killed milvus-lite shows at once in
`tandem status` (the process not running, the endpoint `RetrievalUnavailable` while the routes without
retrieval keep answering) and the next `tandem up` restarts it alone; while `tandem up` watches, a killed
milvus-lite turns the endpoint not Ready within one pass and Ready again once it is restarted.

The stated time: `tandem up` checks every `--interval` seconds (1 here, 2 by default); a pass probes the
servers and the gateway's /healthz/dependencies (a few seconds at most), so the endpoint is reported
`RetrievalUnavailable` within interval + probes (asserted: 15 s), and `Serving` again once milvus-lite
has restarted and the gateway's search succeeds (asserted: 120 s on this loaded 2-core machine; the
gateway's gRPC connection backs off after an outage, so `tandem up` restarts the gateway when Milvus
answers its own check but not the gateway's, which takes about 15 s).

No training here (test_local_up covers it): a KnowledgeBase and an endpoint with a `base` and a `rag` route,
on the session's converted SmolLM2 folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.platform.local import processes
from tests.integration.test_local_up import ENV, PAGES, state_of, tandem, wait_for
from tests.integration.vllm_server import require_vllm

pytestmark = pytest.mark.integration

QUESTION = "What is the visitor parking code at the Bergen office?"
UP = [sys.executable, "-m", "tandem.cli", "up"]
DETECTED_WITHIN = 15.0  # seconds from the kill to RetrievalUnavailable while `tandem up --interval 1` watches
RECOVERED_WITHIN = 120.0  # seconds from the kill to Serving again (milvus-lite restarted, search answering)


def project(directory: Path, model: Path) -> Path:
    (directory / "docs").mkdir(parents=True)
    for name, text in PAGES.items():
        (directory / "docs" / name).write_text(text)
    meta = {"namespace": "default"}
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "KnowledgeBase",
            "metadata": {"name": "handbook", **meta},
            "spec": {"sources": [{"name": "pages", "directory": {"path": "docs"}}]},
        },
        {
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "HybridEndpoint",
            "metadata": {"name": "assistant", **meta},
            "spec": {
                "baseModel": {"uri": f"file://{model}"},
                "knowledgeBases": [{"name": "handbook"}],
                "routes": [{"name": "base", "retrieval": False}, {"name": "rag", "retrieval": True}],
                "retrieval": {"mode": "always", "topK": 2},
                "serving": {"maxModelLen": 2048, "dtype": "bfloat16"},
            },
        },
    ]
    (directory / "tandem.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


def row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if f" {name} " in line)


def kill_milvus(state: Path) -> int:
    pid = int(state_of(state)["servers"]["milvus"]["pid"])
    os.killpg(pid, signal.SIGKILL)  # it leads its own process group
    wait_for(lambda: not processes.alive(pid), 30, "milvus-lite to exit")
    return pid


def ask(state: Path, model: str) -> subprocess.CompletedProcess[str]:
    return tandem("ask", QUESTION, "--model", model, state=state, timeout=300)


class Watching:
    """`tandem up` in the foreground, checking every second; its lines with the time each arrived."""

    def __init__(self, directory: Path, state: Path) -> None:
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            [*UP, "-f", str(directory), "--state", str(state), "--interval", "1"],
            env={**ENV, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def first(self, text: str, after: float = 0.0) -> float | None:
        return next((t for t, line in self.lines if t >= after and text in line), None)

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)
        self.reader.join(10)


def test_down_then_up_a_killed_milvus_and_one_stopped_while_watching(
    tmp_path: Path, served_model_dir: Path
) -> None:
    require_vllm()
    directory = project(tmp_path / "project", served_model_dir)
    state = tmp_path / "state"
    watching: Watching | None = None
    try:
        first = tandem("up", "-f", str(directory), "--detach", state=state, timeout=1200)
        assert first.returncode == 0, first.stdout + first.stderr

        # The sequence: down, then up again.
        assert tandem("down", state=state, timeout=120).returncode == 0
        stopped = tandem("status", state=state).stdout
        assert "Stopped" in row(stopped, "default/handbook") and "Process" not in stopped
        again = tandem("up", "-f", str(directory), "--detach", state=state, timeout=1200)
        assert again.returncode == 0, again.stdout + again.stderr
        answer = ask(state, "rag")
        assert answer.returncode == 0 and "pages/parking.md" in answer.stdout, answer.stdout + answer.stderr
        status = tandem("status", state=state).stdout
        milvus = state_of(state)["servers"]["milvus"]
        assert "True" in row(status, "milvus") and f"pid {milvus['pid']}" in row(status, "milvus"), status
        assert "Serving" in row(status, "default/assistant"), status
        vllm_pid = state_of(state)["servers"]["vllm:default/assistant"]["pid"]

        # A killed milvus-lite: status says so now, retrieval fails, the other route still answers.
        killed = kill_milvus(state)
        status = tandem("status", state=state).stdout
        assert "False" in row(status, "milvus") and f"pid {killed} is not running" in row(status, "milvus")
        assert "RetrievalUnavailable" in row(status, "default/assistant"), status
        assert "MilvusUnavailable" in row(status, "default/handbook"), status
        assert ask(state, "base").returncode == 0
        failed = ask(state, "rag")
        assert (
            failed.returncode == 1 and "503" in failed.stdout and "retrieval is unavailable" in failed.stdout
        )
        restarted = tandem("up", "-f", str(directory), "--detach", state=state, timeout=600)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        servers = state_of(state)["servers"]
        assert servers["milvus"]["pid"] != killed and servers["vllm:default/assistant"]["pid"] == vllm_pid
        assert "pages/parking.md" in ask(state, "rag").stdout

        # Killed while `tandem up` watches: not Ready within one pass, Ready again after the restart.
        watching = Watching(directory, state)
        wait_for(lambda: watching.first("watching"), 300, "tandem up to watch")
        killed = kill_milvus(state)
        at = time.monotonic()
        down_at = wait_for(
            lambda: watching.first("HybridEndpoint/default/assistant: RetrievalUnavailable", at),
            DETECTED_WITHIN,
            "the endpoint to be reported RetrievalUnavailable",
        )
        wait_for(
            lambda: watching.first("HybridEndpoint/default/assistant: Serving", down_at),
            RECOVERED_WITHIN - (down_at - at),
            "the endpoint to be Serving again",
        )
        recorded = state_of(state)
        assert recorded["resources"]["HybridEndpoint/default/assistant"]["ready"]
        assert recorded["servers"]["milvus"]["pid"] != killed
        assert "pages/parking.md" in ask(state, "rag").stdout
        watching.stop()
        print(watching.output())  # shown with -s: the lines a user sees
        assert json.dumps(recorded)  # the state file stayed whole
    finally:
        if watching is not None:
            watching.stop()
        tandem("down", state=state, timeout=120)
