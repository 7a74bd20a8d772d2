#!/usr/bin/env python3
"""Search latency through Tandem versus a raw pymilvus search, on milvus-lite and the Milvus 2.3.5 server.

One collection of N vectors is built through Tandem's own `ChunkStore` (`ensure`, then `insert` of rows
shaped as the indexer writes them: text, doc/chunk fields, ACL labels; the Indexer inserts the chunks of
documents never stored before and upserts only replacements; `--write upsert` gives the old behaviour).
The vectors are real all-MiniLM-L6-v2 embeddings of text (see common.py) and, past the corpus size,
perturbed copies of them (Gaussian noise, sigma 0.02 per dimension, renormalised: cosine about 0.93 to
the original) so 100k or 1M vectors need not be embedded. 10 % of the rows carry an access label the
caller lacks.

Then, for every query, interleaved in a random order so that the machine's noise hits all of them alike:

* raw: `MilvusClient.search` on the same collection with the same vector, filter (the ACL expression
  Tandem builds), limit (Tandem asks for max(4 top_k, 20) candidates), output fields and search params;
* tandem-dense: `ChunkStore.dense_search` (the store layer alone);
* tandem-off: `Retriever.search(..., top_k)` with `search.keyword: off`;
* tandem-auto: `Retriever.search` with `search.keyword: auto` (milvus-lite: a second, BM25 search in
  Milvus; Milvus 2.3: BM25 in the client over the dense candidates);
* embed: embedding the query text (Tandem's `Embedder.embed`), which the raw call does not do.

The Retrievers get the query's vector from a lookup table (embedded beforehand), so their times
compare like for like with the raw call; the embedding is reported on its own row.

    .venv/bin/python benchmarks/knowledge_search.py --quick                        # lite, 5k vectors
    .venv/bin/python benchmarks/knowledge_search.py --backends lite --vectors 100000
    scripts/isolated.sh .venv/bin/python benchmarks/knowledge_search.py --backends server --vectors 100000
    scripts/isolated.sh .venv/bin/python benchmarks/knowledge_search.py --backends server --vectors 1000000

The server backend refuses to start unless the process runs in a network namespace with only loopback
(`scripts/isolated.sh`): the Milvus standalone server binds every interface.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from tandem.api.v1alpha1.knowledgebase import Search, VectorIndex
from tandem.workloads.knowledge.retrieval import Principal, Retriever
from tandem.workloads.knowledge.store import OUTPUT_FIELDS, ChunkStore, chunk_id

COLLECTION = "tandem_bench__search"
SIGMA = 0.02
BATCH = 2000
CALLER = Principal("t", ("eng",))
LABELLED_EVERY = 10  # one row in ten is labelled "security", which the caller lacks
CHUNKS_PER_DOC = 8


class LookupEmbedder:
    """An embedder whose vectors were computed beforehand: the Retriever's search without the model."""

    def __init__(self, table: dict[str, np.ndarray], dimension: int) -> None:
        self.table = table
        self.name = common.MODEL
        self.dimension = dimension
        self.max_tokens = 254
        self.embedded = 0

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


def rows(
    corpus: common.EmbeddedCorpus, start: int, stop: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Rows `start..stop` as the indexer shapes them; row i copies passage i % n, perturbed when i >= n."""
    n = len(corpus.texts)
    index = np.arange(start, stop)
    vectors = corpus.vectors[index % n].copy()
    noisy = index >= n
    if noisy.any():
        vectors[noisy] += rng.normal(0.0, SIGMA, size=(int(noisy.sum()), vectors.shape[1])).astype(np.float32)
        vectors[noisy] /= np.linalg.norm(vectors[noisy], axis=1, keepdims=True)
    out = []
    for i, vector in zip(index.tolist(), vectors, strict=True):
        doc_id = f"bench/doc{i // CHUNKS_PER_DOC:07}.txt"
        doc_hash = f"{i // CHUNKS_PER_DOC:064x}"
        labelled = i % LABELLED_EVERY == LABELLED_EVERY - 1
        text = corpus.texts[i % n]
        out.append(
            {
                "id": chunk_id(doc_id, doc_hash, i % CHUNKS_PER_DOC),
                "vector": vector.tolist(),
                "text": text,
                "doc_id": doc_id,
                "doc_hash": doc_hash,
                "source": "bench",
                "uri": f"file:///bench/{doc_id}",
                "title": f"Document {i // CHUNKS_PER_DOC}",
                "heading": "",
                "chunk_index": i % CHUNKS_PER_DOC,
                "chunk_count": CHUNKS_PER_DOC,
                "start": 0,
                "end": len(text),
                "page": -1,
                "access_labels": ["security"] if labelled else [],
                "public": not labelled,
                "metadata": {},
            }
        )
    return out


def index_progress(store: ChunkStore) -> tuple[int, int, str]:
    info = store.client.describe_index(store.collection, "vector")
    return int(info.get("indexed_rows", 0)), int(info.get("total_rows", 0)), str(info.get("state", ""))


def build(
    store: ChunkStore, corpus: common.EmbeddedCorpus, count: int, keyword: str, write: str = "insert"
) -> dict[str, Any]:
    """Create the collection through Tandem and fill it; time the insert and the index build."""
    store.drop()
    store.ensure(corpus.vectors.shape[1], VectorIndex(type="HNSW", metric="COSINE"), keyword)
    rng = np.random.default_rng(common.SEED)
    started = time.perf_counter()
    generating = 0.0
    for offset in range(0, count, BATCH):
        made = time.perf_counter()
        batch = rows(corpus, offset, min(offset + BATCH, count), rng)
        generating += time.perf_counter() - made
        getattr(store, write)(batch)  # ChunkStore.insert or ChunkStore.upsert
        if (offset // BATCH) % 50 == 49:
            print(f"  {write}ed {offset + len(batch)}/{count}", file=sys.stderr, flush=True)
    store.flush()
    inserted = time.perf_counter()
    insert_seconds = inserted - started - generating
    # Index build: until Milvus reports every row indexed (the server builds sealed segments after flush).
    progress = index_progress(store)
    while progress[0] < progress[1] or progress[1] < count:
        if time.perf_counter() - inserted > 7200:
            break
        time.sleep(2)
        progress = index_progress(store)
    indexed = time.perf_counter()
    print(f"  index reports {progress} after {indexed - inserted:.1f} s", file=sys.stderr, flush=True)
    return {
        "write": f"ChunkStore.{write}",
        "insert_seconds": round(insert_seconds, 1),
        "index_reported_done_seconds": round(indexed - inserted, 1),
        "index_state": list(progress),
        "rows": store.count(),
    }


def settle(search: Callable[[], object], limit: float = 600.0) -> float:
    """Wait until searches stop getting faster (milvus-lite keeps merging and indexing in the background
    after it says the index is done); returns the seconds waited."""
    started = time.perf_counter()
    previous = None
    steady = 0
    while time.perf_counter() - started < limit:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            search()
            times.append(time.perf_counter() - t)
        current = statistics.median(times)
        if previous is not None and current > 0.9 * previous:
            steady += 1
            if steady >= 3:
                break
        else:
            steady = 0
        previous = current if previous is None else min(previous, current)
        time.sleep(3)
    return time.perf_counter() - started


def measure(
    store: ChunkStore,
    corpus: common.EmbeddedCorpus,
    embedder: Any,
    top_k: int,
    rounds: int,
    keyword_label: str,
    only: int | None = None,
    warmup: int = 10,
    time_limit: float | None = None,
) -> dict[str, Any]:
    table = {q: v for q, v in zip(corpus.queries, corpus.query_vectors, strict=True)}
    table = dict(list(table.items())[:only])
    lookup = LookupEmbedder(table, corpus.vectors.shape[1])
    off = Retriever(store, lookup, Search(keyword="off"))  # type: ignore[arg-type]
    auto = Retriever(store, lookup, Search(keyword="auto"))  # type: ignore[arg-type]
    expression = f"({store.acl_filter(CALLER.groups)})"
    candidates = max(top_k * 4, 20)
    search_params = {"metric_type": store.metric, "params": {"ef": max(64, candidates)}}

    def raw(vector: np.ndarray) -> list[dict[str, Any]]:
        return list(
            store.client.search(
                store.collection,
                data=[vector.tolist()],
                anns_field="vector",
                limit=candidates,
                filter=expression,
                output_fields=OUTPUT_FIELDS,
                search_params=search_params,
                consistency_level="Bounded",
            )[0]
        )

    operations: dict[str, Callable[[str, np.ndarray], object]] = {
        "raw": lambda q, v: raw(v),
        "tandem-dense": lambda q, v: store.dense_search(v, candidates, expression),
        "tandem-off": lambda q, v: off.search(q, top_k, CALLER),
        "tandem-auto": lambda q, v: auto.search(q, top_k, CALLER),
        "embed": lambda q, v: embedder.embed([q]),
    }
    names = list(operations)
    # Warm up every path (connections, the model, Milvus's caches).
    for query, vector in list(table.items())[:warmup]:
        for name in names:
            operations[name](query, vector)

    times: dict[str, list[float]] = {name: [] for name in names}
    same_top = 0
    acl_leaks = 0
    checked = 0
    cpu = common.cpu_snapshot()
    started = time.perf_counter()
    stopped_early = False
    for round_ in range(rounds):
        for number, (query, vector) in enumerate(table.items()):
            if time_limit is not None and time.perf_counter() - started > time_limit:
                stopped_early = True  # every path has the same queries: the comparison stays paired
                break
            # A fresh random order per query: in a fixed cyclic order one path would always run right
            # after the embedding, whose torch threads keep spinning for a while after it returns.
            order = random.Random(f"{round_}-{number}").sample(names, len(names))
            for name in order:
                t = time.perf_counter()
                outcome = operations[name](query, vector)
                times[name].append(time.perf_counter() - t)
                if round_ == 0 and name == "tandem-off":
                    passages = outcome.passages  # type: ignore[attr-defined]
                    acl_leaks += sum(1 for p in passages if p.access_labels)
                    expected = [hit["id"] for hit in raw(vector)[:top_k]]
                    same_top += [p.id for p in passages] == expected
                    checked += 1
        if stopped_early:
            break
    wall = time.perf_counter() - started
    summary = {name: common.summary_ms(values) for name, values in times.items()}
    raw_p50 = summary["raw"]["p50"]
    paired = {
        name: round(statistics.median(a / b for a, b in zip(times[name], times["raw"], strict=True)), 3)
        for name in ("tandem-dense", "tandem-off", "tandem-auto")
    }
    return {
        "keyword_mode_of_auto": auto.search(corpus.queries[0], top_k, CALLER).keyword,
        "keyword_label": keyword_label,
        "warmup_queries": min(warmup, len(table)),
        "queries": len(table),
        "rounds": rounds,
        "measured_per_path": len(times["raw"]),
        "stopped_by_time_limit": stopped_early,
        "top_k": top_k,
        "candidates_limit": candidates,
        "filter": expression,
        "latency_ms": summary,
        "overhead_vs_raw_p50": {
            name: round(summary[name]["p50"] / raw_p50 - 1, 3)
            for name in ("tandem-dense", "tandem-off", "tandem-auto")
        },
        "median_paired_ratio_vs_raw": paired,
        "tandem_off_top_k_equals_raw": f"{same_top}/{checked}",
        "acl_leaks": acl_leaks,
        "wall_seconds": round(wall, 1),
        "other_processes_cpu_seconds": common.other_cpu_seconds(cpu),
    }


@contextlib.contextmanager
def backend(name: str, workdir: Path) -> Iterator[tuple[str, int | None]]:
    if name == "lite":
        yield str(workdir / "bench.db"), None
    elif name == "server":
        with common.milvus_server(workdir / "milvus-data") as (uri, pid):
            yield uri, pid
    else:
        raise SystemExit(f"unknown backend {name!r}: lite or server")


def run_backend(
    name: str, corpus: common.EmbeddedCorpus, embedder: Any, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    print(f"[{name}] {args.vectors} vectors", file=sys.stderr, flush=True)
    memory = common.PeakRss().start()
    memory.watch("benchmark_process", os.getpid())
    with backend(name, workdir) as (uri, server_pid):
        if server_pid is not None:
            memory.watch("milvus_server", server_pid)
        store = ChunkStore(uri, COLLECTION)
        result: dict[str, Any] = {
            "backend": name,
            "server_version": store.server_version,
            "vectors": args.vectors,
        }
        result["build"] = build(store, corpus, args.vectors, args.keyword, args.write)
        probe = corpus.query_vectors[0]
        expression = f"({store.acl_filter(CALLER.groups)})"
        result["build"]["settle_seconds"] = round(
            settle(lambda: store.dense_search(probe, 40, expression), limit=args.settle_limit), 1
        )
        print(f"  build {result['build']}", file=sys.stderr, flush=True)
        result["search"] = measure(
            store,
            corpus,
            embedder,
            args.top_k,
            args.rounds,
            args.keyword,
            args.measure,
            warmup=args.warmup,
            time_limit=args.time_limit,
        )
        result["peak_rss_gib"] = memory.stop()
        if server_pid is None:
            store.close()
        if args.keep_data:
            print(f"  data kept in {workdir}", file=sys.stderr)
    print_result(result)
    return result


def print_result(result: dict[str, Any]) -> None:
    search = result["search"]
    print(f"\n== {result['backend']} (Milvus {result['server_version']}), {result['vectors']} vectors ==")
    print(f"build: {result['build']}")
    print(f"peak RSS (GiB): {result['peak_rss_gib']}")
    print(
        f"{search['queries']} queries x {search['rounds']} rounds"
        f"{' (stopped by --time-limit)' if search.get('stopped_by_time_limit') else ''}, "
        f"{search.get('measured_per_path')} timed per path, warm-up {search.get('warmup_queries')} queries, "
        f"top_k {search['top_k']}, limit "
        f"{search['candidates_limit']}, filter {search['filter']}; "
        f"auto ran as {search['keyword_mode_of_auto']}"
    )
    print(f"{'path':<14}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}  overhead p50 / paired median ratio")
    for name, row in search["latency_ms"].items():
        extra = ""
        if name in search["overhead_vs_raw_p50"]:
            overhead = search["overhead_vs_raw_p50"][name]
            extra = f"  {overhead:+.1%} / {search['median_paired_ratio_vs_raw'][name]:.3f}"
        print(f"{name:<14}{row['p50']:>10.2f}{row['p95']:>10.2f}{row['mean']:>10.2f}{extra}")
    print(
        f"tandem-off top-{search['top_k']} identical to raw: {search['tandem_off_top_k_equals_raw']}; "
        f"ACL leaks: {search['acl_leaks']}; "
        f"other processes used {search['other_processes_cpu_seconds']} CPU s "
        f"in {search['wall_seconds']} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="lite", help="comma-separated: lite, server (default: lite)")
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument(
        "--corpus", type=int, default=12_000, help="real passages embedded (the rest are copies)"
    )
    parser.add_argument("--queries", type=int, default=500, help="held-out query texts")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the queries")
    parser.add_argument("--measure", type=int, default=None, help="time only the first N queries")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="stop measuring after this many seconds (whole queries)",
    )
    parser.add_argument("--warmup", type=int, default=10, help="queries run on every path before timing")
    parser.add_argument(
        "--write",
        choices=("insert", "upsert"),
        default="insert",
        help="ChunkStore call that fills the collection (the Indexer inserts new documents)",
    )
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--keyword", default="auto", help="search.keyword the collection is created for")
    parser.add_argument("--settle-limit", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="5k vectors, 600 passages, 50 queries")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.vectors, args.corpus, args.queries, args.settle_limit = 5000, 600, 50, 30.0

    embedder = common.load_embedder()
    corpus = common.embedded_corpus(args.corpus, args.queries, embedder)
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-search-"))
    try:
        for name in args.backends.split(","):
            results.append(run_backend(name.strip(), corpus, embedder, args, workdir))
    finally:
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    common.write_json(
        args.json,
        {
            "benchmark": "knowledge_search",
            "command": " ".join(sys.argv),
            "machine": common.machine(),
            "corpus": {"passages": args.corpus, "queries": args.queries, "perturbation_sigma": SIGMA},
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
