"""HybridEndpoint: vLLM with LoRA adapters behind a retrieving, citing, multi-tenant gateway."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .adaptertraining import ModelSource
from .common import (
    DNS_LABEL,
    CelRule,
    CommonStatus,
    ComputeResources,
    CrossNamespaceReference,
    LocalObjectReference,
    SecretKeyReference,
    StatusModel,
    TandemModel,
    nested,
    uri_pattern,
)

ADAPTER_URI = uri_pattern("pvc", "file", "s3", "oci", "https?", "hf")
# An adapter's digest as its training records it (`adapterDigest`, tandem.workloads.model_common).
ADAPTER_DIGEST = r"^[0-9a-f]{64}$"
# Adapter URIs of stores the vLLM pods fetch from: served only once the artifact has the declared digest.
REMOTE_ADAPTER_SCHEMES = ("oci", "s3")


class Adapter(TandemModel):
    """A LoRA adapter served by vLLM, from an AdapterTraining or a URI."""

    cel_rules = (
        CelRule(
            "has(self.adapterTrainingRef) != has(self.uri)",
            "exactly one of adapterTrainingRef or uri must be set",
            message_expression=(
                "'adapter ' + self.name + ': exactly one of adapterTrainingRef or uri must be set, ' + "
                "(has(self.uri) ? 'not both' : 'found neither')"
            ),
        ),
        CelRule(
            # Checked only when the rule above holds: one mistake, one message.
            "has(self.adapterTrainingRef) || !has(self.uri) || has(self.digest) || "
            "!(self.uri.startsWith('oci://') || self.uri.startsWith('s3://'))",
            "digest is required for an oci:// or s3:// adapter: it is loaded only once verified",
            ".digest",
            message_expression=(
                "'adapter ' + self.name + ': digest is required for an oci:// or s3:// uri (the "
                "adapterDigest of its training): a remote adapter is loaded only once verified'"
            ),
        ),
        CelRule(
            "!has(self.digest) || has(self.uri) || !has(self.adapterTrainingRef)",
            "digest is for uri adapters: an AdapterTraining's comes from its status",
            ".digest",
        ),
    )

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description="Adapter name, used as a route/model name.",
    )
    adapter_training_ref: CrossNamespaceReference | None = Field(
        default=None, description="Serve the latest adapter an AdapterTraining produced."
    )
    uri: str | None = Field(
        default=None,
        pattern=ADAPTER_URI,
        max_length=1024,
        description=(
            "A PEFT adapter folder (pvc://CLAIM/PATH), or an artifact an AdapterTraining published: "
            "oci://HOST[:PORT]/REPO@sha256:... (or :TAG) or s3://BUCKET/PREFIX[@sha256:...]."
        ),
    )
    digest: str | None = Field(
        default=None,
        pattern=ADAPTER_DIGEST,
        description=(
            "The adapter's digest (its training's status.adapterDigest, 64 hex): required for oci:// and "
            "s3:// adapters, which are fetched, verified and only then loaded; checked for a folder too."
        ),
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret of the endpoint's namespace with the store's credentials (keys username and password, "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, optionally endpoint_url and region), for an "
            "adapter fetched from oci:// or s3:// (a published AdapterTraining's too); one per endpoint."
        ),
    )
    insecure: bool = Field(
        default=False,
        description="Fetch over plain HTTP from a store that is not on loopback (an in-cluster registry).",
    )
    rank: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="LoRA rank; read from the adapter when omitted (URIs: set it).",
    )


class Route(TandemModel):
    """A value of the request's `model` field: which adapter answers, and whether it retrieves."""

    name: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="The model name clients use."
    )
    adapter: str | None = Field(
        default=None,
        max_length=63,
        description="Adapter name, at most 63 characters (an entry of adapters); the base model if omitted.",
    )
    retrieval: bool = Field(default=True, description="Retrieve from the endpoint's knowledge bases.")


class Retrieval(TandemModel):
    """When and how much the gateway retrieves."""

    mode: Literal["always", "auto", "never"] = Field(
        default="auto",
        description=(
            "always: every request retrieves; never: none does; auto: retrieve, and use the passages only "
            "when the best score reaches scoreThreshold (the response says which path was taken)."
        ),
    )
    top_k: int = Field(default=5, ge=1, le=100, description="Passages retrieved per question.")
    score_threshold: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Minimum similarity for a passage to be used."
    )
    max_context_tokens: int = Field(
        default=1024, ge=64, le=131072, description="Token budget for passages in the prompt."
    )


class Tenant(TandemModel):
    """A caller: its API keys, the ACL groups it may read, and its share of capacity."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Tenant name.")
    api_key_secret_ref: SecretKeyReference = Field(description="Secret key holding the tenant's API key.")
    groups: list[str] = Field(
        default_factory=list, description="ACL groups whose documents this tenant may retrieve."
    )
    max_concurrent_requests: int = Field(
        default=8, ge=1, le=10000, description="Requests in flight for this tenant; more get 429."
    )


class Autoscaling(TandemModel):
    """Horizontal autoscaling of the vLLM pods."""

    cel_rules = (
        CelRule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not exceed maxReplicas",
            ".minReplicas",
            message_expression=(
                "'minReplicas (%d) must not exceed maxReplicas (%d)'.format([self.minReplicas, "
                "self.maxReplicas])"
            ),
            guards=("minReplicas", "maxReplicas"),
        ),
    )

    min_replicas: int = Field(
        default=1, ge=0, le=1000, description="Fewest replicas; 0 allows a cold start on the first request."
    )
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    target_in_flight_requests: int = Field(
        default=8, ge=1, le=10000, description="Target in-flight requests per replica."
    )


class Serving(TandemModel):
    """The vLLM deployment."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.autoscaling) || !has(self.replicas)",
            "set replicas or autoscaling, not both",
            ".replicas",
        ),
    )

    replicas: int | None = Field(default=None, ge=0, le=1000, description="Fixed replica count (default 1).")
    autoscaling: Autoscaling | None = Field(default=None, description="Scale on load instead.")
    image: str | None = Field(default=None, description="vLLM image; defaults to the operator's setting.")
    resources: ComputeResources | None = Field(default=None, description="Resources of each vLLM pod.")
    max_model_len: int = Field(
        default=4096, ge=128, le=1048576, description="Context length (--max-model-len)."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(default="auto", description="--dtype.")
    max_loras: int | None = Field(
        default=None, ge=1, le=64, description="Adapters per batch (--max-loras); derived when omitted."
    )
    extra_args: list[str] = Field(default_factory=list, description="Further vLLM arguments.")


class Gateway(TandemModel):
    """The retrieving gateway in front of vLLM."""

    replicas: int = Field(default=1, ge=1, le=100, description="Gateway replicas.")
    max_concurrent_requests: int = Field(
        default=64, ge=1, le=100000, description="Requests in flight overall."
    )
    request_timeout_seconds: int = Field(default=120, ge=1, le=3600, description="Time limit per request.")
    max_request_bytes: int = Field(
        default=1_000_000, ge=1024, le=100_000_000, description="Largest request body."
    )
    max_tokens: int = Field(
        default=4096,
        ge=1,
        le=1048576,
        description=(
            "Most tokens one request may ask to generate per completion (max_tokens, "
            "max_completion_tokens, min_tokens): more is refused with 400; a request that sets none is "
            "sent with this. Default 4096, 1 to 1048576."
        ),
    )
    max_n: int = Field(
        default=4,
        ge=1,
        le=128,
        description=(
            "Most completions one request may ask for (n, best_of): more is refused with 400. "
            "Default 4, 1 to 128."
        ),
    )
    resources: ComputeResources | None = Field(default=None, description="Resources of each gateway pod.")


_ROUTE_AT_FAULT = "has(r.adapter) && !(has(self.adapters) && self.adapters.exists(a, a.name == r.adapter))"


class HybridEndpointSpec(TandemModel):
    """What to serve and to whom."""

    cel_rules = (
        CelRule(
            "!has(self.routes) || self.routes.all(r, !has(r.adapter) || "
            "(has(self.adapters) && self.adapters.exists(a, a.name == r.adapter)))",
            "every routes[].adapter must name an entry of adapters",
            ".routes",
            # names the first route at fault and its value (cel.bind is not in every API server's CEL)
            message_expression=(
                "'route %s: adapter %s names no entry of adapters'.format(["
                f"self.routes.filter(r, {_ROUTE_AT_FAULT})[0].name, "
                f"self.routes.filter(r, {_ROUTE_AT_FAULT})[0].adapter])"
            ),
        ),
        CelRule(
            "!has(self.servingPoolRef) || !has(self.serving) || (!has(self.serving.replicas) && "
            "!has(self.serving.autoscaling) && !has(self.serving.image) && !has(self.serving.resources))",
            "with servingPoolRef the pool runs vLLM: set serving.replicas, autoscaling, image and resources "
            "on the ServingPool",
            ".servingPoolRef",
        ),
    )

    base_model: ModelSource = Field(
        description=(
            "The base model vLLM serves. With servingPoolRef, the model the adapters were trained for: the "
            "pool must serve the same URI."
        )
    )
    serving_pool_ref: CrossNamespaceReference | None = Field(
        default=None,
        description=(
            "Serve on a shared ServingPool's vLLM pods instead of vLLM pods of the endpoint's own: its "
            "adapters are placed there (they must come from an artifact store: oci:// or s3:// with a "
            "digest, or an AdapterTraining that publishes); serving.maxModelLen, dtype, maxLoras and "
            "extraArgs are then the pool's. A pool in another namespace needs a ReferenceGrant there."
        ),
    )
    adapters: list[Adapter] = Field(
        default_factory=list,
        max_length=64,
        description="LoRA adapters loaded at run time, without restarting vLLM; at most 64.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    knowledge_bases: list[CrossNamespaceReference] = Field(
        default_factory=list,
        max_length=32,
        description="KnowledgeBases the gateway retrieves from, each name once.",
        # Keyed by name alone: the gateway's config, routes and Milvus token mounts know a KnowledgeBase
        # by its name, so two of one name (in two namespaces) would collide there.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    routes: list[Route] | None = Field(
        default=None,
        # Bounded so that the API server's CEL cost estimate of the rule above (routes x adapters) is
        # within its per-rule limit: unbounded, the list is sized by the 3 MiB request limit.
        max_length=128,
        description=(
            "Model names clients may request, at most 128 (e.g. every adapter with and without retrieval). "
            "Default: 'base' (no adapter), one per adapter, and 'hybrid' (first adapter with retrieval)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    retrieval: Retrieval = nested(Retrieval, "When and how much to retrieve.")
    tenants: list[Tenant] = Field(
        default_factory=list,
        description="Callers and their API keys; with none, the endpoint accepts unauthenticated requests.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    serving: Serving = nested(Serving, "The vLLM deployment.")
    gateway: Gateway = nested(Gateway, "The gateway deployment.")


class AdapterStatus(StatusModel):
    """Where one adapter is loaded, as read from each ready vLLM pod's /v1/models."""

    name: str = Field(description="Adapter name.")
    version: str | None = Field(default=None, description="Adapter version served.")
    loaded_replicas: int = Field(default=0, description="Ready vLLM pods that report it loaded.")
    ready: bool = Field(default=False, description="Loaded on every ready vLLM pod.")


class HybridEndpointStatus(CommonStatus):
    """Serving state, as observed."""

    phase: Literal["Pending", "Progressing", "Ready", "Failed", "Terminating"] | None = Field(
        default=None,
        description=(
            "Summary of the conditions: Failed whenever Stalled is True, Terminating while the resource "
            "is being deleted (see the Ready condition for its cleanup)."
        ),
    )
    url: str | None = Field(default=None, description="In-cluster URL of the OpenAI-compatible API.")
    replicas: int | None = Field(default=None, description="vLLM pods.")
    ready_replicas: int | None = Field(default=None, description="vLLM pods ready.")
    ready: str | None = Field(
        default=None, description="vLLM pods ready of those desired, as kubectl shows a Deployment's: 1/3."
    )
    selector: str | None = Field(
        default=None,
        description=(
            "Label selector of the vLLM pods: the scale subresource's, for a HorizontalPodAutoscaler."
        ),
    )
    gateway_ready_replicas: int | None = Field(default=None, description="Gateway pods ready.")
    vllm_key_digest: str | None = Field(
        default=None,
        description=(
            "SHA-256 of the key the gateway presents to vLLM (the <name>-vllm-key Secret), recorded when the "
            "operator created it: a ServingPool accepts the endpoint's gateway by it."
        ),
    )
    serving_pool: str | None = Field(
        default=None, description="The ServingPool (namespace/name) serving the endpoint, once attached."
    )
    adapters: list[AdapterStatus] = Field(default_factory=list, description="Per-adapter load state.")
