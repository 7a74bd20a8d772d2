"""vLLM's command-line arguments and environment for a HybridEndpoint, the same for a pod and a local
process (only where it listens and which dtype the CPU build can use differ)."""

from __future__ import annotations

from tandem.api.v1alpha1.hybridendpoint import Serving

from .adapters import max_lora_rank, max_loras
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
