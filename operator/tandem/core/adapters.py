"""Adapter versions and the LoRA limits vLLM is started with."""

from __future__ import annotations

from tandem.api.v1alpha1 import AdapterTrainingSpec

from .digests import digest
from .errors import PlanError
from .references import ResolvedAdapter, ResolvedKnowledgeBase

# vLLM accepts only these values for --max-lora-rank.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# Adapters vLLM keeps on the GPU at once when the spec does not say (`serving.maxLoras`).
DEFAULT_MAX_LORAS = 8


def adapter_version(
    spec: AdapterTrainingSpec, raft_kb: ResolvedKnowledgeBase | None, run_token: str = ""
) -> str:
    """The version an unchanged spec maps to: the workload skips training when that adapter exists with the
    same inputs. Asking for a run (annotation tandem.dev/run; locally, the dataset's bytes) makes a new
    version, never an overwrite."""
    if spec.output.version:
        return spec.output.version
    return "v" + digest(
        {
            "inputs": spec.training_inputs(),
            "raftRevision": raft_kb.revision if raft_kb else None,
            "run": run_token,
        },
        8,
    )


def lora_rank_slot(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds adapters of `rank`."""
    for slot in LORA_RANKS:
        if slot >= rank:
            return slot
    raise PlanError("AdapterRankTooLarge", f"adapter rank {rank} exceeds vLLM's maximum of {LORA_RANKS[-1]}")


def max_lora_rank(adapters: list[ResolvedAdapter]) -> int:
    """--max-lora-rank for a set of adapters: the slot of the largest."""
    return lora_rank_slot(max((a.rank for a in adapters), default=LORA_RANKS[0]))


def max_loras(configured: int | None, adapters: int) -> int:
    """--max-loras: the spec's figure, else one slot per adapter (at least one, at most the default)."""
    return configured or max(1, min(adapters, DEFAULT_MAX_LORAS))
