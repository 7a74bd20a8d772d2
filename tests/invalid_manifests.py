"""A catalogue of invalid manifests: each breaks one rule, and names the field a user must fix.

Used twice: against the CRD schema as the (emulated) API server enforces it, and against the API
models the operator and `tandem up` parse with. `field` is how the API server names the field;
`model_field` how pydantic names its location.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.manifests import example


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    mutate: Callable[[dict[str, Any]], None]
    field: str
    model_field: str

    def build(self) -> dict[str, Any]:
        body = example(self.kind)
        self.mutate(body["spec"])
        return body


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        last = keys[-1]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()

INVALID: list[Case] = [
    Case(
        "wrong-type-int",
        "KnowledgeBase",
        _set("chunking.size", "large"),
        "spec.chunking.size",
        "chunking.size",
    ),
    Case(
        "above-maximum", "KnowledgeBase", _set("chunking.size", 100000), "spec.chunking.size", "chunking.size"
    ),
    Case("below-minimum", "AdapterTraining", _set("lora.r", 0), "spec.lora.r", "lora.r"),
    Case("unknown-enum", "KnowledgeBase", _set("index.type", "DISKANN_X"), "spec.index.type", "index.type"),
    Case("missing-required", "KnowledgeBase", _set("sources", _DELETE), "spec.sources", "sources"),
    Case("empty-list", "KnowledgeBase", _set("sources", []), "spec.sources", "sources"),
    Case(
        "bad-pattern-name",
        "KnowledgeBase",
        _set("sources.0.name", "Policies_1"),
        "spec.sources[0].name",
        "sources.0.name",
    ),
    Case(
        "overlap-not-below-size",
        "KnowledgeBase",
        _set("chunking.overlap", 300),
        "spec.chunking.overlap",
        "must be smaller than size (200)",
    ),
    Case(
        "two-source-types",
        "KnowledgeBase",
        _set("sources.1.http", {"urls": ["https://example.com/a"]}),
        "spec.sources[1]",
        "exactly one of inline, configMap, directory, http or s3",
    ),
    Case(
        "qlora-without-bits",
        "AdapterTraining",
        _set("method", "qlora"),
        "spec.quantization",
        "quantization (bits 4 or 8) is required",
    ),
    Case(
        "qlora-wrong-bits",
        "AdapterTraining",
        _set("quantization", {"bits": 3}),
        "spec.quantization.bits",
        "quantization.bits",
    ),
    Case(
        "qlora-without-gpu",
        "AdapterTraining",
        lambda s: s.update(method="qlora", quantization={"bits": 4}, resources={"gpusPerWorker": 0}),
        "spec.resources.gpusPerWorker",
        "QLoRA needs GPUs",
    ),
    Case(
        "dropout-out-of-range",
        "AdapterTraining",
        _set("lora.dropout", 1.5),
        "spec.lora.dropout",
        "lora.dropout",
    ),
    Case(
        "bad-uri-scheme",
        "AdapterTraining",
        _set("output.uri", "ftp://store/x"),
        "spec.output.uri",
        "output.uri",
    ),
    Case(
        "unknown-retrieval-mode",
        "HybridEndpoint",
        _set("retrieval.mode", "sometimes"),
        "spec.retrieval.mode",
        "retrieval.mode",
    ),
    Case(
        "score-threshold-above-one",
        "HybridEndpoint",
        _set("retrieval.scoreThreshold", 2),
        "spec.retrieval.scoreThreshold",
        "retrieval.scoreThreshold",
    ),
    Case(
        "autoscaling-min-above-max",
        "HybridEndpoint",
        _set("serving.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "spec.serving.autoscaling.minReplicas",
        "minReplicas (5) must not exceed maxReplicas (2)",
    ),
    Case(
        "adapter-ref-and-uri",
        "HybridEndpoint",
        _set("adapters.0.uri", "s3://bucket/adapter"),
        "spec.adapters[0]",
        "exactly one of adapterTrainingRef or uri",
    ),
    Case(
        "route-to-unknown-adapter",
        "HybridEndpoint",
        _set("routes", [{"name": "x", "adapter": "nope"}]),
        "spec.routes",
        "route x: adapter nope names no entry of adapters",
    ),
    Case(
        "wrong-type-bool",
        "KnowledgeBase",
        _set("retainOnDelete", "sometimes"),
        "spec.retainOnDelete",
        "retainOnDelete",
    ),
    Case(
        "cross-namespace-ref-bad-namespace",
        "HybridEndpoint",
        _set("knowledgeBases.0.namespace", "Not_A_Namespace"),
        "spec.knowledgeBases[0].namespace",
        "knowledgeBases.0.namespace",
    ),
]
