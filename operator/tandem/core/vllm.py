"""vLLM's command-line arguments and environment for a HybridEndpoint or a ServingPool pod, the same for a
pod and a local process (only where it listens and which dtype the CPU build can use differ)."""

from __future__ import annotations

from tandem.api.v1alpha1.hybridendpoint import Serving
from tandem.api.v1alpha1.servingpool import PoolServing

from .adapters import DEFAULT_MAX_LORAS, max_lora_rank, max_loras
from .gateway import BASE_MODEL_NAME
from .references import ResolvedAdapter

ENTRYPOINT = "vllm.entrypoints.openai.api_server"
# /v1/load_lora_adapter and /v1/unload_lora_adapter: adapters change without a restart.
RUNTIME_LORA_ENV = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}
# tandem.core.vllm_guard as vLLM imports it: a module of its own beside vLLM (copied next to a local vLLM,
# a ConfigMap key in a pod), loaded as ASGI middleware by this flag.
GUARD_MODULE = "tandem_vllm_guard"
GUARD_ARGUMENT = f"--middleware={GUARD_MODULE}.RequireKey"


def vllm_arguments(
    serving: Serving,
    *,
    model: str,
    host: str,
    port: int,
    declared_adapters: int,
    adapters: list[ResolvedAdapter],
    dtype: str | None = None,
) -> list[str]:
    """The OpenAI server's flags: the base model served as `base`, LoRA enabled when the spec declares
    adapters (a slot each, up to the default) with a rank vLLM accepts for those resolved so far, then the
    spec's extra arguments. `dtype` overrides the spec's."""
    args = [
        f"--host={host}",
        f"--port={port}",
        f"--model={model}",
        f"--served-model-name={BASE_MODEL_NAME}",
        f"--max-model-len={serving.max_model_len}",
        f"--dtype={dtype or serving.dtype}",
    ]
    if declared_adapters:
        args += [
            "--enable-lora",
            f"--max-loras={max_loras(serving.max_loras, declared_adapters)}",
            f"--max-lora-rank={max_lora_rank(adapters)}",
        ]
    return args + list(serving.extra_args)


def pool_vllm_arguments(
    serving: PoolServing, *, model: str, host: str, port: int, dtype: str | None = None
) -> list[str]:
    """A ServingPool pod's flags: LoRA on from the start with the pool's own limits (adapters come and go
    with the endpoints attached, and a flag derived from them would restart the whole fleet whenever one
    arrives), the spec's extra arguments last."""
    args = vllm_arguments(
        serving, model=model, host=host, port=port, declared_adapters=0, adapters=[], dtype=dtype
    )
    lora = [
        "--enable-lora",
        f"--max-loras={serving.max_loras or min(DEFAULT_MAX_LORAS, serving.max_cpu_loras)}",
        f"--max-cpu-loras={serving.max_cpu_loras}",
        f"--max-lora-rank={serving.max_lora_rank}",
    ]
    return args[: len(args) - len(serving.extra_args)] + lora + list(serving.extra_args)
