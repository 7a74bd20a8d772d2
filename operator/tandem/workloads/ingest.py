"""`python -m tandem.workloads.ingest --spec FILE`: index a KnowledgeBase (the ingest Job runs this).

The spec file is an `IngestJob` (`tandem.workloads.jobs`), which the operator's planner writes (or
`tandem up` locally): the KnowledgeBase spec, its collection, Milvus URI and token file, revision and
where each source is mounted. Progress is
printed as JSON lines; the result is the last line, is written to --result, and to the Kubernetes
termination message, from which the operator copies it into status.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import ray_runtime
from .jobs import IngestJob, JobSpecError, load_job
from .knowledge.embedding import Embedder, EmbeddingModelError, TextEmbedder
from .knowledge.indexer import WRITE_BATCH, Indexer, IngestError
from .knowledge.ray_embedding import RayEmbedder
from .knowledge.sources import stream_source
from .knowledge.store import StoreError
from .knowledge.targets import open_store
from .reporting import EXIT_PERMANENT, EXIT_RETRY, RESULT_BYTES, emit, finish

TRANSIENT = {"MilvusUnavailable", "CollectionUnavailable"}


def run(
    job: IngestJob, *, drop: bool = False, write_batch: int = WRITE_BATCH, ray_workers: int = 0
) -> dict[str, Any]:
    spec = job.spec
    store = open_store(job.target())
    if drop:
        dropped = store.drop()
        return {"collection": job.collection, "dropped": dropped}
    local = Embedder(
        spec.embedding.model, batch_size=spec.embedding.batch_size, normalize=spec.embedding.normalize
    )
    embedder: TextEmbedder = local
    if ray_workers:
        ray_runtime.connect(log_to_driver=False)
        embedder = RayEmbedder(local, ray_workers)
        write_batch *= ray_workers  # each Ray Data round trip should give every worker a full batch
    locations = job.source_locations
    # Streamed: each source is listed and read a document at a time while the indexer parses, embeds
    # and writes, so memory holds a write batch, not the corpus (the indexer reports each source read).
    reads = (stream_source(source, locations.get(source.name)) for source in spec.sources)
    indexer = Indexer(spec, store, embedder, revision=job.revision, progress=emit, write_batch=write_batch)
    # The operator reads the result from the termination message: a long list of failed documents is
    # cut (and flagged) rather than the message cut mid-JSON.
    result: dict[str, Any] = json.loads(indexer.run(reads).to_json(limit=RESULT_BYTES))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Index a KnowledgeBase into Milvus")
    parser.add_argument("--spec", required=True, help="the ingest spec JSON written by the planner")
    parser.add_argument("--result", help="also write the result JSON here")
    parser.add_argument("--drop-collection", action="store_true", help="drop the collection and exit")
    parser.add_argument("--ray-workers", type=int, default=0, help="embed on this many Ray workers")
    parser.add_argument(
        "--write-batch",
        type=int,
        default=WRITE_BATCH,
        help="chunks embedded and stored per write (resume unit)",
    )
    args = parser.parse_args(argv)
    try:
        outcome = run(
            load_job(args.spec, IngestJob),
            drop=args.drop_collection,
            write_batch=args.write_batch,
            ray_workers=args.ray_workers,
        )
        code = 0
    except JobSpecError as e:
        outcome, code = {"error": e.reason, "message": str(e)}, EXIT_PERMANENT
    except (IngestError, StoreError) as e:
        outcome = {"error": e.reason, "message": str(e)}
        code = EXIT_RETRY if e.reason in TRANSIENT else EXIT_PERMANENT
    except EmbeddingModelError as e:
        outcome = {"error": "EmbeddingModelUnavailable", "message": str(e)}
        code = EXIT_PERMANENT
    finish(outcome, args.result)
    return code


if __name__ == "__main__":
    sys.exit(main())
