"""The API models reject what the CRD rejects, naming the field; defaults fill in the rest."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tandem.api.kinds import by_kind
from tests.invalid_manifests import INVALID, Case
from tests.manifests import example


def test_examples_parse_with_defaults() -> None:
    kb = by_kind("KnowledgeBase").spec.model_validate(example("KnowledgeBase")["spec"])
    assert kb.embedding.model == "all-MiniLM-L6-v2"  # type: ignore[attr-defined]
    assert kb.search.rrf_k == 60  # type: ignore[attr-defined]
    he = by_kind("HybridEndpoint").spec.model_validate(example("HybridEndpoint")["spec"])
    assert he.retrieval.top_k == 5  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_model_rejects_invalid_manifest_naming_the_field(case: Case) -> None:
    body = case.build()
    with pytest.raises(ValidationError) as err:
        by_kind(body["kind"]).spec.model_validate(body["spec"])
    rendered = _render(err.value)
    assert case.model_field in rendered, rendered


def _render(err: ValidationError) -> str:
    parts: list[Any] = []
    for e in err.errors():
        parts.append(".".join(str(p) for p in e["loc"]) + ": " + e["msg"])
    return "\n".join(parts)
