#!/usr/bin/env python3
"""Recall@10 of Tandem's HNSW search against exact search, on embeddings of real text.

The corpus is N passages of real text (docstrings, see common.py) embedded with all-MiniLM-L6-v2 and
cached under benchmarks/results/cache (ignored by git); the queries are held-out passages cut to their
first 12 words, embedded the same way. The rows go into a collection built by Tandem's `ChunkStore`
(HNSW, M=16, efConstruction=200: the KnowledgeBase defaults), 10 % labelled for a group the caller
lacks. Exact top-10 is brute force in numpy over the rows the caller may read (cosine = dot product of
normalised vectors). Measured through:

* `ChunkStore.dense_search(vector, 10, acl)`: what Milvus returns at Tandem's ef (max(64, limit));
* `Retriever.search(query, 10)` with `search.keyword: off`: Tandem's search as an endpoint runs it
  (40 candidates at ef 64, fused, cut to 10);
* a FLAT collection of the same rows (exact search in Milvus), to check the numpy ground truth.

    .venv/bin/python benchmarks/knowledge_recall.py --quick
    .venv/bin/python benchmarks/knowledge_recall.py --json benchmarks/results/knowledge-recall.json
    scripts/isolated.sh .venv/bin/python benchmarks/knowledge_recall.py --backends lite,server
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from knowledge_search import CALLER, LABELLED_EVERY, LookupEmbedder, backend, rows
from tandem.api.v1alpha1.knowledgebase import Search, VectorIndex
from tandem.workloads.knowledge.retrieval import Retriever
from tandem.workloads.knowledge.store import ChunkStore, chunk_id

K = 10


def exact_top(corpus: common.EmbeddedCorpus, k: int) -> list[set[str]]:
    """Ids of the exact top-k visible rows per query (numpy brute force)."""
    n = len(corpus.texts)
    visible = np.array([i % LABELLED_EVERY != LABELLED_EVERY - 1 for i in range(n)])
    scores = corpus.query_vectors @ corpus.vectors.T
    scores[:, ~visible] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids = [_row_id(i) for i in range(n)]
    return [{ids[i] for i in row} for row in top]


def _row_id(i: int) -> str:
    from knowledge_search import CHUNKS_PER_DOC

    return chunk_id(
        f"bench/doc{i // CHUNKS_PER_DOC:07}.txt", f"{i // CHUNKS_PER_DOC:064x}", i % CHUNKS_PER_DOC
    )


def fill(store: ChunkStore, corpus: common.EmbeddedCorpus, index: VectorIndex) -> float:
    store.drop()
    store.ensure(corpus.vectors.shape[1], index, "off")
    rng = np.random.default_rng(common.SEED)
    started = time.perf_counter()
    for offset in range(0, len(corpus.texts), 2000):
        # insert, as the Indexer writes documents never stored before
        store.insert(rows(corpus, offset, min(offset + 2000, len(corpus.texts)), rng))
    store.flush()
    while True:
        info = store.client.describe_index(store.collection, "vector")
        if int(info.get("indexed_rows", 0)) >= len(corpus.texts):
            break
        time.sleep(1)
    return time.perf_counter() - started


def recall(found: list[list[str]], truth: list[set[str]]) -> float:
    return statistics.fmean(len(set(f[:K]) & t) / K for f, t in zip(found, truth, strict=True))


def run_backend(
    name: str, corpus: common.EmbeddedCorpus, truth: list[set[str]], workdir: Path
) -> dict[str, Any]:
    table = {q: v for q, v in zip(corpus.queries, corpus.query_vectors, strict=True)}
    out: dict[str, Any] = {"backend": name}
    with backend(name, workdir) as (uri, _):
        hnsw = ChunkStore(uri, "tandem_bench__recall_hnsw")
        out["hnsw_build_seconds"] = round(fill(hnsw, corpus, VectorIndex(type="HNSW", metric="COSINE")), 1)
        flat = ChunkStore(uri, "tandem_bench__recall_flat")
        fill(flat, corpus, VectorIndex(type="FLAT", metric="COSINE"))
        out["server_version"] = hnsw.server_version
        expression = f"({hnsw.acl_filter(CALLER.groups)})"  # the same label sets in both collections
        # milvus-lite merges and indexes in the background after it reports the index done: the search is
        # repeated (at most 3 passes) until two passes agree; every pass's recall is reported.
        dense = [[p.id for p in hnsw.dense_search(v, K, expression)] for v in corpus.query_vectors]
        passes = [round(recall(dense, truth), 4)]
        for _ in range(2):
            time.sleep(5)
            again = [[p.id for p in hnsw.dense_search(v, K, expression)] for v in corpus.query_vectors]
            passes.append(round(recall(again, truth), 4))
            if again == dense:
                break
            dense = again
        out["dense_search_recall_per_pass"] = passes
        retriever = Retriever(hnsw, LookupEmbedder(table, corpus.vectors.shape[1]), Search(keyword="off"))  # type: ignore[arg-type]
        tandem = [[p.id for p in retriever.search(q, K, CALLER).passages] for q in corpus.queries]
        exact = [[p.id for p in flat.dense_search(v, K, expression)] for v in corpus.query_vectors]
        out["recall_at_10"] = {
            "dense_search_ef64": round(recall(dense, truth), 4),
            "retriever_keyword_off": round(recall(tandem, truth), 4),
            "milvus_flat_vs_numpy": round(recall(exact, truth), 4),
        }
        worst = sorted(len(set(f) & t) / K for f, t in zip(tandem, truth, strict=True))
        out["retriever_recall_p5"] = worst[len(worst) // 20]
        if hnsw.embedded:
            hnsw.close()
    print(
        f"{name} (Milvus {out['server_version']}): recall@10 {out['recall_at_10']}, "
        f"build {out['hnsw_build_seconds']} s"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="lite")
    parser.add_argument("--corpus", type=int, default=12_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--use-queries",
        type=int,
        default=None,
        help="search with only the first N of the embedded queries (the cache stays the one of --queries)",
    )
    parser.add_argument("--quick", action="store_true", help="600 passages, 50 queries")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.corpus, args.queries = 600, 50
    corpus = common.embedded_corpus(args.corpus, args.queries)
    if args.use_queries is not None:
        corpus = dataclasses.replace(
            corpus,
            queries=corpus.queries[: args.use_queries],
            query_vectors=corpus.query_vectors[: args.use_queries],
        )
    truth = exact_top(corpus, K)
    workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-recall-"))
    try:
        results = [run_backend(name.strip(), corpus, truth, workdir) for name in args.backends.split(",")]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    common.write_json(
        args.json,
        {
            "benchmark": "knowledge_recall",
            "command": " ".join(sys.argv),
            "machine": common.machine(),
            "corpus": {
                "passages": args.corpus,
                "queries": len(corpus.queries),
                "queries_embedded": args.queries,
                "embedding_seconds": corpus.seconds,
            },
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
