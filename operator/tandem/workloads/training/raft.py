"""RAFT examples: a question, its oracle passage hidden among distractors, and an answer citing it.

Training on these teaches an adapter to answer from retrieved context, to cite the passage it used by
its number, and to ignore passages that do not help. A share (1 - oracleFraction) of examples holds
distractors only: there the answer must come from what the model learnt, and cites nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tandem.workloads.prompting import SYSTEM, user_turn

from .dataset import Message


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    oracle: Passage


@dataclass(frozen=True)
class RaftExample:
    messages: list[Message]
    oracle_position: int | None  # 1-based position of the oracle among the passages, None if withheld
    passage_ids: list[str]


def build(
    questions: list[Question], pool: list[Passage], distractors: int, oracle_fraction: float, seed: int
) -> list[RaftExample]:
    rng = random.Random(seed)
    with_oracle = set(rng.sample(range(len(questions)), round(len(questions) * oracle_fraction)))
    examples = []
    for i, q in enumerate(questions):
        others = [p for p in pool if p.id != q.oracle.id]
        chosen = rng.sample(others, min(distractors, len(others)))
        position: int | None = None
        if i in with_oracle:
            position = rng.randint(1, len(chosen) + 1)
            chosen.insert(position - 1, q.oracle)
        answer = f"{q.answer} [{position}]" if position else q.answer
        user = user_turn(chosen, q.question)
        examples.append(
            RaftExample(
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": answer},
                ],
                oracle_position=position,
                passage_ids=[p.id for p in chosen],
            )
        )
    return examples


def generated_questions(pool: list[Passage], template: str, limit: int) -> list[Question]:
    """Questions made from passages by the template; the answer is the passage's first sentence."""
    out = []
    for passage in pool[:limit]:
        first = passage.text.strip().split(". ")[0].rstrip(".") + "."
        question = template.format(title=passage.title, text=passage.text[:200])
        out.append(Question(question=question, answer=first, oracle=passage))
    return out


def from_knowledge_base(
    store: Any,
    embedder: Any,
    dataset: list[list[Message]],
    *,
    questions: str,
    template: str,
    distractors: int,
    oracle_fraction: float,
    max_examples: int,
    seed: int,
) -> list[RaftExample]:
    """RAFT examples from a KnowledgeBase's public chunks (labelled chunks never enter an adapter's weights,
    which every tenant of an endpoint can query).

    `questions == "dataset"`: each dataset example's last user turn is a question and its answer the target;
    its oracle is the passage dense search ranks first. `"generate"`: questions come from the passages.
    """
    from tandem.workloads.knowledge.retrieval import Principal, Retriever

    rows = store.public_passages()
    pool = [Passage(str(r["id"]), r["title"], r["text"]) for r in rows]
    if len(pool) < distractors + 1:
        raise ValueError(
            f"the KnowledgeBase has {len(pool)} public passages; RAFT needs at least {distractors + 1}"
        )
    if questions == "generate":
        chosen = generated_questions(pool, template, max_examples)
    else:
        retriever = Retriever(store, embedder)
        chosen = []
        for messages in dataset[:max_examples]:
            question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
            found = retriever.search(question, 1, Principal("raft"), consistency="Strong").passages
            if found:
                top = found[0]
                chosen.append(
                    Question(question, messages[-1]["content"], Passage(top.id, top.title, top.text))
                )
    return build(chosen, pool, distractors, oracle_fraction, seed)
