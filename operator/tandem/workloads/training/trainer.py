"""LoRA training with PEFT: one loop, run directly or on each Ray Train worker.

Checkpoints (adapter weights, optimizer, scheduler, step) are written every `checkpointEverySteps` to
the run's checkpoint directory in the output store; a run that starts where one exists continues from
the newest, so a killed run resumes instead of starting over. Batches are ordered by the seed, so the
resumed run sees the same batches it would have seen.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.api.v1alpha1 import AdapterTrainingSpec

from .dataset import Message, tokenize

Progress = Callable[[dict[str, Any]], None]


class TrainingError(Exception):
    """Training cannot run as specified; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class TrainingOutcome:
    steps: int
    total_steps: int
    loss: float | None
    eval_loss: float | None
    tokens_per_second: float
    resumed_from: int  # 0 when the run started fresh
    seconds: float


def check_target_modules(model: Any, targets: list[str]) -> None:
    if targets == ["all-linear"]:
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}
        )
        raise TrainingError(
            "TargetModulesNotFound",
            f"lora.targetModules {missing} do not exist in the model; its linear modules are {linear} "
            "(or use all-linear)",
        )


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """The examples (indices into a dataset of `n`) that worker `rank` of `world` trains on.

    Every worker gets ceil(n / world) of them, so all run the same number of batches and none waits
    alone in an all-reduce: worker `rank` takes every `world`-th example from `rank`, and a shorter
    shard wraps around to its own start to fill up. Together the shards cover every example. A worker
    left without any example (fewer examples than workers) reuses examples of the whole dataset.
    """
    if n <= 0:
        return []
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    size = math.ceil(n / world)
    own = list(range(rank, n, world))
    if not own:
        return [(rank + i) % n for i in range(size)]
    return [own[i % len(own)] for i in range(size)]


def accumulation_groups(num_batches: int, accumulation: int) -> list[list[int]]:
    """The micro-batches (indices into an epoch's batches) of each optimizer step of one epoch.

    Groups of `accumulation` batches, counted from the start of the epoch; the last group holds what is
    left (maybe fewer), so an epoch takes ceil(num_batches / accumulation) steps and no group spans two
    epochs. The loss of each micro-batch is divided by the size of its group.
    """
    if accumulation < 1:
        raise ValueError(f"gradient accumulation must be at least 1, not {accumulation}")
    return [
        list(range(start, min(start + accumulation, num_batches)))
        for start in range(0, num_batches, accumulation)
    ]


def _collate(items: list[dict[str, list[int]]], pad: int) -> dict[str, Any]:
    import torch

    width = max(len(i["input_ids"]) for i in items)
    ids = [i["input_ids"] + [pad] * (width - len(i["input_ids"])) for i in items]
    labels = [i["labels"] + [-100] * (width - len(i["labels"])) for i in items]
    mask = [[1] * len(i["input_ids"]) + [0] * (width - len(i["input_ids"])) for i in items]
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def latest_checkpoint(directory: Path) -> Path | None:
    done = [p for p in directory.glob("step-*") if (p / "state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def train(
    spec: AdapterTrainingSpec,
    model_path: Path,
    train_examples: list[list[Message]],
    eval_examples: list[list[Message]],
    checkpoint_dir: Path,
    adapter_dir: Path,
    *,
    progress: Progress | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[Any], Any] | None = None,
) -> TrainingOutcome:
    """Train a LoRA adapter; rank 0 writes checkpoints and the adapter folder (`adapter_dir`)."""
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    emit = progress or (lambda event: None)
    t = spec.training
    torch.manual_seed(t.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    check_target_modules(model, spec.lora.target_modules)
    lora = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules="all-linear"
        if spec.lora.target_modules == ["all-linear"]
        else spec.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    trained = wrap_model(peft_model) if wrap_model else peft_model
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    data = [tokenize(m, tokenizer, t.max_seq_length) for m in train_examples]
    if not data:
        raise TrainingError("InvalidDataset", "no training examples (all of them were held out?)")
    shard = [data[i] for i in shard_indices(len(data), rank, world_size)]
    accumulation = t.gradient_accumulation_steps
    batches_per_epoch = math.ceil(len(shard) / t.batch_size)  # the same on every worker
    steps_per_epoch = len(accumulation_groups(batches_per_epoch, accumulation))
    total = t.max_steps or steps_per_epoch * t.epochs
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=t.learning_rate)
    scheduler = get_scheduler(
        t.scheduler, optimizer, num_warmup_steps=int(total * t.warmup_ratio), num_training_steps=total
    )

    step = 0
    resumed = latest_checkpoint(checkpoint_dir)
    if resumed is not None:
        set_peft_model_state_dict(peft_model, load_file(str(resumed / "adapter_model.safetensors")))
        optimizer.load_state_dict(torch.load(resumed / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(resumed / "scheduler.pt", weights_only=True))
        step = int(json.loads((resumed / "state.json").read_text())["step"])
        emit({"stage": "resumed", "step": step, "checkpoint": resumed.name})

    started, tokens, loss_value = time.perf_counter(), 0, None
    first_step = step
    trained.train()
    while step < total:
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        batches = _batches(len(shard), t.batch_size, t.seed, epoch)
        for group in accumulation_groups(len(batches), accumulation)[done_in_epoch:]:
            group_loss = 0.0
            for batch_index in group:
                batch = _collate([shard[i] for i in batches[batch_index]], pad)
                loss = trained(**batch).loss / len(group)  # a partial group is averaged over its size
                loss.backward()
                group_loss += float(loss.item())
                tokens += int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            loss_value = group_loss
            elapsed = time.perf_counter() - started
            rate = tokens / elapsed if elapsed else 0.0
            eta = (total - step) * elapsed / max(1, step - first_step)
            emit(
                {
                    "stage": "training",
                    "step": step,
                    "totalSteps": total,
                    "loss": round(loss_value, 4),
                    "tokensPerSecond": round(rate, 1),
                    "etaSeconds": int(eta),
                }
            )
            if rank == 0 and (step % t.checkpoint_every_steps == 0 or step == total):
                _save_checkpoint(peft_model, optimizer, scheduler, step, checkpoint_dir)
            if step >= total:
                break

    eval_loss = _evaluate(
        trained, [tokenize(m, tokenizer, t.max_seq_length) for m in eval_examples], pad, t.batch_size
    )
    if rank == 0:
        staging = adapter_dir.with_name(adapter_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        peft_model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
    elapsed = time.perf_counter() - started
    return TrainingOutcome(
        steps=step,
        total_steps=total,
        loss=loss_value,
        eval_loss=eval_loss,
        tokens_per_second=tokens / elapsed if elapsed else 0.0,
        resumed_from=first_step,
        seconds=elapsed,
    )


def _save_checkpoint(model: Any, optimizer: Any, scheduler: Any, step: int, directory: Path) -> None:
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    target = directory / f"step-{step}"
    staging = directory / f".step-{step}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(get_peft_model_state_dict(model), str(staging / "adapter_model.safetensors"))
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    (staging / "state.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # a checkpoint is either whole or absent
    for old in sorted(directory.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-2]:
        shutil.rmtree(old, ignore_errors=True)  # the newest two are enough to resume


def _evaluate(model: Any, data: list[dict[str, list[int]]], pad: int, batch_size: int) -> float | None:
    import torch

    if not data:
        return None
    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            losses.append(float(model(**_collate(data[i : i + batch_size], pad)).loss))
    model.train()
    return sum(losses) / len(losses)
