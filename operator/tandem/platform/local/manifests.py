"""The manifests `tandem up` runs: read from files, validated by the API's own models, checked whole.

Everything that can be wrong with the input is found here, before any work starts: a field the API
rejects, a reference to a resource or Secret key that is not in the set, a local file or directory that
does not exist. Each error names the file, the resource and the field.

Local paths: `file://` URIs and directory sources without a claim are read relative to the manifest's
own directory when they are not absolute, so a folder of manifests can travel with its data;
`pvc://CLAIM/PATH` maps to `<state>/volumes/CLAIM/PATH`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tandem.api.kinds import (
    ADAPTER_TRAINING,
    EVALUATION,
    HYBRID_ENDPOINT,
    KNOWLEDGE_BASE,
    REFERENCE_GRANT,
    SERVING_POOL,
    by_kind,
)
from tandem.api.v1alpha1 import AdapterTrainingSpec, EvaluationSpec, HybridEndpointSpec, KnowledgeBaseSpec
from tandem.api.v1alpha1.knowledgebase import S3_CREDENTIAL_KEYS, Source
from tandem.api.v1alpha1.servingpool import ServingPoolSpec
from tandem.core.grants import reference_allowed

SpecT = TypeVar("SpecT", bound=BaseModel)


class ManifestError(Exception):
    """One clear message per problem, naming the file and field."""


@dataclass(frozen=True)
class Resource(Generic[SpecT]):
    kind: str
    namespace: str
    name: str
    spec: SpecT
    file: Path

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} ({self.file})"


@dataclass
class Manifests:
    knowledge_bases: list[Resource[KnowledgeBaseSpec]] = field(default_factory=list)
    trainings: list[Resource[AdapterTrainingSpec]] = field(default_factory=list)
    endpoints: list[Resource[HybridEndpointSpec]] = field(default_factory=list)
    evaluations: list[Resource[EvaluationSpec]] = field(default_factory=list)  # run by `tandem eval`
    pools: list[Resource[ServingPoolSpec]] = field(default_factory=list)
    grants: list[dict[str, Any]] = field(default_factory=list)  # ReferenceGrants, as documents
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def knowledge_base(self, namespace: str, name: str) -> Resource[KnowledgeBaseSpec] | None:
        return next((r for r in self.knowledge_bases if (r.namespace, r.name) == (namespace, name)), None)

    def training(self, namespace: str, name: str) -> Resource[AdapterTrainingSpec] | None:
        return next((r for r in self.trainings if (r.namespace, r.name) == (namespace, name)), None)

    def endpoint(self, namespace: str, name: str) -> Resource[HybridEndpointSpec] | None:
        return next((r for r in self.endpoints if (r.namespace, r.name) == (namespace, name)), None)

    def pool(self, namespace: str, name: str) -> Resource[ServingPoolSpec] | None:
        return next((r for r in self.pools if (r.namespace, r.name) == (namespace, name)), None)

    def attached(self, pool: Resource[ServingPoolSpec]) -> list[Resource[HybridEndpointSpec]]:
        """The endpoints served by the pool (checked when loaded: granted, and of the pool's base model)."""
        return [he for he in self.endpoints if pool_of(he) == (pool.namespace, pool.name)]


def pool_of(he: Resource[HybridEndpointSpec]) -> tuple[str, str] | None:
    """(namespace, name) of the ServingPool the endpoint names, if any."""
    ref = he.spec.serving_pool_ref
    return None if ref is None else (ref.namespace or he.namespace, ref.name)


def manifest_files(path: Path) -> list[Path]:
    if not path.exists():
        raise ManifestError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise ManifestError(f"{path}: no .yaml manifests in this directory")
    return files


def _problems(e: ValidationError) -> str:
    return "; ".join(
        f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors(include_url=False)
    )


def _secret_data(doc: dict[str, Any], file: Path) -> dict[str, str]:
    data = {str(k): str(v) for k, v in (doc.get("stringData") or {}).items()}
    for key, value in (doc.get("data") or {}).items():
        try:
            data.setdefault(str(key), base64.b64decode(str(value), validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            raise ManifestError(
                f"{file}: Secret {doc['metadata'].get('name')}: data.{key} is not base64"
            ) from None
    return data


def local_path(uri_or_path: str, base: Path, state: Path) -> Path:
    """Where a file://, pvc:// URI or a plain path lies on this machine."""
    scheme, sep, rest = uri_or_path.partition("://")
    if sep and scheme == "pvc":
        return state / "volumes" / rest
    path = Path(rest if sep and scheme == "file" else uri_or_path)
    return path if path.is_absolute() else (base / path).resolve()


def load(path: Path, state: Path) -> Manifests:
    found = Manifests(files=manifest_files(path))
    for file in found.files:
        try:
            docs = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
        except yaml.YAMLError as e:
            raise ManifestError(f"{file}: not valid YAML: {e}") from None
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc:
                raise ManifestError(f"{file}: a document without `kind` (is this a Kubernetes manifest?)")
            meta = doc.get("metadata") or {}
            name, namespace = meta.get("name"), meta.get("namespace") or "default"
            if not name:
                raise ManifestError(f"{file}: {doc['kind']} without metadata.name")
            if doc["kind"] == "Secret":
                found.secrets[(namespace, name)] = _secret_data(doc, file)
                continue
            if not str(doc.get("apiVersion", "")).startswith("tandem.dev/"):
                continue  # Namespaces and the like mean nothing locally
            try:
                kind = by_kind(doc["kind"])
                spec = kind.spec.model_validate(doc.get("spec") or {})
            except KeyError as e:
                raise ManifestError(f"{file}: {e.args[0]}") from None
            except ValidationError as e:
                raise ManifestError(f"{file}: {doc['kind']} {namespace}/{name}: {_problems(e)}") from None
            resource: Resource[Any] = Resource(kind.kind, namespace, name, spec, file)
            if kind is KNOWLEDGE_BASE:
                found.knowledge_bases.append(resource)
            elif kind is ADAPTER_TRAINING:
                found.trainings.append(resource)
            elif kind is HYBRID_ENDPOINT:
                found.endpoints.append(resource)
            elif kind is EVALUATION:
                found.evaluations.append(resource)
            elif kind is SERVING_POOL:
                found.pools.append(resource)
            elif kind is REFERENCE_GRANT:
                found.grants.append({**doc, "metadata": {**meta, "namespace": namespace}})
    _check(found, state)
    return found


def _check(found: Manifests, state: Path) -> None:
    """References and local files: everything the work will need, before it starts."""
    seen: set[str] = set()
    everything: list[Resource[Any]] = [
        *found.knowledge_bases,
        *found.trainings,
        *found.endpoints,
        *found.evaluations,
        *found.pools,
    ]
    for r in everything:
        if r.key in seen:
            raise ManifestError(f"{r.file}: {r.kind} {r.namespace}/{r.name} is defined twice")
        seen.add(r.key)
    for kb in found.knowledge_bases:
        for i, source in enumerate(kb.spec.sources):
            if source.directory is not None and source.directory.claim_name is None:
                where = local_path(source.directory.path, kb.file.parent, state)
                if not where.is_dir():
                    raise ManifestError(
                        f"{kb.file}: KnowledgeBase {kb.name}: spec.sources[{i}].directory.path: "
                        f"{where} is not a directory"
                    )
            for secret_field, secret, needed in _source_secrets(source):
                data = found.secrets.get((kb.namespace, secret))
                lacking = [k for k in needed if data is not None and k not in data]
                if data is None or lacking:
                    what = f"Secret {kb.namespace}/{secret}" + (
                        f" with keys {', '.join(lacking)}" if lacking else ""
                    )
                    raise ManifestError(
                        f"{kb.file}: KnowledgeBase {kb.name}: spec.sources[{i}].{secret_field}: no {what} "
                        "among the manifests"
                    )
    for at in found.trainings:
        dataset = at.spec.dataset
        if dataset is not None and dataset.uri and dataset.uri.startswith("file://"):
            where = local_path(dataset.uri, at.file.parent, state)
            if not where.is_file():
                raise ManifestError(
                    f"{at.file}: AdapterTraining {at.name}: spec.dataset.uri: {where} does not exist"
                )
        if at.spec.raft is not None:
            ref = at.spec.raft.knowledge_base_ref
            if found.knowledge_base(ref.namespace or at.namespace, ref.name) is None:
                raise ManifestError(
                    f"{at.file}: AdapterTraining {at.name}: spec.raft.knowledgeBaseRef: no KnowledgeBase "
                    f"{ref.namespace or at.namespace}/{ref.name} among the manifests"
                )
    for he in found.endpoints:
        for i, ref in enumerate(he.spec.knowledge_bases):
            if found.knowledge_base(ref.namespace or he.namespace, ref.name) is None:
                raise ManifestError(
                    f"{he.file}: HybridEndpoint {he.name}: spec.knowledgeBases[{i}]: no KnowledgeBase "
                    f"{ref.namespace or he.namespace}/{ref.name} among the manifests"
                )
        for adapter in he.spec.adapters:
            training = adapter.adapter_training_ref
            if training is None:
                continue
            namespace = training.namespace or he.namespace
            if found.training(namespace, training.name) is None:
                raise ManifestError(
                    f"{he.file}: HybridEndpoint {he.name}: spec.adapters[{adapter.name}].adapterTrainingRef: "
                    f"no AdapterTraining {namespace}/{training.name} among the manifests"
                )
        for tenant in he.spec.tenants:
            secret_ref = tenant.api_key_secret_ref
            data = found.secrets.get((he.namespace, secret_ref.name))
            if data is None or secret_ref.key not in data:
                missing = "Secret" if data is None else f"key {secret_ref.key!r} in Secret"
                raise ManifestError(
                    f"{he.file}: HybridEndpoint {he.name}: spec.tenants[{tenant.name}].apiKeySecretRef: "
                    f"no {missing} {he.namespace}/{secret_ref.name} among the manifests"
                )
        _check_pool_ref(found, he)
    for ev in found.evaluations:
        _check_evaluation(found, ev, state)


def _check_pool_ref(found: Manifests, he: Resource[HybridEndpointSpec]) -> None:
    """An endpoint served by a pool: the pool is among the manifests, its namespace grants the endpoint's
    (a ReferenceGrant, as in a cluster), and it serves the endpoint's base model."""
    where = pool_of(he)
    if where is None:
        return
    pool = found.pool(*where)
    field_ = f"{he.file}: HybridEndpoint {he.namespace}/{he.name}: spec.servingPoolRef"
    if pool is None:
        raise ManifestError(f"{field_}: no ServingPool {where[0]}/{where[1]} among the manifests")
    if not reference_allowed(
        from_kind=HYBRID_ENDPOINT.kind,
        from_namespace=he.namespace,
        to_kind=SERVING_POOL.kind,
        to_namespace=pool.namespace,
        to_name=pool.name,
        grants=found.grants,
    ):
        raise ManifestError(
            f"{field_}: no ReferenceGrant in namespace {pool.namespace} allows HybridEndpoints from "
            f"{he.namespace} to use ServingPool {pool.name} (add one among the manifests, as in a cluster)"
        )
    if he.spec.base_model.uri != pool.spec.base_model.uri:
        raise ManifestError(
            f"{he.file}: HybridEndpoint {he.namespace}/{he.name}: spec.baseModel.uri: "
            f"{he.spec.base_model.uri} is not the base model of ServingPool {pool.namespace}/{pool.name} "
            f"({pool.spec.base_model.uri}): its adapters were trained for another model"
        )


def _source_secrets(source: Source) -> list[tuple[str, str, tuple[str, ...]]]:
    """(field, Secret name, keys it must have) for each Secret a source names."""
    out: list[tuple[str, str, tuple[str, ...]]] = []
    if source.http is not None and source.http.headers_secret_ref is not None:
        out.append(("http.headersSecretRef", source.http.headers_secret_ref.name, ()))
    if source.s3 is not None and source.s3.credentials_secret_ref is not None:
        out.append(("s3.credentialsSecretRef", source.s3.credentials_secret_ref.name, S3_CREDENTIAL_KEYS))
    return out


def _check_evaluation(found: Manifests, ev: Resource[EvaluationSpec], state: Path) -> None:
    ref = ev.spec.endpoint_ref
    he = found.endpoint(ref.namespace or ev.namespace, ref.name)
    where = f"{ev.file}: Evaluation {ev.name}"
    if he is None:
        raise ManifestError(
            f"{where}: spec.endpointRef: no HybridEndpoint {ref.namespace or ev.namespace}/{ref.name} "
            "among the manifests"
        )
    from tandem.core.gateway import routes as endpoint_routes

    routes = {r.name for r in endpoint_routes(he.spec)}
    for i, strategy in enumerate(ev.spec.strategies):
        if strategy.route not in routes:
            raise ManifestError(
                f"{where}: spec.strategies[{i}].route: {strategy.route!r} is not a route of HybridEndpoint "
                f"{he.name} ({', '.join(sorted(routes))})"
            )
    tenants = [t.name for t in he.spec.tenants]
    if ev.spec.tenant is not None and ev.spec.tenant not in tenants:
        raise ManifestError(
            f"{where}: spec.tenant: {ev.spec.tenant!r} is not a tenant of HybridEndpoint {he.name} "
            f"({', '.join(tenants) or 'none'})"
        )
    questions = ev.spec.questions
    if questions.uri is None or not questions.uri.startswith(("file://", "pvc://")):
        raise ManifestError(
            f"{where}: spec.questions: locally the question set must be a file:// or pvc:// uri"
        )
    if not local_path(questions.uri, ev.file.parent, state).is_file():
        raise ManifestError(
            f"{where}: spec.questions.uri: {local_path(questions.uri, ev.file.parent, state)} does not exist"
        )
