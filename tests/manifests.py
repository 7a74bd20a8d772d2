"""Example manifests for tests: the ones users see in examples/, loaded and copied on demand."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "basic"
CRDS = ROOT / "crds"


def load_all(directory: Path = EXAMPLES) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def example(kind: str) -> dict[str, Any]:
    """A fresh copy of the example of `kind`."""
    return copy.deepcopy(next(d for d in load_all() if d["kind"] == kind))
