"""A corpus of invalid manifests: each breaks one rule, and names the field a user must fix.

`CORPUS` covers every kind. Each case is refused at admission (the API server, and `tandem validate`,
which applies the same admission: tests/integration/test_schema_rejections.py checks that both refuse it
with the same causes) with one message naming `field`: the field of the one cause (422), the unknown field
of a strict decoding error (400), or the apiVersion no CRD serves. `model_field` is how the API models
(what the operator and `tandem up` parse with) name it, when they see it at all: metadata, apiVersion and
unknown fields (the models accept snake_case names) are the API server's alone.

`OPERATOR_ONLY` are manifests the API server accepts and only the operator can refuse (a missing
reference, a reference no grant allows, a regular expression CEL cannot check): each turns Stalled with
`reason`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.manifests import example

NAMESPACE = "handbook"

EVALUATION: dict[str, Any] = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "Evaluation",
    "metadata": {"name": "scorecard", "namespace": NAMESPACE},
    "spec": {
        "endpointRef": {"name": "assistant"},
        "questions": {"configMap": {"name": "questions", "key": "questions.jsonl"}},
        "strategies": [{"name": "rag", "route": "rag"}, {"name": "hybrid", "route": "hybrid"}],
        "answerFormat": {"pattern": "Answer: (?P<answer>.+)"},
    },
}

REFERENCE_GRANT: dict[str, Any] = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "ReferenceGrant",
    "metadata": {"name": "assistants-may-read", "namespace": NAMESPACE},
    "spec": {
        "from": [{"kind": "HybridEndpoint", "namespace": "team-a"}],
        "to": [{"kind": "KnowledgeBase", "name": "handbook"}],
    },
}


SERVING_POOL: dict[str, Any] = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "ServingPool",
    "metadata": {"name": "smollm", "namespace": NAMESPACE},
    "spec": {
        "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
        "serving": {"replicas": 2, "maxCpuLoras": 8},
        "placement": {"adapterReplicas": 1},
    },
}


def base(kind: str) -> dict[str, Any]:
    """A valid manifest of `kind`: the example users see, or one written here for the kinds without."""
    if kind == "Evaluation":
        return copy.deepcopy(EVALUATION)
    if kind == "ServingPool":
        return copy.deepcopy(SERVING_POOL)
    if kind == "ReferenceGrant":
        return copy.deepcopy(REFERENCE_GRANT)
    return example(kind)


Mutation = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    mutate: Mutation  # applied to the whole manifest
    field: str  # what the API server names: a cause's field, an unknown field, or "apiVersion"
    model_field: str | None = None  # what the models' error says (None: they do not see it)

    def build(self) -> dict[str, Any]:
        body = base(self.kind)
        self.mutate(body)
        return body


_DELETE = object()


def _at(path: str, value: Any) -> Mutation:
    """Set (or with _DELETE remove) the value at a dotted path of the manifest; digits index lists."""

    def mutate(body: dict[str, Any]) -> None:
        node: Any = body
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        last: Any = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[last] = copy.deepcopy(value)

    return mutate


def _spec(path: str, value: Any) -> Mutation:
    return _at(f"spec.{path}", value)


def _all(*mutations: Mutation) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        for m in mutations:
            m(body)

    return mutate


KB, AT, HE, EV, RG = "KnowledgeBase", "AdapterTraining", "HybridEndpoint", "Evaluation", "ReferenceGrant"
SP = "ServingPool"
STORE = {
    "name": "team-a",
    "prefix": "oci://registry.example.com/team-a",
    "credentialsSecretRef": {"name": "registry"},
    "namespaces": ["team-a"],
}

INLINE = {"documents": [{"id": "a", "text": "A."}]}

CORPUS: list[Case] = [
    # --- metadata, apiVersion and unknown fields: the API server's alone ---------------------------------
    Case("uppercase-name", KB, _at("metadata.name", "Handbook"), "metadata.name"),
    Case("name-with-underscore", AT, _at("metadata.name", "house_style"), "metadata.name"),
    Case("name-too-long", RG, _at("metadata.name", "g" * 254), "metadata.name"),
    # the children carry the name as a label value: at most 63 characters
    Case("name-too-long-for-labels", AT, _at("metadata.name", "t" * 64), "metadata.name"),
    # the CronJob <name>-refresh must be at most 52 characters
    Case("name-too-long-for-refresh", KB, _at("metadata.name", "k" * 45), "metadata.name"),
    # the gateway Service is named after the endpoint: a DNS-1035 label
    Case("endpoint-name-starts-with-digit", HE, _at("metadata.name", "1st-line-bot"), "metadata.name"),
    Case("endpoint-name-with-dot", HE, _at("metadata.name", "assistant.v2"), "metadata.name"),
    Case("label-value-too-long", HE, _at("metadata.labels", {"team": "t" * 64}), "metadata.labels"),
    Case("label-key-invalid", RG, _at("metadata.labels", {"team/a/b": "x"}), "metadata.labels"),
    Case("wrong-api-version", KB, _at("apiVersion", "tandem.dev/v1"), "apiVersion"),
    Case("wrong-group", HE, _at("apiVersion", "tandem.io/v1alpha1"), "apiVersion"),
    Case("misspelt-kind", AT, _at("kind", "Adaptertraining"), "apiVersion"),
    Case("snake-case-field", KB, _spec("retain_on_delete", True), "spec.retain_on_delete"),
    Case("snake-case-nested-field", AT, _spec("lora.target_modules", ["q_proj"]), "spec.lora.target_modules"),
    Case("unknown-field", HE, _spec("retrieval.topN", 3), "spec.retrieval.topN"),
    Case("unknown-top-level-field", RG, _at("specs", {}), "specs"),
    Case("missing-spec", EV, _at("spec", _DELETE), "spec"),
    # --- KnowledgeBase ---------------------------------------------------------------------------------
    Case("wrong-type-int", KB, _spec("chunking.size", "large"), "spec.chunking.size", "chunking.size"),
    Case("above-maximum", KB, _spec("chunking.size", 100000), "spec.chunking.size", "chunking.size"),
    # one mistake, one message: the size's own minimum, not also "overlap must be smaller than size"
    Case("size-zero", KB, _spec("chunking.size", 0), "spec.chunking.size", "chunking.size"),
    Case("overlap-above-maximum", KB, _spec("chunking.overlap", 5000), "spec.chunking.overlap", "overlap"),
    Case(
        "overlap-not-below-size",
        KB,
        _spec("chunking.overlap", 300),
        "spec.chunking.overlap",
        "overlap (300) must be smaller than size (200)",
    ),
    Case("unknown-chunking-strategy", KB, _spec("chunking.strategy", "words"), "spec.chunking.strategy"),
    Case("unknown-enum", KB, _spec("index.type", "DISKANN_X"), "spec.index.type", "index.type"),
    Case(
        "ivf-with-m",
        KB,
        _spec("index", {"type": "IVF_FLAT", "m": 16}),
        "spec.index.m",
        "m applies to HNSW index types only, not to type IVF_FLAT",
    ),
    Case(
        "hnsw-with-nlist",
        KB,
        _spec("index.nlist", 128),
        "spec.index.nlist",
        "nlist applies to IVF index types only, not to type HNSW",
    ),
    Case("missing-required", KB, _spec("sources", _DELETE), "spec.sources", "sources"),
    Case("empty-list", KB, _spec("sources", []), "spec.sources", "sources"),
    Case(
        "bad-pattern-name",
        KB,
        _spec("sources.0.name", "Policies_1"),
        "spec.sources[0].name",
        "sources.0.name",
    ),
    Case(
        "two-source-types",
        KB,
        _spec("sources.1.http", {"urls": ["https://example.com/a"]}),
        "spec.sources[1]",
        "source wiki: exactly one of inline, configMap, directory, http or s3 must be set, found 2",
    ),
    Case(
        "no-source-type",
        KB,
        _spec("sources.1", {"name": "wiki"}),
        "spec.sources[1]",
        "source wiki: exactly one of inline, configMap, directory, http or s3 must be set, found 0",
    ),
    Case(
        "duplicate-source-name",
        KB,
        _spec("sources.1", {"name": "policies", "inline": INLINE}),
        "spec.sources[1]",
        'sources[1]: Duplicate value: {"name":"policies"}',
    ),
    Case(
        "duplicate-document-id",
        KB,
        _spec("sources.0.inline.documents.1.id", "travel"),
        "spec.sources[0].inline.documents[1]",
        'documents[1]: Duplicate value: {"id":"travel"}',
    ),
    Case(
        "duplicate-access-label",
        KB,
        _spec("sources.0.accessLabels", ["staff", "staff"]),
        "spec.sources[0].accessLabels[1]",
        'accessLabels[1]: Duplicate value: "staff"',
    ),
    Case(
        "ftp-url",
        KB,
        _spec("sources.1", {"name": "wiki", "http": {"urls": ["ftp://example.com/a"]}}),
        "spec.sources[1].http.urls[0]",
        "sources.1.http.urls.0",
    ),
    Case(
        "http-max-bytes-zero",
        KB,
        _spec("sources.1", {"name": "wiki", "http": {"urls": ["https://example.com/a"], "maxBytes": 0}}),
        "spec.sources[1].http.maxBytes",
        "sources.1.http.maxBytes",
    ),
    Case(
        "directory-path-climbs-out",
        KB,
        _spec("sources.1.directory.path", "/wiki/../../etc"),
        "spec.sources[1].directory.path",
        "sources.1.directory.path",
    ),
    Case(
        "configmap-key-climbs-out",
        KB,
        _spec("sources.1", {"name": "wiki", "configMap": {"name": "wiki", "keys": ["../token"]}}),
        "spec.sources[1].configMap.keys[0]",
        "sources.1.configMap.keys.0",
    ),
    Case(
        "s3-bucket-too-short",
        KB,
        _spec("sources.1", {"name": "wiki", "s3": {"bucket": "ab"}}),
        "spec.sources[1].s3.bucket",
        "sources.1.s3.bucket",
    ),
    Case(
        "s3-endpoint-scheme",
        KB,
        _spec("sources.1", {"name": "wiki", "s3": {"bucket": "docs", "endpoint": "ftp://minio:9000"}}),
        "spec.sources[1].s3.endpoint",
        "sources.1.s3.endpoint",
    ),
    Case(
        "embedding-model-climbs-out",
        KB,
        _spec("embedding.model", "pvc://models/../secrets"),
        "spec.embedding.model",
        "embedding.model",
    ),
    Case(
        "workers-without-rayjob",
        KB,
        _spec("scale.workers", 4),
        "spec.scale.workers",
        "workers 4 needs engine RayJob, not Job",
    ),
    Case(
        "schedule-not-cron", KB, _spec("refresh.schedule", "every hour"), "spec.refresh.schedule", "schedule"
    ),
    Case(
        "wrong-type-bool",
        KB,
        _spec("retainOnDelete", "sometimes"),
        "spec.retainOnDelete",
        "retainOnDelete",
    ),
    Case(
        "schedule-out-of-range",
        KB,
        _spec("refresh.schedule", "61 25 * * *"),
        "spec.refresh.schedule",
        "61 25 * * * is not a cron schedule",
    ),
    Case(
        "memory-not-a-quantity",
        KB,
        _spec("resources", {"limits": {"memory": "8 gigs"}}),
        "spec.resources.limits.memory",
        "resources.limits.memory",
    ),
    Case("mmr-lambda-above-one", KB, _spec("search.mmrLambda", 1.5), "spec.search.mmrLambda", "mmrLambda"),
    Case("gpu-negative", KB, _spec("resources", {"limits": {"gpu": -1}}), "spec.resources.limits.gpu", "gpu"),
    # --- AdapterTraining -------------------------------------------------------------------------------
    Case("below-minimum", AT, _spec("lora.r", 0), "spec.lora.r", "lora.r"),
    Case(
        "qlora-without-bits",
        AT,
        _spec("method", "qlora"),
        "spec.quantization",
        "quantization (bits 4 or 8) is required",
    ),
    Case(
        "qlora-wrong-bits",
        AT,
        _spec("quantization", {"bits": 3}),
        "spec.quantization.bits",
        "quantization.bits",
    ),
    Case(
        "qlora-without-gpu",
        AT,
        _all(
            _spec("method", "qlora"), _spec("quantization", {"bits": 4}), _spec("resources.gpusPerWorker", 0)
        ),
        "spec.resources.gpusPerWorker",
        "QLoRA needs GPUs",
    ),
    Case("unknown-method", AT, _spec("method", "dora"), "spec.method", "method"),
    Case("dropout-out-of-range", AT, _spec("lora.dropout", 1.5), "spec.lora.dropout", "lora.dropout"),
    Case(
        "duplicate-target-module",
        AT,
        _spec("lora.targetModules", ["q_proj", "q_proj"]),
        "spec.lora.targetModules[1]",
        'targetModules[1]: Duplicate value: "q_proj"',
    ),
    Case("bad-uri-scheme", AT, _spec("output.uri", "ftp://store/x"), "spec.output.uri", "output.uri"),
    Case("output-version-pattern", AT, _spec("output.version", "-v1"), "spec.output.version", "version"),
    Case(
        "no-dataset-no-raft",
        AT,
        _spec("dataset", _DELETE),
        "spec.dataset",
        "dataset: set dataset, raft, or both",
    ),
    Case(
        "dataset-configmap-and-uri",
        AT,
        _spec("dataset.configMap", {"name": "data", "key": "train.jsonl"}),
        "spec.dataset",
        "exactly one of configMap or uri must be set",
    ),
    Case("unknown-dataset-format", AT, _spec("dataset.format", "alpaca"), "spec.dataset.format", "format"),
    Case(
        "raft-questions-without-dataset",
        AT,
        _all(_spec("dataset", _DELETE), _spec("raft", {"knowledgeBaseRef": {"name": "handbook"}})),
        "spec.raft.questions",
        "raft.questions 'dataset' needs spec.dataset",
    ),
    Case("missing-base-model", AT, _spec("baseModel", _DELETE), "spec.baseModel", "baseModel"),
    Case(
        "base-model-climbs-out",
        AT,
        _spec("baseModel.uri", "pvc://models/../secrets"),
        "spec.baseModel.uri",
        "baseModel.uri",
    ),
    Case(
        "gguf-file-absolute",
        AT,
        _spec("baseModel.ggufFile", "/etc/model.gguf"),
        "spec.baseModel.ggufFile",
        "ggufFile",
    ),
    Case(
        "learning-rate-zero",
        AT,
        _spec("training.learningRate", 0),
        "spec.training.learningRate",
        "learningRate",
    ),
    Case("epochs-as-words", AT, _spec("training.epochs", "three"), "spec.training.epochs", "epochs"),
    Case(
        "memory-per-worker-not-a-quantity",
        AT,
        _spec("resources.memoryPerWorker", "16 GB"),
        "spec.resources.memoryPerWorker",
        "memoryPerWorker",
    ),
    Case("too-many-workers", AT, _spec("resources.workers", 1000), "spec.resources.workers", "workers"),
    # --- HybridEndpoint --------------------------------------------------------------------------------
    Case(
        "unknown-retrieval-mode",
        HE,
        _spec("retrieval.mode", "sometimes"),
        "spec.retrieval.mode",
        "retrieval.mode",
    ),
    Case(
        "score-threshold-above-one",
        HE,
        _spec("retrieval.scoreThreshold", 2),
        "spec.retrieval.scoreThreshold",
        "retrieval.scoreThreshold",
    ),
    Case("top-k-zero", HE, _spec("retrieval.topK", 0), "spec.retrieval.topK", "topK"),
    Case(
        "autoscaling-min-above-max",
        HE,
        _spec("serving.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "spec.serving.autoscaling.minReplicas",
        "minReplicas (5) must not exceed maxReplicas (2)",
    ),
    # one mistake, one message: maxReplicas' own minimum, not also "minReplicas must not exceed ..."
    Case(
        "autoscaling-max-zero",
        HE,
        _spec("serving.autoscaling.maxReplicas", 0),
        "spec.serving.autoscaling.maxReplicas",
        "maxReplicas",
    ),
    Case(
        "replicas-and-autoscaling",
        HE,
        _spec("serving.replicas", 2),
        "spec.serving.replicas",
        "set replicas or autoscaling, not both",
    ),
    Case(
        "adapter-ref-and-uri",
        HE,
        _spec("adapters.0.uri", "s3://bucket/adapter"),
        "spec.adapters[0]",
        "adapter house-style: exactly one of adapterTrainingRef or uri must be set, not both",
    ),
    Case(
        "adapter-neither-ref-nor-uri",
        HE,
        _spec("adapters.0", {"name": "house-style"}),
        "spec.adapters[0]",
        "adapter house-style: exactly one of adapterTrainingRef or uri must be set, found neither",
    ),
    Case(
        "remote-adapter-without-digest",
        HE,
        _spec("adapters.0", {"name": "house-style", "uri": "oci://registry.example:5000/adapters/house:v1"}),
        "spec.adapters[0].digest",
        "adapter house-style: digest is required for an oci:// or s3:// uri",
    ),
    Case(
        "s3-adapter-without-digest",
        HE,
        _spec("adapters.0", {"name": "house-style", "uri": "s3://adapters/house"}),
        "spec.adapters[0].digest",
        "adapter house-style: digest is required for an oci:// or s3:// uri",
    ),
    Case(
        "digest-on-a-training-adapter",
        HE,
        _spec("adapters.0.digest", "a" * 64),
        "spec.adapters[0].digest",
        "digest is for uri adapters",
    ),
    Case(
        "adapter-digest-not-hex",
        HE,
        _spec("adapters.0", {"name": "house-style", "uri": "s3://adapters/house", "digest": "sha256:abc"}),
        "spec.adapters[0].digest",
        "adapters.0.digest",
    ),
    Case(
        "publish-uri-scheme",
        AT,
        _spec("output.publish", {"uri": "https://registry.example/adapters"}),
        "spec.output.publish.uri",
        "output.publish.uri",
    ),
    Case(
        "adapter-uri-scheme",
        HE,
        _spec("adapters.0", {"name": "house-style", "uri": "ftp://store/adapter"}),
        "spec.adapters[0].uri",
        "adapters.0.uri",
    ),
    Case(
        "duplicate-adapter",
        HE,
        _spec("adapters.1", {"name": "house-style", "uri": "pvc://adapters/other"}),
        "spec.adapters[1]",
        'adapters[1]: Duplicate value: {"name":"house-style"}',
    ),
    Case(
        "duplicate-knowledge-base",
        HE,
        _spec("knowledgeBases", [{"name": "handbook"}, {"name": "handbook", "namespace": "shared"}]),
        "spec.knowledgeBases[1]",
        'knowledgeBases[1]: Duplicate value: {"name":"handbook"}',
    ),
    Case(
        "route-to-unknown-adapter",
        HE,
        _spec("routes", [{"name": "x", "adapter": "nope"}]),
        "spec.routes",
        "route x: adapter nope names no entry of adapters",
    ),
    Case(
        "duplicate-route",
        HE,
        _spec("routes", [{"name": "rag"}, {"name": "rag", "retrieval": False}]),
        "spec.routes[1]",
        'routes[1]: Duplicate value: {"name":"rag"}',
    ),
    Case(
        "too-many-routes",
        HE,
        _spec("routes", [{"name": f"r{i}"} for i in range(129)]),
        "spec.routes",
        "routes",
    ),
    Case(
        "duplicate-tenant",
        HE,
        _spec("tenants.1.name", "staff"),
        "spec.tenants[1]",
        'tenants[1]: Duplicate value: {"name":"staff"}',
    ),
    Case(
        "tenant-without-key",
        HE,
        _spec("tenants.0.apiKeySecretRef", _DELETE),
        "spec.tenants[0].apiKeySecretRef",
        "tenants.0.apiKeySecretRef",
    ),
    Case(
        "cross-namespace-ref-bad-namespace",
        HE,
        _spec("knowledgeBases.0.namespace", "Not_A_Namespace"),
        "spec.knowledgeBases[0].namespace",
        "knowledgeBases.0.namespace",
    ),
    Case("unknown-dtype", HE, _spec("serving.dtype", "int4"), "spec.serving.dtype", "dtype"),
    Case(
        "max-model-len-too-small",
        HE,
        _spec("serving.maxModelLen", 64),
        "spec.serving.maxModelLen",
        "maxModelLen",
    ),
    Case(
        "gateway-replicas-zero", HE, _spec("gateway.replicas", 0), "spec.gateway.replicas", "gateway.replicas"
    ),
    Case("base-model-without-uri", HE, _spec("baseModel", {}), "spec.baseModel.uri", "baseModel.uri"),
    # --- Evaluation ------------------------------------------------------------------------------------
    Case(
        "duplicate-strategy-name",
        EV,
        _spec("strategies.1.name", "rag"),
        "spec.strategies[1]",
        'strategies[1]: Duplicate value: {"name":"rag"}',
    ),
    Case(
        "strategy-route-pattern",
        EV,
        _spec("strategies.0.route", "Hybrid_1"),
        "spec.strategies[0].route",
        "strategies.0.route",
    ),
    Case(
        "too-many-strategies",
        EV,
        _spec("strategies", [{"name": f"s{i}", "route": "rag"} for i in range(17)]),
        "spec.strategies",
        "strategies",
    ),
    Case(
        "questions-neither",
        EV,
        _spec("questions", {}),
        "spec.questions",
        "exactly one of configMap or uri must be set",
    ),
    Case(
        "questions-both",
        EV,
        _spec("questions.uri", "file://questions.jsonl"),
        "spec.questions",
        "exactly one of configMap or uri must be set",
    ),
    Case("missing-endpoint", EV, _spec("endpointRef", _DELETE), "spec.endpointRef", "endpointRef"),
    Case("max-tokens-zero", EV, _spec("maxTokens", 0), "spec.maxTokens", "maxTokens"),
    Case(
        "report-uri-https", EV, _spec("report", {"uri": "https://reports/x"}), "spec.report.uri", "report.uri"
    ),
    Case(
        "judge-url-scheme", EV, _spec("judge", {"url": "ftp://judge", "model": "m"}), "spec.judge.url", "url"
    ),
    Case("judge-without-model", EV, _spec("judge", {}), "spec.judge.model", "judge.model"),
    Case("tenant-uppercase", EV, _spec("tenant", "Staff"), "spec.tenant", "tenant"),
    # pydantic reads "yes" as true: only the API server refuses it
    Case("update-cost-as-word", EV, _spec("updateCost", "yes"), "spec.updateCost"),
    # --- ReferenceGrant --------------------------------------------------------------------------------
    Case("empty-from", RG, _spec("from", []), "spec.from", "from"),
    Case("missing-to", RG, _spec("to", _DELETE), "spec.to", "to"),
    Case("from-unknown-kind", RG, _spec("from.0.kind", "Evaluation"), "spec.from[0].kind", "from.0.kind"),
    Case("to-unknown-kind", RG, _spec("to.0.kind", "HybridEndpoint"), "spec.to[0].kind", "to.0.kind"),
    Case(
        "from-namespace-pattern",
        RG,
        _spec("from.0.namespace", "Team_A"),
        "spec.from[0].namespace",
        "from.0.namespace",
    ),
    Case(
        "duplicate-from",
        RG,
        _spec("from.1", {"kind": "HybridEndpoint", "namespace": "team-a"}),
        "spec.from[1]",
        'from[1]: Duplicate value: {"kind":"HybridEndpoint","namespace":"team-a"}',
    ),
    Case("to-name-pattern", RG, _spec("to.0.name", "Handbook"), "spec.to[0].name", "to.0.name"),
    Case(
        "too-many-from",
        RG,
        _spec("from", [{"kind": "HybridEndpoint", "namespace": f"team-{i}"} for i in range(17)]),
        "spec.from",
        "from",
    ),
    # ServingPool (issue 16)
    Case(
        "pool-cpu-loras-below-max-loras",
        SP,
        _all(_spec("serving.maxLoras", 4), _spec("serving.maxCpuLoras", 2)),
        "spec.serving.maxCpuLoras",
        "maxCpuLoras must be at least maxLoras",
    ),
    Case(
        "pool-lora-rank-not-a-vllm-size",
        SP,
        _spec("serving.maxLoraRank", 24),
        "spec.serving.maxLoraRank",
        "serving.maxLoraRank",
    ),
    Case(
        "pool-adapter-replicas-zero",
        SP,
        _spec("placement.adapterReplicas", 0),
        "spec.placement.adapterReplicas",
        "placement.adapterReplicas",
    ),
    Case("pool-name-not-dns-1035", SP, _at("metadata.name", "1pool"), "metadata.name"),
    Case(
        "pool-store-prefix-climbs-out",
        SP,
        _spec("adapterStores", [{**STORE, "prefix": "oci://registry.example.com/team-a/../team-b"}]),
        "spec.adapterStores[0].prefix",
        "adapterStores.0.prefix",
    ),
    Case(
        "pool-store-prefix-with-userinfo",
        SP,
        _spec("adapterStores", [{**STORE, "prefix": "oci://u:p@registry.example.com/team-a"}]),
        "spec.adapterStores[0].prefix",
        "adapterStores.0.prefix",
    ),
    Case(
        "pool-store-for-nobody",
        SP,
        _spec("adapterStores", [{**STORE, "namespaces": []}]),
        "spec.adapterStores[0].namespaces",
        "adapterStores.0.namespaces",
    ),
    Case(
        "pool-store-without-credentials",
        SP,
        _spec("adapterStores", [{k: v for k, v in STORE.items() if k != "credentialsSecretRef"}]),
        "spec.adapterStores[0].credentialsSecretRef",
        "adapterStores.0.credentialsSecretRef",
    ),
    Case(
        "pool-store-named-twice",
        SP,
        _spec("adapterStores", [STORE, {**STORE, "prefix": "s3://adapters/team-a"}]),
        "spec.adapterStores[1]",
        'adapterStores[1]: Duplicate value: {"name":"team-a"}',
    ),
    Case(
        "pooled-endpoint-with-own-replicas",
        HE,
        _all(
            _spec("servingPoolRef", {"name": "smollm", "namespace": "serving"}),
            _spec("serving", {"replicas": 2}),
        ),
        "spec.servingPoolRef",
        "with servingPoolRef the pool runs vLLM",
    ),
]

# The cases the models check too (the metadata, apiVersion and unknown fields are the API server's).
INVALID: list[Case] = [case for case in CORPUS if case.model_field is not None]


@dataclass(frozen=True)
class OperatorCase:
    """A manifest the API server admits that the operator refuses: Stalled with `reason`."""

    id: str
    kind: str
    mutate: Mutation
    reason: str

    def build(self) -> dict[str, Any]:
        body = base(self.kind)
        self.mutate(body)
        return body


OPERATOR_ONLY: list[OperatorCase] = [
    OperatorCase(
        "knowledge-base-not-found",
        HE,
        _all(_spec("adapters", []), _spec("knowledgeBases", [{"name": "nowhere"}])),
        "KnowledgeBaseNotFound",
    ),
    OperatorCase(
        "reference-not-granted",
        HE,
        _all(_spec("adapters", []), _spec("knowledgeBases", [{"name": "handbook", "namespace": "shared"}])),
        "ReferenceNotPermitted",
    ),
    OperatorCase(
        "raft-knowledge-base-not-found",
        AT,
        _spec("raft", {"knowledgeBaseRef": {"name": "nowhere"}}),
        "KnowledgeBaseNotFound",
    ),
    OperatorCase(
        "answer-format-not-a-regex",
        EV,
        _spec("answerFormat.pattern", "Answer: (?P<answer>.+"),
        "InvalidSpec",
    ),
]
