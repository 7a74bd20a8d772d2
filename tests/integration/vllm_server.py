"""A real vLLM (the CPU build, in its own environment) serving SmolLM2-135M-Instruct, for tests.

vLLM lives in `.venv-vllm` (`make vllm`, or scripts/install-vllm.sh; TANDEM_VLLM_PYTHON names another
one). Where it is missing the tests that need it skip, unless TANDEM_REQUIRE_VLLM=1 (CI), where they
fail. It binds 127.0.0.1 only, is ready in about a minute on two cores and takes about 3.5 GB.

tests/integration/conftest.py registers these session fixtures, so one server serves the whole suite:

- `served_model_dir`: SmolLM2 converted from its GGUF to a safetensors folder (once, about 20 s);
- `identity_adapter`: an untrained PEFT LoRA adapter for it (r=8, q_proj and v_proj; LoRA's B starts at
  zero, so it changes nothing yet is a valid adapter to load);
- `vllm`: a `VllmFixture` (the server, the model folder and the model cache that `prepare` fills, which
  training jobs can reuse);
- `vllm_server`: the running `VllmServer` (its `url`, `pid`, `models()`, `load_adapter()`).

The server is shared: a test that loads adapters uses names of its own and leaves the others' alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tandem.platform.local.vllm import VllmNotInstalled, VllmServer, vllm_python

MAX_MODEL_LEN = 2048
MAX_LORA_RANK = 8
MAX_LORAS = 2
STARTUP_TIMEOUT = 600.0  # seconds; about 50 s on an idle two-core machine, much more on a busy one


@dataclass(frozen=True)
class VllmFixture:
    server: VllmServer
    model_dir: Path  # the Hugging Face folder vLLM serves as `base`
    model_cache: Path  # where `tandem.workloads.models.prepare` keeps converted models


def require_vllm() -> str:
    """vLLM's Python, or a skip (a failure under TANDEM_REQUIRE_VLLM=1) saying how to install it."""
    try:
        return vllm_python()
    except VllmNotInstalled as e:
        if os.environ.get("TANDEM_REQUIRE_VLLM", "") not in ("", "0"):
            pytest.fail(f"TANDEM_REQUIRE_VLLM is set and {e}", pytrace=False)
        pytest.skip(str(e))


def make_identity_adapter(model_dir: Path, target: Path, r: int = 8) -> Path:
    """A freshly initialised LoRA adapter (B = 0: the base model's outputs), saved as PEFT saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    get_peft_model(model, config).save_pretrained(str(target))
    return target


@pytest.fixture(scope="session", name="identity_adapter")
def identity_adapter_fixture(tmp_path_factory: pytest.TempPathFactory, served_model_dir: Path) -> Path:
    target = tmp_path_factory.mktemp("identity-adapter") / "identity-v1"
    return make_identity_adapter(served_model_dir, target, r=MAX_LORA_RANK)


@pytest.fixture(scope="session", name="vllm")
def vllm_fixture(
    tmp_path_factory: pytest.TempPathFactory, served_model_dir: Path, served_model_cache: Path
) -> Iterator[VllmFixture]:
    """vLLM serving `served_model_dir` as `base`, LoRA on, on a free port of 127.0.0.1; stopped at the end."""
    python = require_vllm()
    server = VllmServer(
        served_model_dir,
        log=tmp_path_factory.mktemp("vllm") / "vllm.log",
        python=python,
        max_model_len=MAX_MODEL_LEN,
        max_lora_rank=MAX_LORA_RANK,
        max_loras=MAX_LORAS,
    )
    server.start(timeout=STARTUP_TIMEOUT)
    try:
        yield VllmFixture(server, served_model_dir, served_model_cache)
    finally:
        server.stop()


@pytest.fixture(scope="session", name="vllm_server")
def vllm_server_fixture(vllm: VllmFixture) -> VllmServer:
    return vllm.server
