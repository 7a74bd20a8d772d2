"""The LoRA trainer's schedule: accumulation groups per epoch, equal shards per worker, CPUs per worker."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tandem.api.v1alpha1 import AdapterTrainingSpec
from tandem.workloads.train import worker_cpus
from tandem.workloads.training.trainer import accumulation_groups, shard_indices


def test_accumulation_groups_restart_every_epoch_and_keep_the_partial_group() -> None:
    assert accumulation_groups(5, 2) == [[0, 1], [2, 3], [4]]  # 3 optimizer steps, the last over 1 batch
    assert accumulation_groups(4, 2) == [[0, 1], [2, 3]]
    assert accumulation_groups(3, 1) == [[0], [1], [2]]
    assert accumulation_groups(2, 8) == [[0, 1]]
    assert accumulation_groups(0, 2) == []
    for batches in range(1, 40):
        for accumulation in range(1, 9):
            groups = accumulation_groups(batches, accumulation)
            assert len(groups) == math.ceil(batches / accumulation)
            assert [i for g in groups for i in g] == list(range(batches))  # each batch once, in order
            assert all(len(g) == accumulation for g in groups[:-1]) and 1 <= len(groups[-1]) <= accumulation
    with pytest.raises(ValueError):
        accumulation_groups(5, 0)


@pytest.mark.parametrize("n,world", [(1, 1), (5, 2), (9, 4), (10, 3), (7, 7), (3, 5), (100, 8), (1, 3)])
def test_shards_are_equal_wrap_around_and_cover_every_example(n: int, world: int) -> None:
    shards = [shard_indices(n, rank, world) for rank in range(world)]
    assert {len(s) for s in shards} == {math.ceil(n / world)}  # every worker runs the same batches
    assert set().union(*shards) == set(range(n))
    for rank, shard in enumerate(shards):
        own = list(range(rank, n, world))
        if own:  # its own examples first, then its own again from the start
            assert shard == [own[i % len(own)] for i in range(len(shard))]
        else:
            assert all(0 <= i < n for i in shard)


def test_shard_wraps_to_its_own_start() -> None:
    assert shard_indices(5, 0, 2) == [0, 2, 4]
    assert shard_indices(5, 1, 2) == [1, 3, 1]
    assert shard_indices(10, 2, 4) == [2, 6, 2]
    assert shard_indices(0, 0, 2) == []
    with pytest.raises(ValueError):
        shard_indices(5, 2, 2)


def test_worker_cpus_follow_the_spec_within_what_ray_has(monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_cpus(2, 1, 2.0) == 2  # a 2-core machine trains on both cores, not on one
    assert worker_cpus(4, 1, 2.0) == 2  # more than the local Ray has would never be scheduled
    assert worker_cpus(4, 2, 16.0) == 4
    assert worker_cpus(4, 3, 4.0) == 1
    assert worker_cpus(8, 2, None) == 8
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert worker_cpus(None, 2, None) == 3  # no figure in the spec: the cores shared among workers
    assert worker_cpus(None, 4, 8.0) == 1
    assert worker_cpus(None, 8, None) == 1  # at least one


# The training loop itself, on a tiny random model: which micro-batches make each optimizer step, and
# what each micro-batch's loss is scaled by (the gradient reaching it).


class _Tokenizer:
    pad_token_id = 0
    eos_token_id = 1

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> dict[str, list[int]]:
        ids: list[int] = []
        for m in messages:  # a turn: its start, its text, its end
            ids += [2, *(3 + ord(c) % 60 for c in m["content"]), 1]
        if kwargs.get("add_generation_prompt"):
            ids.append(2)
        return {"input_ids": ids}

    def save_pretrained(self, path: str) -> None:
        pass


def _run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    examples: int,
    training: dict[str, Any],
    rank: int = 0,
    world: int = 1,
) -> tuple[list[list[float]], Any]:
    """Train; the gradient reaching each micro-batch's loss, grouped by optimizer step."""
    import torch
    import transformers

    from tandem.workloads.training.trainer import train

    def tiny_model(*args: Any, **kwargs: Any) -> Any:
        torch.manual_seed(0)
        config = transformers.LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
        return transformers.LlamaForCausalLM(config)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", tiny_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _Tokenizer())

    log: list[Any] = []

    class Spy(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **batch: Any) -> Any:
            out = self.inner(**batch)
            out.loss.register_hook(lambda grad: log.append(float(grad)))
            return out

    spec = AdapterTrainingSpec.model_validate(
        {
            "baseModel": {"uri": "file:///model"},
            "dataset": {"uri": "file:///data.jsonl"},
            "training": {"batchSize": 1, "warmupRatio": 0, "scheduler": "constant", **training},
            "resources": {"gpusPerWorker": 0},
            "output": {"uri": "file:///adapters"},
        }
    )
    data = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
        for i in range(examples)
    ]

    def progress(event: dict[str, Any]) -> None:
        if event["stage"] == "training":
            log.append(("step", event["step"], event["totalSteps"]))

    outcome = train(
        spec,
        Path("/model"),
        data,
        [],
        tmp_path / "checkpoints",
        tmp_path / "adapter",
        progress=progress,
        rank=rank,
        world_size=world,
        wrap_model=Spy,
    )
    steps: list[list[float]] = [[]]
    for entry in log:
        if isinstance(entry, tuple):
            assert entry[2] == outcome.total_steps
            steps.append([])
        else:
            steps[-1].append(entry)
    assert steps[-1] == []
    return steps[:-1], outcome


def test_loop_steps_every_accumulation_group_of_each_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 batches an epoch, accumulation 2: steps over 2, 2 and 1 batch in each epoch, the last scaled by 1.
    schedule = {"epochs": 2, "gradientAccumulationSteps": 2, "checkpointEverySteps": 1}
    steps, outcome = _run(tmp_path, monkeypatch, 5, schedule)
    assert steps == [[0.5, 0.5], [0.5, 0.5], [1.0]] * 2
    assert outcome.steps == outcome.total_steps == 6

    # A run resumed inside an epoch starts at the group after the checkpoint.
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-5", "step-6"]
    for p in (checkpoints / "step-6").iterdir():
        p.unlink()
    (checkpoints / "step-6").rmdir()
    steps, outcome = _run(tmp_path, monkeypatch, 5, schedule)
    assert (outcome.resumed_from, outcome.steps, steps) == (5, 6, [[1.0]])


def test_every_worker_runs_the_same_steps_on_uneven_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 9 examples on 2 workers: 5 batches each (worker 1 reuses an example), so no one waits in all-reduce.
    runs = [
        _run(tmp_path / str(rank), monkeypatch, 9, {"epochs": 1, "gradientAccumulationSteps": 2}, rank, 2)[0]
        for rank in range(2)
    ]
    assert runs[0] == runs[1] == [[0.5, 0.5], [0.5, 0.5], [1.0]]
