"""Training data: JSONL validation by line, deterministic splits, RAFT proportions and citations."""

from __future__ import annotations

import json

import pytest

from tandem.workloads.training.dataset import DatasetError, parse_jsonl, split
from tandem.workloads.training.raft import Passage, Question, build, generated_questions

CHAT = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})


def test_bad_lines_are_named_by_number() -> None:
    text = "\n".join([CHAT, "{not json", json.dumps({"messages": [{"role": "user", "content": "q"}]}), CHAT])
    with pytest.raises(DatasetError, match=r"line 2: .*invalidLines: skip"):
        parse_jsonl(text, "chat", "fail")
    examples, skipped = parse_jsonl(text, "chat", "skip")
    assert len(examples) == 2
    assert (
        skipped[0].startswith("line 2:")
        and skipped[1] == "line 3: the last message must be the assistant's (the answer to learn)"
    )


def test_instruction_form_and_empty_dataset() -> None:
    examples, _ = parse_jsonl(
        json.dumps({"prompt": "p", "completion": "c", "system": "s"}), "instruction", "fail"
    )
    assert [m["role"] for m in examples[0]] == ["system", "user", "assistant"]
    with pytest.raises(DatasetError, match='missing "completion"'):
        parse_jsonl(json.dumps({"prompt": "p"}), "instruction", "fail")
    with pytest.raises(DatasetError, match="no valid example"):
        parse_jsonl("\n\n", "chat", "skip")


def test_split_is_deterministic_and_keeps_training_data() -> None:
    examples = [[{"role": "assistant", "content": str(i)}] for i in range(20)]
    train, evaluation = split(examples, 0.2, seed=1)
    assert (len(train), len(evaluation)) == (16, 4)
    assert split(examples, 0.2, seed=1) == (train, evaluation)
    assert split(examples[:5], 0.2, seed=1) == (examples[:5], [])  # too few to hold any out


def test_raft_proportions_and_citations() -> None:
    pool = [Passage(f"p{i}", f"Title {i}", f"Fact number {i}. More text.") for i in range(30)]
    questions = [Question(f"What is fact {i}?", f"Fact {i}.", pool[i]) for i in range(20)]
    examples = build(questions, pool, distractors=3, oracle_fraction=0.75, seed=5)
    with_oracle = [e for e in examples if e.oracle_position is not None]
    assert len(with_oracle) == 15  # 75 % of 20
    for question, example in zip(questions, examples, strict=True):
        answer = example.messages[-1]["content"]
        if example.oracle_position is None:
            assert question.oracle.id not in example.passage_ids and "[" not in answer
            assert len(example.passage_ids) == 3
        else:
            assert len(example.passage_ids) == 4
            assert example.passage_ids[example.oracle_position - 1] == question.oracle.id
            assert answer.endswith(f"[{example.oracle_position}]")  # the citation points at the oracle
            assert f"[{example.oracle_position}] {question.oracle.title}" in example.messages[1]["content"]
        assert "<passage>" in example.messages[1]["content"]  # retrieved text is delimited as data


def test_generated_questions_use_the_template() -> None:
    pool = [Passage("a", "Travel", "Trains for trips under 600 km. Planes otherwise.")]
    [q] = generated_questions(pool, "What does '{title}' say?", limit=5)
    assert (q.question, q.answer, q.oracle.id) == (
        "What does 'Travel' say?",
        "Trains for trips under 600 km.",
        "a",
    )
