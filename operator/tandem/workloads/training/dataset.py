"""Training examples from JSONL, validated line by line, as chat messages ready for the chat template.

Two forms: `{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}` (chat) and
`{"prompt": ..., "completion": ...}` (instruction). A bad line is reported with its number; the
dataset's `invalidLines` policy decides whether the run fails or skips it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Literal

ROLES = {"system", "user", "assistant"}

Message = dict[str, str]


class DatasetError(Exception):
    """The dataset cannot be used; the message names the line and the problem."""

    reason = "InvalidDataset"


@dataclass
class Examples:
    train: list[list[Message]]
    eval: list[list[Message]]
    skipped: list[str] = field(default_factory=list)  # "line 7: ..." for skipped lines


def _validate(record: Any, form: Literal["chat", "instruction"]) -> list[Message]:
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if form == "instruction":
        prompt, completion = record.get("prompt"), record.get("completion")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError('missing "prompt" (a non-empty string)')
        if not isinstance(completion, str) or not completion.strip():
            raise ValueError('missing "completion" (a non-empty string)')
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        if isinstance(record.get("system"), str):
            messages.insert(0, {"role": "system", "content": record["system"]})
        return messages
    raw = record.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValueError('missing "messages" (a non-empty list)')
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {sorted(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{i}].content must be a string")
    if raw[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's (the answer to learn)")
    return [{"role": m["role"], "content": m["content"]} for m in raw]


def parse_jsonl(
    text: str, form: Literal["chat", "instruction"], invalid_lines: Literal["fail", "skip"]
) -> tuple[list[list[Message]], list[str]]:
    examples, skipped = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            examples.append(_validate(json.loads(line), form))
        except (ValueError, json.JSONDecodeError) as e:
            problem = f"line {number}: {e}"
            if invalid_lines == "fail":
                raise DatasetError(f"{problem} (set dataset.invalidLines: skip to skip such lines)") from None
            skipped.append(problem)
    if not examples:
        raise DatasetError("the dataset holds no valid example")
    return examples, skipped


def split(
    examples: list[list[Message]], eval_fraction: float, seed: int
) -> tuple[list[list[Message]], list[list[Message]]]:
    """Deterministic train/eval split; at least one training example, eval only when there are enough."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = int(len(examples) * eval_fraction) if len(examples) >= 10 else 0
    eval_ids = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in eval_ids], [examples[i] for i in sorted(eval_ids)]


def tokenize(messages: list[Message], tokenizer: Any, max_length: int) -> dict[str, list[int]]:
    """Token ids with labels only on the final assistant answer (the loss ignores the prompt)."""
    prompt_ids = list(
        tokenizer.apply_chat_template(
            messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    )
    full_ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise DatasetError(
            "the chat template does not extend the prompt with the answer; cannot mask the prompt"
        )
    full_ids = full_ids[:max_length]
    labels = [-100] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids) :]
    return {"input_ids": full_ids, "labels": labels[: len(full_ids)]}
