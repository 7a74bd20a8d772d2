"""RAFT examples drawn from a real KnowledgeBase collection: oracles found by retrieval, public only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.indexer import Indexer
from tandem.workloads.knowledge.sources import read_source
from tandem.workloads.knowledge.store import ChunkStore
from tandem.workloads.training import raft

pytestmark = pytest.mark.integration

FACTS = {
    "travel": "The travel desk code is QF-TRV-7.",
    "leave": "Every employee has 27 days of paid leave.",
    "cafe": "The cafeteria serves oat porridge on Tuesdays.",
    "expenses": "Receipts above 40 euros need a manager signature.",
    "badges": "Visitor badges are collected at the north gate.",
}


@pytest.fixture()
def store(tmp_path: Path, embedder: Embedder) -> ChunkStore:
    documents = [{"id": k, "title": k.title(), "text": v} for k, v in FACTS.items()]
    secret = {"id": "vault", "title": "Vault", "text": "The vault code is 4451."}
    spec = KnowledgeBaseSpec.model_validate(
        {
            "sources": [
                {"name": "pub", "inline": {"documents": documents}},
                {"name": "sec", "inline": {"documents": [secret]}, "accessLabels": ["security"]},
            ]
        }
    )
    store = ChunkStore(str(tmp_path / "kb.db"), "tandem_t__raft")
    Indexer(spec, store, embedder).run([read_source(s) for s in spec.sources])
    return store


def test_dataset_questions_get_retrieved_oracles(store: ChunkStore, embedder: Embedder) -> None:
    dataset = [
        [
            {"role": "user", "content": "What is the travel desk code?"},
            {"role": "assistant", "content": "QF-TRV-7."},
        ],
        [
            {"role": "user", "content": "How many days of paid leave?"},
            {"role": "assistant", "content": "27 days."},
        ],
    ]
    examples = raft.from_knowledge_base(
        store,
        embedder,
        dataset,
        questions="dataset",
        template="",
        distractors=2,
        oracle_fraction=1.0,
        max_examples=10,
        seed=3,
    )
    assert len(examples) == 2
    for example, fact in zip(examples, ["QF-TRV-7", "27 days"], strict=True):
        assert example.oracle_position is not None
        context = example.messages[1]["content"]
        cited = context.split(f"[{example.oracle_position}] ")[1].split("</passage>")[0]
        assert fact in cited  # the passage the answer cites is the one holding the fact
        assert example.messages[2]["content"].endswith(f"[{example.oracle_position}]")


def test_generated_questions_use_public_passages_only(store: ChunkStore, embedder: Embedder) -> None:
    examples = raft.from_knowledge_base(
        store,
        embedder,
        [],
        questions="generate",
        template="What does '{title}' say?",
        distractors=3,
        oracle_fraction=0.6,
        max_examples=10,
        seed=1,
    )
    assert len(examples) == 5 and sum(e.oracle_position is not None for e in examples) == 3
    assert all("4451" not in m["content"] for e in examples for m in e.messages)  # labelled chunk never used
