#!/usr/bin/env python3
"""ACL'd search latency with and without the caller's groups, label-set keys vs the label array
(issue 15, item 13), on milvus-lite and the Milvus 2.3.5 server, side by side in one run.

Per backend, two collections of the same N rows are built through `ChunkStore` (same vectors, same
labels, same seed):

* key: the current schema; Tandem filters a caller with groups on `acl_key`
  (`public == true or acl_key in [...]`);
* array: the schema Tandem created before `acl_key` (the same fields minus it), which Tandem still
  searches with `public == true or array_contains_any(access_labels, [...])`.

Rows are knowledge_search.py's (real all-MiniLM-L6-v2 embeddings of text, perturbed copies past the
corpus size); one row in four is labelled, cycling through LABEL_SETS; the caller's groups
("eng", "hr") match four of the eight sets. For every query the four paths, {key, array} x {no groups,
groups}, run in a fresh random order, each a `Retriever.search` with `search.keyword: off` and top_k 10
(the query's vector comes from a table: the embedding is not timed). A caller without groups gets
`public == true` on both collections.

Checks, not timed: no passage a caller may not see (ACL leaks); on the key collection the key filter and
the array filter select the same rows (count(*) of each, and of each without the other: 0); and, for
information, whether they return the same top-40 ids for the first 10 queries (the same index and mask,
but a server compacting in the background can answer two searches differently).

    .venv/bin/python benchmarks/acl_search.py --quick                          # lite, 5k rows
    .venv/bin/python benchmarks/acl_search.py --backends lite --rows 100000
    scripts/isolated.sh .venv/bin/python benchmarks/acl_search.py --backends lite,server --rows 100000

The server backend refuses to start unless the process sees only loopback (`scripts/isolated.sh`): the
Milvus standalone server binds every interface.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import knowledge_search
from tandem.api.v1alpha1.knowledgebase import Search, VectorIndex
from tandem.workloads.knowledge.retrieval import Principal, Retriever
from tandem.workloads.knowledge.store import ChunkStore, array_acl_filter

LABEL_SETS = [
    ["eng"],
    ["finance"],
    ["hr", "finance"],
    ["legal"],
    ["security"],
    ["eng", "security"],
    ["sales"],
    ["legal", "hr"],
]
GROUPS = ("eng", "hr")
LABELLED_EVERY = 4
BATCH = 2000
TOP_K = 10
PATHS = [("key", "none"), ("key", "groups"), ("array", "none"), ("array", "groups")]


def relabel(rows: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    for i, row in enumerate(rows, start=start):
        labels = LABEL_SETS[(i // LABELLED_EVERY) % len(LABEL_SETS)] if i % LABELLED_EVERY == 3 else []
        row["access_labels"], row["public"] = list(labels), not labels
    return rows


@contextlib.contextmanager
def schema_without_acl_key(store: ChunkStore) -> Iterator[None]:
    """`ensure` creates the schema Tandem created before acl_key: the same fields without it."""
    create_schema = store.client.create_schema

    def older(**kwargs: Any) -> Any:
        schema = create_schema(**kwargs)
        add_field = schema.add_field
        schema.add_field = lambda name, *a, **k: schema if name == "acl_key" else add_field(name, *a, **k)
        return schema

    store.client.create_schema = older
    try:
        yield
    finally:
        del store.client.create_schema


def build(
    uri: str, collection: str, corpus: common.EmbeddedCorpus, count: int, keyed: bool
) -> tuple[ChunkStore, float]:
    """The collection filled and indexed; the seconds that took."""
    creator = ChunkStore(uri, collection)
    creator.drop()
    index = VectorIndex(type="HNSW", metric="COSINE")
    dimension = corpus.vectors.shape[1]
    if keyed:
        creator.ensure(dimension, index, "off")
    else:
        with schema_without_acl_key(creator):
            creator.ensure(dimension, index, "off")
    store = ChunkStore(uri, collection)  # reads the collection as it is, as a later ingest would
    store.ensure(dimension, index, "off")
    assert store.label_keyed == keyed
    rng = np.random.default_rng(common.SEED)
    started = time.perf_counter()
    for offset in range(0, count, BATCH):
        stop = min(offset + BATCH, count)
        store.insert(relabel(knowledge_search.rows(corpus, offset, stop, rng), offset))
        if (offset // BATCH) % 10 == 9:
            print(f"  {collection}: inserted {stop}/{count}", file=sys.stderr, flush=True)
    store.flush()
    store.documents()  # what the Indexer does after its writes: scan, then make the label sets exact
    store.prune_label_sets()
    inserted = time.perf_counter() - started
    progress = knowledge_search.index_progress(store)
    while progress[0] < progress[1] or progress[1] < count:
        time.sleep(2)
        progress = knowledge_search.index_progress(store)
    print(f"  {collection}: {count} rows in {inserted:.1f} s, index {progress}", file=sys.stderr, flush=True)
    return store, round(time.perf_counter() - started, 1)


def measure(
    stores: dict[str, ChunkStore], corpus: common.EmbeddedCorpus, queries: int, time_limit: float
) -> dict[str, Any]:
    table = dict(list(zip(corpus.queries, corpus.query_vectors, strict=True))[:queries])
    lookup = knowledge_search.LookupEmbedder(table, corpus.vectors.shape[1])
    retrievers = {name: Retriever(s, lookup, Search(keyword="off")) for name, s in stores.items()}  # type: ignore[arg-type]
    callers = {"none": Principal("t"), "groups": Principal("t", GROUPS)}
    filters = {f"{e}/{g}": stores[e].acl_filter(callers[g].groups) for e, g in PATHS}

    def run(path: tuple[str, str], query: str) -> list[Any]:
        encoding, groups = path
        return retrievers[encoding].search(query, TOP_K, callers[groups]).passages

    for query in list(table)[:3]:  # warm-up: connections, caches, the label sets
        for path in PATHS:
            run(path, query)
    times: dict[str, list[float]] = {f"{e}/{g}": [] for e, g in PATHS}
    leaks = 0
    cpu = common.cpu_snapshot()
    started = time.perf_counter()
    for number, query in enumerate(table):
        if time.perf_counter() - started > time_limit:
            break  # at a query boundary: every path has the same queries
        for path in random.Random(number).sample(PATHS, len(PATHS)):
            t = time.perf_counter()
            passages = run(path, query)
            times["/".join(path)].append(time.perf_counter() - t)
            wanted = set(callers[path[1]].groups)
            leaks += sum(1 for p in passages if p.access_labels and not set(p.access_labels) & wanted)
    wall = time.perf_counter() - started
    other = common.other_cpu_seconds(cpu)

    # The two encodings select the same chunks: on the key collection, key filter vs array filter.
    key_store = stores["key"]

    def count(expression: str) -> int:
        rows = key_store.client.query(
            key_store.collection, filter=expression, output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])

    by_key, by_array = filters["key/groups"], array_acl_filter(GROUPS)
    selected = {
        "key_filter": count(by_key),
        "array_filter": count(by_array),
        "key_not_array": count(f"({by_key}) and not ({by_array})"),
        "array_not_key": count(f"({by_array}) and not ({by_key})"),
        "all_rows": key_store.count(),
    }
    same = 0
    checked = list(table.values())[:10]
    for vector in checked:
        top_by_key = [p.id for p in key_store.dense_search(vector, 40, by_key)]
        top_by_array = [p.id for p in key_store.dense_search(vector, 40, by_array)]
        same += top_by_key == top_by_array
    latency = {name: common.summary_ms(values) for name, values in times.items()}
    return {
        "filters": filters,
        "latency_ms": latency,
        "groups_over_none_p50": {
            e: round(latency[f"{e}/groups"]["p50"] / latency[f"{e}/none"]["p50"], 2) for e in ("key", "array")
        },
        "paired_median_ratio_groups_over_none": {
            e: round(
                statistics.median(
                    a / b for a, b in zip(times[f"{e}/groups"], times[f"{e}/none"], strict=True)
                ),
                2,
            )
            for e in ("key", "array")
        },
        "array_over_key_with_groups_p50": round(
            latency["array/groups"]["p50"] / latency["key/groups"]["p50"], 1
        ),
        "acl_leaks": leaks,
        "rows_selected_with_groups": selected,
        "key_and_array_filter_same_top40": f"{same}/{len(checked)}",
        "queries_timed": len(times["key/none"]),
        "wall_seconds": round(wall, 1),
        "other_processes_cpu_seconds": other,
    }


@contextlib.contextmanager
def backend(name: str, workdir: Path) -> Iterator[str]:
    if name == "lite":
        yield str(workdir / "acl.db")
    elif name == "server":
        with common.milvus_server(workdir / "milvus-data") as (uri, _):
            yield uri
    else:
        raise SystemExit(f"unknown backend {name!r}: lite or server")


def run_backend(
    name: str, corpus: common.EmbeddedCorpus, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    print(f"[{name}] {args.rows} rows per collection", file=sys.stderr, flush=True)
    with backend(name, workdir) as uri:
        built = {
            "key": build(uri, "tandem_bench__acl_key", corpus, args.rows, keyed=True),
            "array": build(uri, "tandem_bench__acl_array", corpus, args.rows, keyed=False),
        }
        stores = {encoding: store for encoding, (store, _) in built.items()}
        probe = corpus.query_vectors[0]
        settled = {}
        for encoding, store in stores.items():

            def search(store: ChunkStore = store) -> object:
                return store.dense_search(probe, 40, "public == true")

            settled[encoding] = round(knowledge_search.settle(search, limit=args.settle_limit), 1)
        result: dict[str, Any] = {
            "backend": name,
            "server_version": stores["key"].server_version,
            "rows_per_collection": args.rows,
            "build_seconds": {encoding: seconds for encoding, (_, seconds) in built.items()},
            "settle_seconds": settled,
            "label_sets": len(stores["key"].label_sets(fresh=True) or {}),
        }
        result |= measure(stores, corpus, args.queries, args.time_limit)
        if name == "lite":
            stores["key"].close()  # also the array store's: one milvus-lite server per data directory
    print_result(result)
    return result


def print_result(r: dict[str, Any]) -> None:
    print(
        f"\n== {r['backend']} (Milvus {r['server_version']}), {r['rows_per_collection']} rows per "
        f"collection, {r['label_sets']} label sets, {r['queries_timed']} queries per path =="
    )
    print(f"build s {r['build_seconds']}, settled s {r['settle_seconds']}")
    print(f"{'encoding':<10}{'caller':<10}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for name, row in r["latency_ms"].items():
        encoding, caller = name.split("/")
        print(f"{encoding:<10}{caller:<10}{row['p50']:>10.2f}{row['p95']:>10.2f}{row['mean']:>10.2f}")
    print(
        f"groups / no groups, p50: {r['groups_over_none_p50']} (paired median "
        f"{r['paired_median_ratio_groups_over_none']}); array / key with groups: "
        f"{r['array_over_key_with_groups_p50']}x"
    )
    print(
        f"rows selected with groups {r['rows_selected_with_groups']}\n"
        f"ACL leaks: {r['acl_leaks']}; key and array filter same top-40: "
        f"{r['key_and_array_filter_same_top40']}; other processes used "
        f"{r['other_processes_cpu_seconds']} CPU s in {r['wall_seconds']} s"
    )
    for name, expression in r["filters"].items():
        print(f"  {name}: {expression}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="lite", help="comma-separated: lite, server (default: lite)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in each of the two collections")
    parser.add_argument(
        "--corpus", type=int, default=2000, help="real passages embedded (the rest are copies)"
    )
    parser.add_argument("--queries", type=int, default=100, help="held-out queries (at most)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds of timing per backend")
    parser.add_argument("--settle-limit", type=float, default=240.0)
    parser.add_argument("--quick", action="store_true", help="5k rows, 600 passages, 30 queries")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.corpus, args.queries, args.settle_limit = 5000, 600, 30, 30.0

    corpus = common.embedded_corpus(args.corpus, args.queries)
    workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-acl-"))
    results = []
    try:
        for name in args.backends.split(","):
            results.append(run_backend(name.strip(), corpus, args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    common.write_json(
        args.json,
        {
            "benchmark": "acl_search",
            "command": " ".join(sys.argv),
            "machine": common.machine(),
            "corpus": {"passages": args.corpus, "queries": args.queries},
            "label_sets": LABEL_SETS,
            "caller_groups": list(GROUPS),
            "labelled_share": 1 / LABELLED_EVERY,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
