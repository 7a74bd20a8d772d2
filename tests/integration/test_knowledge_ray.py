"""Ingest with embedding spread over Ray workers (the RayJob path) gives the same index as one pod."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.workloads.knowledge.store import ChunkStore
from tests.corpus import write_handbook
from tests.isolation import requires_private_network
from tests.manifests import ROOT

pytestmark = [pytest.mark.integration, requires_private_network]


def ingest_spec_file(tmp_path: Path, name: str, docs: Path, *, workers: int, **spec: object) -> Path:
    """The ingest workload's spec file for the handbook in `docs`, on milvus-lite, scaled out on Ray."""
    job = {
        "namespace": "t",
        "name": name,
        "collection": f"tandem_t__{name}",
        "milvusUri": str(tmp_path / f"{name}.db"),
        "revision": "r1",
        "sourceLocations": {},
        "spec": {
            "sources": [{"name": "handbook", "directory": {"path": str(docs)}}],
            "chunking": {"size": 48, "overlap": 8},
            "scale": {"engine": "RayJob", "workers": workers},
            **spec,
        },
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(job))
    return path


def ingest(tmp_path: Path, name: str, docs: Path, *extra: str) -> dict[str, object]:
    spec = ingest_spec_file(tmp_path, name, docs, workers=2)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "tandem.workloads.ingest", "--spec", str(spec), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    return result


def test_ray_workers_index_the_same_chunks(tmp_path: Path) -> None:
    docs = write_handbook(tmp_path / "docs")
    on_ray = ingest(tmp_path, "ray", docs, "--ray-workers", "2")
    in_pod = ingest(tmp_path, "pod", docs)
    for figure in ("documents", "chunks", "embedded_chunks", "embedding_dimension"):
        assert on_ray[figure] == in_pod[figure], figure
    ray_store = ChunkStore(str(tmp_path / "ray.db"), "tandem_t__ray")
    pod_store = ChunkStore(str(tmp_path / "pod.db"), "tandem_t__pod")
    assert ray_store.documents() == pod_store.documents()  # same ids, hashes and chunk counts
