"""Issue 15, item 2: nothing is read outside its source, and no Tandem pod holds a Kubernetes token.

A ConfigMap key, a directory path or a pvc:// URI that climbs out of its root (`..`) would have the pod
read (and index, and cite back) its own files: the service-account token above all. Refused three times:
by the CRD schema (the API server), by the API models (the operator and `tandem up`), and by the workload
(a path is resolved and must stay inside its root; a symlink may not lead out of it). And no Tandem pod
mounts a service-account token: no Tandem workload talks to the Kubernetes API.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from tandem.api.admission.causes import Cause
from tandem.api.v1alpha1 import AdapterTrainingSpec, EvaluationSpec, HybridEndpointSpec, KnowledgeBaseSpec
from tandem.api.v1alpha1.knowledgebase import ConfigMapSource, DirectorySource, Source
from tandem.workloads.knowledge.sources import read_source
from tests.emulator import schema
from tests.manifests import CRDS, example

TOKEN = "../../var/run/secrets/kubernetes.io/serviceaccount/token"
SPECS: dict[str, type[pydantic.BaseModel]] = {
    "KnowledgeBase": KnowledgeBaseSpec,
    "AdapterTraining": AdapterTrainingSpec,
    "HybridEndpoint": HybridEndpointSpec,
    "Evaluation": EvaluationSpec,
}


def _body(kind: str) -> dict[str, Any]:
    if kind == "Evaluation":
        spec = {
            "endpointRef": {"name": "assistant"},
            "questions": {"configMap": {"name": "questions", "key": "questions.jsonl"}},
            "report": {"uri": "pvc://reports/handbook"},
        }
        return {"apiVersion": "tandem.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    return example(kind)


def _crd_schema(kind: str) -> Any:
    crd = yaml.safe_load((CRDS / f"tandem.dev_{kind.lower()}s.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value

    return mutate


def _directory(path: str) -> Callable[[dict[str, Any]], None]:
    return _set("sources.1.directory.path", path)


def _config_map_keys(*keys: str) -> Callable[[dict[str, Any]], None]:
    return _set("sources.0", {"name": "cm", "configMap": {"name": "docs", "keys": list(keys)}})


def _dataset_key(key: str) -> Callable[[dict[str, Any]], None]:
    return _set("dataset", {"configMap": {"name": "data", "key": key}})


def _adapter_uri(uri: str) -> Callable[[dict[str, Any]], None]:
    return _set("adapters.0", {"name": "house-style", "uri": uri, "rank": 8})


# (id, kind, change to the spec): each one reaches a file outside the place it names.
HOSTILE: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
    ("configmap-key-token", "KnowledgeBase", _config_map_keys("ok.md", TOKEN)),
    ("configmap-key-dotdot", "KnowledgeBase", _config_map_keys("..")),
    ("configmap-key-dot", "KnowledgeBase", _config_map_keys(".")),
    ("configmap-key-data-dir", "KnowledgeBase", _config_map_keys("..data")),  # the volume's own layout
    ("configmap-key-absolute", "KnowledgeBase", _config_map_keys("/etc/passwd")),
    ("configmap-key-slash", "KnowledgeBase", _config_map_keys("sub/file")),
    ("directory-up", "KnowledgeBase", _directory("../../var/run/secrets/kubernetes.io/serviceaccount")),
    ("directory-up-inside", "KnowledgeBase", _directory("/wiki/../../../var/run")),
    ("directory-up-at-end", "KnowledgeBase", _directory("wiki/..")),
    ("directory-dotdot", "KnowledgeBase", _directory("..")),
    ("embedding-model-pvc-up", "KnowledgeBase", _set("embedding.model", "pvc://models/../../var/run")),
    ("dataset-pvc-token", "AdapterTraining", _set("dataset.uri", f"pvc://training-data/{TOKEN}")),
    ("dataset-configmap-key", "AdapterTraining", _dataset_key(TOKEN)),
    ("base-model-pvc-up", "AdapterTraining", _set("baseModel.uri", "pvc://models/../..")),
    ("gguf-file-up", "AdapterTraining", _set("baseModel.ggufFile", "../../../var/run/secrets/token")),
    ("gguf-file-absolute", "AdapterTraining", _set("baseModel.ggufFile", "/var/run/secrets/token")),
    ("output-pvc-up", "AdapterTraining", _set("output.uri", "pvc://adapters/a/../../../tmp")),
    ("endpoint-base-model-pvc-up", "HybridEndpoint", _set("baseModel.uri", "pvc://models/x/../../../etc")),
    ("endpoint-adapter-pvc-up", "HybridEndpoint", _adapter_uri("pvc://adapters/../../../var/run/secrets")),
    ("questions-pvc-up", "Evaluation", _set("questions", {"uri": f"pvc://questions/{TOKEN}"})),
    ("questions-configmap-key", "Evaluation", _set("questions.configMap.key", TOKEN)),
    ("report-pvc-up", "Evaluation", _set("report.uri", "pvc://reports/../../tmp")),
]

# Names that only look like traversal, and must stay accepted.
HARMLESS: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
    ("configmap-keys", "KnowledgeBase", _config_map_keys("a.md", ".env", "x..y", "-_.A9")),
    ("directory-dots-in-names", "KnowledgeBase", _directory("/wiki/v1..2/.hidden/...")),
    ("directory-relative", "KnowledgeBase", _directory("docs/./wiki")),
    (
        "dataset-dots-in-names",
        "AdapterTraining",
        _set("dataset.uri", "pvc://training-data/a..b/.c/d...jsonl"),
    ),
    ("dataset-https-as-before", "AdapterTraining", _set("dataset.uri", "https://example.com/a/../b.jsonl")),
    ("file-uri-as-before", "AdapterTraining", _set("output.uri", "file:///srv/adapters")),
    ("gguf-file", "AdapterTraining", _set("baseModel.ggufFile", "model-q4_k_m.gguf")),
    ("gguf-file-in-folder", "AdapterTraining", _set("baseModel.ggufFile", "gguf/model..q4.gguf")),
    (
        "embedding-model-name",
        "KnowledgeBase",
        _set("embedding.model", "sentence-transformers/all-MiniLM-L6-v2"),
    ),
    ("questions-key", "Evaluation", _set("questions.configMap.key", "questions.jsonl")),
]


def _api_server_causes(kind: str, body: dict[str, Any]) -> list[Cause]:
    """What the (emulated) API server says: defaults applied, then the CRD schema and its rules checked."""
    crd = _crd_schema(kind)
    return schema.validate(crd, schema.prepare(crd, copy.deepcopy(body)))


def _ids(case: tuple[str, str, Any]) -> str:
    return case[0]


@pytest.mark.parametrize("case", HOSTILE, ids=_ids)
def test_the_api_server_refuses_traversal(case: tuple[str, str, Callable[[dict[str, Any]], None]]) -> None:
    _, kind, mutate = case
    body = _body(kind)
    assert _api_server_causes(kind, body) == []  # valid before the change
    mutate(body["spec"])
    assert _api_server_causes(kind, body), f"the CRD schema accepts {body['spec']}"


@pytest.mark.parametrize("case", HOSTILE, ids=_ids)
def test_the_models_refuse_traversal(case: tuple[str, str, Callable[[dict[str, Any]], None]]) -> None:
    _, kind, mutate = case
    spec = _body(kind)["spec"]
    SPECS[kind].model_validate(spec)
    mutate(spec)
    with pytest.raises(pydantic.ValidationError):
        SPECS[kind].model_validate(spec)


@pytest.mark.parametrize("case", HARMLESS, ids=_ids)
def test_names_that_only_look_like_traversal_pass(
    case: tuple[str, str, Callable[[dict[str, Any]], None]],
) -> None:
    _, kind, mutate = case
    body = _body(kind)
    mutate(body["spec"])
    assert _api_server_causes(kind, body) == []
    SPECS[kind].model_validate(body["spec"])


# --- The workload: even a source that got past the schema reads nothing outside its root. -----------


def _unchecked(name: str, **kind: Any) -> Source:
    """A source as an older schema (or a bug) might let through: built without validation."""
    return Source.model_construct(name=name, access_labels=[], metadata={}, **kind)


@pytest.fixture
def pod(tmp_path: Path) -> Path:
    """A pod's file system in small: a token outside the mounts, a ConfigMap volume laid out as the
    kubelet does (`key -> ..data/key`, `..data -> ..<timestamp>`), and a claim with files and links."""
    secrets = tmp_path / "var/run/secrets/kubernetes.io/serviceaccount"
    secrets.mkdir(parents=True)
    (secrets / "token").write_text("eyJhbGciOiJSUzI1NiJ9.service-account-token")
    cm = tmp_path / "mnt/cm-docs"
    (cm / "..2026_01_01_00_00_00.1").mkdir(parents=True)
    (cm / "..2026_01_01_00_00_00.1" / "leave.md").write_text("# Leave\n27 days.")
    (cm / "..data").symlink_to("..2026_01_01_00_00_00.1")
    (cm / "leave.md").symlink_to("..data/leave.md")
    claim = tmp_path / "mnt/pvc-docs/wiki"
    (claim / "sub").mkdir(parents=True)
    (claim / "travel.md").write_text("# Travel\nTrains under 600 km.")
    (claim / "sub" / "alias.md").symlink_to("../travel.md")  # a link that stays inside: read
    (claim / "token.md").symlink_to(secrets / "token")  # a link out of the source: refused
    (claim / "secrets").symlink_to(secrets, target_is_directory=True)  # a directory link out: not walked
    return tmp_path


def _read(source: Source, location: Path | str) -> tuple[dict[str, bytes], list[str]]:
    got = read_source(source, str(location))
    return {d.doc_id: d.data for d in got.documents}, [f.document for f in got.failures]


def test_a_configmap_key_cannot_climb_out_of_the_volume(pod: Path) -> None:
    keys = ["leave.md", "../../var/run/secrets/kubernetes.io/serviceaccount/token", "..data/leave.md"]
    source = _unchecked("cm", config_map=ConfigMapSource.model_construct(name="docs", keys=keys))
    documents, failures = _read(source, pod / "mnt/cm-docs")
    assert documents == {"cm/leave.md": b"# Leave\n27 days."}
    assert failures == keys[1:]
    assert not any(b"service-account-token" in data for data in documents.values())


def test_a_directory_reads_links_inside_it_and_refuses_links_out(pod: Path) -> None:
    source = _unchecked(
        "wiki", directory=DirectorySource.model_construct(claim_name="docs", path="/wiki", include=["**/*"])
    )
    documents, failures = _read(source, pod / "mnt/pvc-docs/wiki")
    assert sorted(documents) == ["wiki/sub/alias.md", "wiki/travel.md"]
    assert failures == ["token.md"]
    assert not any(b"service-account-token" in data for data in documents.values())


def test_a_directory_location_that_climbs_is_refused(pod: Path) -> None:
    """The planner makes the location from the claim's mount and directory.path: `..` in it is refused
    by the workload too, not followed."""
    source = _unchecked(
        "wiki",
        directory=DirectorySource.model_construct(
            claim_name="docs", path="/../../var/run/secrets", include=["**/*"]
        ),
    )
    got = read_source(source, f"{pod}/mnt/pvc-docs/../../var/run/secrets/kubernetes.io/serviceaccount")
    assert got.documents == [] and not got.complete


def test_a_fifo_in_a_directory_does_not_hang_the_ingest(pod: Path) -> None:
    os.mkfifo(pod / "mnt/pvc-docs/wiki/pipe.md")
    source = _unchecked(
        "wiki", directory=DirectorySource.model_construct(claim_name="docs", path="/wiki", include=["**/*"])
    )
    result: list[Any] = []
    reader = threading.Thread(
        target=lambda: result.append(_read(source, pod / "mnt/pvc-docs/wiki")), daemon=True
    )
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader so the test run can end
        with open(pod / "mnt/pvc-docs/wiki/pipe.md", "wb"):
            pass
        pytest.fail("reading a FIFO in the source blocked the ingest")
    [(documents, failures)] = result
    assert "pipe.md" in failures and "wiki/travel.md" in documents


# --- Pods: no service-account token. ------------------------------------------------------------------


def _pod_specs(node: Any) -> list[dict[str, Any]]:
    """Every pod spec inside a child manifest (Jobs, CronJobs, Deployments, RayJobs and their templates)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "containers" in node:
            found.append(node)
        for value in node.values():
            found += _pod_specs(value)
    elif isinstance(node, list):
        for value in node:
            found += _pod_specs(value)
    return found


def _every_pod() -> list[tuple[str, dict[str, Any]]]:
    from tandem.api.kinds import KNOWLEDGE_BASE
    from tandem.platform.kubernetes.planners.cleanup import plan_cleanup
    from tests.unit.test_planner_evaluation import plan as evaluation_plan
    from tests.unit.test_planners import SETTINGS, at_plan, he_plan, kb_plan, owner

    scaled = example("KnowledgeBase")["spec"]
    scaled["scale"] = {"engine": "RayJob", "workers": 2}
    plans = {
        "knowledgebase": kb_plan().children,
        "knowledgebase-ray": kb_plan(scaled).children,
        "adaptertraining": at_plan().children,
        "hybridendpoint": he_plan().children,
        "evaluation": evaluation_plan().children,
        "cleanup": [plan_cleanup(KNOWLEDGE_BASE, owner("KnowledgeBase", "handbook"), scaled, SETTINGS)],
    }
    return [
        (f"{name}/{child['kind']}/{i}", pod)
        for name, children in plans.items()
        for child in children
        for i, pod in enumerate(_pod_specs(child))
    ]


def test_no_tandem_pod_mounts_a_service_account_token() -> None:
    pods = _every_pod()
    kinds = {where.split("/")[1] for where, _ in pods}
    assert {"Job", "CronJob", "Deployment", "RayJob"} <= kinds
    mounting = [where for where, pod in pods if pod.get("automountServiceAccountToken") is not False]
    assert mounting == []
