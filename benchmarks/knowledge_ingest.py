#!/usr/bin/env python3
"""Ingest throughput and incremental re-index cost of a KnowledgeBase, on milvus-lite (or a server).

A directory of generated plain-text documents (paragraphs of real text, see common.py) is indexed with
the KnowledgeBase defaults (all-MiniLM-L6-v2, structure chunking: 200-token windows, 32 overlap). Every
round, interleaved (the order of the first two alternates between rounds):

1. tandem-full: `read_source` + `Indexer.run` into a new, empty collection (parse, chunk, embed, upsert,
   the store scans before and after): what `tandem ingest` does;
2. raw-encode: sentence-transformers `model.encode` (same model object, batch size 32, normalised) on
   exactly the chunk texts Tandem produces that round (chunked beforehand, untimed): the embedding floor;
3. tandem-reindex-1pct: 1 % of the documents get a paragraph replaced, then `read_source` +
   `Indexer.run` again over the same collection (only those documents are re-embedded);
4. tandem-reindex-unchanged: the same again with nothing changed.

Targets: tandem-full chunks/s >= 0.9 x raw-encode; tandem-reindex-1pct <= 3 % of tandem-full.

    .venv/bin/python benchmarks/knowledge_ingest.py --quick
    .venv/bin/python benchmarks/knowledge_ingest.py --json benchmarks/results/knowledge-ingest.json
    .venv/bin/python benchmarks/knowledge_ingest.py --docs 1000 --rounds 3   # ~3700 chunks a round
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.workloads.knowledge.chunking import chunk
from tandem.workloads.knowledge.indexer import Indexer, IngestResult
from tandem.workloads.knowledge.parsing import parse
from tandem.workloads.knowledge.sources import read_source
from tandem.workloads.knowledge.store import ChunkStore

COLLECTION = "tandem_bench__ingest"
PARAGRAPH_WORDS = 80


def write_documents(directory: Path, count: int, words: int) -> list[Path]:
    """`count` .txt documents of about `words` words each, paragraphs of real text."""
    per_doc = max(1, round(words / PARAGRAPH_WORDS))
    texts = common.passages(count * per_doc + count)  # the spares replace paragraphs later
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"doc{i:05}.txt"
        path.write_text("\n\n".join(texts[i * per_doc : (i + 1) * per_doc]) + "\n")
        paths.append(path)
    spares = texts[count * per_doc :]
    (directory.parent / "spares.txt").write_text("\n".join(spares))
    return paths


def change_documents(paths: list[Path], spares: list[str], fraction: float, round_: int) -> list[Path]:
    """Replace the first paragraph of `fraction` of the documents (others each round)."""
    count = max(1, round(len(paths) * fraction))
    stride = max(1, len(paths) // count)
    changed = []
    for n in range(count):
        path = paths[(n * stride + round_ * 7) % len(paths)]
        paragraphs = path.read_text().split("\n\n")
        paragraphs[0] = spares[(round_ * count + n) % len(spares)]
        path.write_text("\n\n".join(paragraphs))
        changed.append(path)
    return changed


def spec_for(directory: Path) -> KnowledgeBaseSpec:
    return KnowledgeBaseSpec.model_validate(
        {"sources": [{"name": "bench", "directory": {"path": str(directory)}}]}
    )


def chunk_texts(spec: KnowledgeBaseSpec, embedder: Any) -> list[str]:
    texts = []
    for source in spec.sources:
        for doc in read_source(source).documents:
            texts += [c.text for c in chunk(parse(doc), spec.chunking, embedder.token_offsets)]
    return texts


def tandem_ingest(spec: KnowledgeBaseSpec, store: ChunkStore, embedder: Any) -> tuple[float, IngestResult]:
    started = time.perf_counter()
    reads = [read_source(source) for source in spec.sources]
    result = Indexer(spec, store, embedder).run(reads)
    return time.perf_counter() - started, result


def raw_encode(embedder: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    embedder.model.encode(
        texts,
        batch_size=embedder.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--words", type=int, default=480, help="words per document (about 3.6 chunks)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of documents changed")
    parser.add_argument("--uri", default=None, help="Milvus URI (default: a milvus-lite file per round)")
    parser.add_argument("--quick", action="store_true", help="20 documents, 1 round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.docs, args.rounds = 20, 1
    if args.uri and not args.uri.endswith(".db"):
        from tests.integration.milvus_server import network_isolation_problem

        if network_isolation_problem():
            raise SystemExit("a Milvus server URI: run under scripts/isolated.sh (see knowledge_search.py)")

    embedder = common.load_embedder()
    workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-ingest-"))
    try:
        docs = workdir / "docs"
        paths = write_documents(docs, args.docs, args.words)
        spares = (workdir / "spares.txt").read_text().splitlines()
        spec = spec_for(docs)
        texts = chunk_texts(spec, embedder)
        print(f"{len(paths)} documents, {len(texts)} chunks", file=sys.stderr, flush=True)
        embedder.embed(texts[:64])  # warm up the model
        raw_encode(embedder, texts[:64])

        rounds: list[dict[str, Any]] = []
        cpu = common.cpu_snapshot()
        for round_ in range(args.rounds):
            uri = args.uri or str(workdir / f"round{round_}.db")
            store = ChunkStore(uri, COLLECTION)
            store.drop()
            row: dict[str, Any] = {"round": round_}
            # Earlier rounds changed some documents: both sides get this round's chunks (untimed).
            texts = chunk_texts(spec, embedder)
            order = ["tandem", "raw"] if round_ % 2 == 0 else ["raw", "tandem"]
            for name in order:
                if name == "tandem":
                    seconds, result = tandem_ingest(spec, store, embedder)
                    assert result.chunks == len(texts) == result.embedded_chunks, (result, len(texts))
                    row["tandem_full_s"] = round(seconds, 2)
                else:
                    row["raw_encode_s"] = round(raw_encode(embedder, texts), 2)
            changed = change_documents(paths, spares, args.changed, round_)
            seconds, result = tandem_ingest(spec, store, embedder)
            row["reindex_changed_docs"] = len(changed)
            row["reindex_embedded_chunks"] = result.embedded_chunks
            row["reindex_s"] = round(seconds, 3)
            assert result.updated == len(changed), result
            seconds, result = tandem_ingest(spec, store, embedder)
            row["unchanged_s"] = round(seconds, 3)
            assert result.embedded_chunks == 0, result
            row["chunks"] = len(texts)
            row["tandem_chunks_per_s"] = round(len(texts) / row["tandem_full_s"], 2)
            row["raw_chunks_per_s"] = round(len(texts) / row["raw_encode_s"], 2)
            row["throughput_ratio"] = round(row["raw_encode_s"] / row["tandem_full_s"], 3)
            row["reindex_fraction_of_full"] = round(row["reindex_s"] / row["tandem_full_s"], 4)
            print(row, file=sys.stderr, flush=True)
            rounds.append(row)
            if not store.uri.endswith(".db"):
                store.drop()
            store.close() if store.embedded else store.client.close()
        other = common.other_cpu_seconds(cpu)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def median(key: str) -> float:
        return round(float(statistics.median(r[key] for r in rounds)), 4)

    summary = {
        key: median(key)
        for key in (
            "tandem_chunks_per_s",
            "raw_chunks_per_s",
            "throughput_ratio",
            "tandem_full_s",
            "reindex_s",
            "unchanged_s",
            "reindex_fraction_of_full",
        )
    }
    print(f"\n{args.docs} documents, {len(texts)} chunks of <= 200 tokens, {args.rounds} rounds (medians)")
    print(f"other processes used {other} CPU s during the run")
    print(
        f"{'round':<6}{'tandem c/s':>11}{'raw c/s':>9}{'ratio':>7}{'full s':>8}"
        f"{'1% s':>8}{'1% emb':>7}{'same s':>8}"
    )
    for r in rounds:
        print(
            f"{r['round']:<6}{r['tandem_chunks_per_s']:>11.2f}{r['raw_chunks_per_s']:>9.2f}"
            f"{r['throughput_ratio']:>7.3f}{r['tandem_full_s']:>8.1f}{r['reindex_s']:>8.2f}"
            f"{r['reindex_embedded_chunks']:>7}{r['unchanged_s']:>8.2f}"
        )
    print(
        f"median: Tandem {summary['tandem_chunks_per_s']} chunks/s vs raw encode "
        f"{summary['raw_chunks_per_s']} "
        f"chunks/s = {summary['throughput_ratio']:.3f}x (target >= 0.9); re-index of "
        f"{rounds[0]['reindex_changed_docs']} changed documents {summary['reindex_s']} s = "
        f"{summary['reindex_fraction_of_full']:.2%} of a full index (target <= 3%); nothing changed "
        f"{summary['unchanged_s']} s"
    )
    common.write_json(
        args.json,
        {
            "benchmark": "knowledge_ingest",
            "command": " ".join(sys.argv),
            "machine": common.machine(),
            "documents": args.docs,
            "chunks": len(texts),
            "other_processes_cpu_seconds": other,
            "rounds": rounds,
            "median": summary,
        },
    )


if __name__ == "__main__":
    main()
