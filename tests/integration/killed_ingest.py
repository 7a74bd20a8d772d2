"""The kill-and-resume check shared by the milvus-lite and Milvus-server tests: an ingest subprocess is
SIGKILLed after its 3rd written batch (no cleanup, as an evicted pod), run again, and must end with every
document complete, no duplicate chunk, and only the unfinished documents embedded a second time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tandem.workloads.knowledge.store import ChunkStore
from tests.manifests import ROOT


def check_killed_ingest_resumes(tmp_path: Path, milvus_uri: str, collection: str, documents: int) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(documents):
        body = " ".join(f"Fact {i}.{j}: item {i} costs {j * 7 + i} credits." for j in range(12))
        (folder / f"doc{i:02}.txt").write_text(body)
    job = {
        "namespace": "t",
        "name": "kb",
        "collection": collection,
        "milvusUri": milvus_uri,
        "revision": "r1",
        "sourceLocations": {},
        "spec": {
            "sources": [{"name": "many", "directory": {"path": str(folder)}}],
            "chunking": {"strategy": "token", "size": 32, "overlap": 4},
        },
    }
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(job))
    command = [
        sys.executable,
        "-m",
        "tandem.workloads.ingest",
        "--spec",
        str(spec_file),
        "--write-batch",
        "16",
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "HF_HUB_OFFLINE": "1"}

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    batches = 0
    for line in process.stdout:
        if '"stage": "indexing"' in line:
            batches += 1
            if batches == 3:
                process.send_signal(signal.SIGKILL)
                break
    process.wait()
    assert batches == 3, "the ingest finished before it could be killed"

    store = ChunkStore(milvus_uri, collection)
    partial = store.documents()
    complete = {doc_id for doc_id, d in partial.items() if d.complete}
    assert 0 < len(complete) < documents, "nothing, or everything, was written before the kill"
    store.close()  # milvus-lite: one process at a time holds the data directory

    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    store = ChunkStore(milvus_uri, collection)
    try:
        final = store.documents()
        assert len(final) == documents and all(d.complete for d in final.values())
        assert store.count() == sum(d.chunk_count for d in final.values()) == result["chunks"]
        assert result["unchanged"] == len(complete) and result["added"] + result["unchanged"] == documents
        # The resumed run embedded exactly the documents the killed one had not completed.
        assert result["embedded_chunks"] == result["chunks"] - sum(partial[d].chunk_count for d in complete)
    finally:
        store.close()
