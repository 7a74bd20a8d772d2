"""Local mode: the same manifests a cluster takes, reconciled on this machine in dependency order.

KnowledgeBases are ingested into a milvus-lite server, AdapterTrainings train with PEFT, and each
HybridEndpoint gets vLLM's CPU build plus the gateway on 127.0.0.1. The work is the cluster's own
workloads, given the same job contracts (built by `tandem.core`) and run as subprocesses
(`runner.py`); the servers are supervised by `servers.py`. Each resource is reconciled when its inputs'
fingerprint changes (spec, files of its sources, dataset bytes), so a second `tandem up` resumes instead
of redoing work, and a watch loop picks up edits. Status uses the API's status fields (`figures`, as
`kubectl get` shows them); what only local mode needs (paths, key files) is kept apart (`local`).

An unchanged fingerprint is not enough to stay Ready: every pass checks what the resource needs now.
A KnowledgeBase's Milvus must answer and still hold the indexed collection (local mode's milvus-lite
server is restarted when it is found stopped, crashed, hung (no answer within MILVUS_PROBE_SECONDS) or
its PID taken by another program; its data directory keeps the collection); a HybridEndpoint's vLLM and
gateway must be the processes started for it and answer, and its gateway's `/healthz/dependencies` must
find every KnowledgeBase searchable, else the endpoint is `RetrievalUnavailable` (not Ready) while the
routes that do not retrieve keep serving. While `tandem up` watches, an outage shows within one pass:
`--interval` (2 s) plus the probes (a few seconds; 10 s for a Milvus that never answers), and clears the
same way once the dependency answers again.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random_secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tandem.api.v1alpha1 import AdapterTrainingSpec, EvaluationSpec, HybridEndpointSpec, KnowledgeBaseSpec
from tandem.api.v1alpha1.adaptertraining import ModelSource
from tandem.api.v1alpha1.hybridendpoint import REMOTE_ADAPTER_SCHEMES
from tandem.api.v1alpha1.knowledgebase import S3_CREDENTIAL_KEYS, s3_env_prefix
from tandem.api.v1alpha1.servingpool import ServingPoolSpec
from tandem.core import status as core_status
from tandem.core.adapters import adapter_version
from tandem.core.digests import FINGERPRINT_DIGEST, digest
from tandem.core.gateway import gateway_config, knowledge_base_config
from tandem.core.jobs import adapter_folder, ingest_job, knowledge_base_target, training_job
from tandem.core.references import ResolvedAdapter, resolve_knowledge_base, trained_adapter, uri_adapter
from tandem.core.vllm import vllm_arguments
from tandem.workloads.adapter_sync import VLLM_API_KEY_ENV, Fetcher
from tandem.workloads.gateway.config import AdapterConfig, GatewayConfig, KnowledgeBaseConfig
from tandem.workloads.jobs import KnowledgeBaseTarget

from .evaluation import evaluation_job
from .health import SERVING, endpoint_condition
from .manifests import Manifests, Resource, local_path
from .pools import POOL_KIND, pooled_endpoint, reconcile_pool
from .references import fetcher_for, knowledge_base, secret_folder, secret_token_file, write_private
from .runner import Progress, WorkFailed, WorkloadRunner
from .servers import Supervisor
from .state import ResourceState, Server, State

if TYPE_CHECKING:
    from tandem.workloads.models import PreparedModel

__all__ = ["LocalPlatform", "WorkFailed"]

MILVUS = "milvus"  # the name of local mode's milvus-lite server among the supervised servers
MILVUS_PROBE_SECONDS = 10.0  # a KnowledgeBase's Milvus that takes longer to count its chunks is down
# A gateway whose retrieval fails while its KnowledgeBases answer is restarted at most this often
# (seconds): if a new one fails too, the cause is not its connection, and status says what it is.
GATEWAY_RESTART_EVERY = 300.0


class MilvusUnreachable(Exception):
    """A KnowledgeBase's Milvus did not answer (the message says how)."""


def _in_thread(call: Callable[[], int | None]) -> Future[int | None]:
    """`call` run in a daemon thread: one that never returns holds neither `tandem up` nor its exit."""
    future: Future[int | None] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as e:
            future.set_exception(e)

    threading.Thread(target=run, name="milvus-check", daemon=True).start()
    return future


def _fingerprint(value: Any) -> str:
    return digest(value, FINGERPRINT_DIGEST)


def _files_fingerprint(directory: Path) -> list[tuple[str, int, int]]:
    if not directory.is_dir():
        return []
    return sorted(
        (str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    )


class LocalPlatform:
    def __init__(
        self,
        state_dir: Path,
        *,
        progress: Progress | None = None,
        use_ray: bool = False,
        gateway_port: int | None = None,
        vllm_python: str | None = None,
    ) -> None:
        self.dir = state_dir.resolve()
        self.state = State.load(self.dir)
        self.progress = progress or (lambda key, event: None)
        self.use_ray = use_ray
        self.gateway_port = gateway_port
        self.vllm_python = vllm_python
        self.model_cache = self.dir / "models"
        self.runner = WorkloadRunner(self.dir, self.model_cache, self.progress)
        self.servers = Supervisor(self.state, self.dir)
        self._probes: dict[str, Future[int | None]] = {}  # KnowledgeBase key -> its Milvus check
        self._gateway_restarts: dict[str, float] = {}  # HybridEndpoint key -> when its gateway was

    # --- entry points ------------------------------------------------------------------------------

    def reconcile(self, manifests: Manifests) -> bool:
        """One pass in dependency order; True when every resource is Ready."""
        for kb in manifests.knowledge_bases:
            self._guard(kb, self._knowledge_base, manifests)
        for at in manifests.trainings:
            self._guard(at, self._training, manifests)
        for pool in manifests.pools:  # before its endpoints: they route to its pods
            self._guard(pool, self._pool, manifests)
        for he in manifests.endpoints:
            self._guard(he, self._endpoint, manifests)
        everything: list[Resource[Any]] = [
            *manifests.knowledge_bases,
            *manifests.trainings,
            *manifests.pools,
            *manifests.endpoints,
        ]
        keys = {r.key for r in everything}
        return all(self.state.resources[k].ready for k in keys)

    def down(self) -> list[str]:
        milvus = self.state.servers.get(MILVUS)
        stopped = self.servers.stop_all()
        for resource in self.state.resources.values():
            if resource.kind in ("HybridEndpoint", POOL_KIND):
                resource.ready, resource.reason, resource.message = False, "Stopped", "tandem down"
            elif resource.kind == "KnowledgeBase" and (
                resource.local.get("milvusServer") == MILVUS
                or (milvus is not None and resource.local.get("milvusUri") == milvus.url)
            ):
                resource.ready, resource.reason = False, "Stopped"
                resource.message = "tandem down stopped its milvus-lite server; `tandem up` starts it again"
        self.state.save()
        return stopped

    def interrupt(self) -> None:
        """Stop the work in progress; servers keep running."""
        self.runner.interrupt()

    # --- per kind ----------------------------------------------------------------------------------

    def _guard(self, resource: Resource[Any], step: Callable[..., None], manifests: Manifests) -> None:
        status = self.state.resource(resource.kind, resource.namespace, resource.name)
        try:
            step(resource, status, manifests)
        except WorkFailed as e:
            self.state.set(status, ready=False, reason=e.reason, message=str(e))
            self.progress(resource.key, {"stage": "failed", "reason": e.reason, "message": str(e)})

    def milvus_uri(self, spec: KnowledgeBaseSpec, on_restart: Callable[[str], None] | None = None) -> str:
        """The KnowledgeBase's Milvus: its own, or local mode's milvus-lite server, started if it is not
        running and answering (on the port it had, when that is free, so recorded URIs stay valid)."""
        if spec.milvus.uri:
            return spec.milvus.uri
        recorded = [
            r.local["milvusUri"]
            for r in self.state.resources.values()
            if r.kind == "KnowledgeBase" and r.local.get("milvusServer") == MILVUS and "milvusUri" in r.local
        ]
        server = self.servers.ensure(
            MILVUS,
            "local",
            lambda port: [
                str(Path(sys.executable).with_name("milvus-lite")),
                "server",
                "--data-dir",
                str(self.dir / "milvus"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            ready=None,
            timeout=60,
            port=int(recorded[0].rsplit(":", 1)[1]) if recorded else None,
            on_restart=on_restart,
        )
        return server.url

    def _knowledge_base(
        self, kb: Resource[KnowledgeBaseSpec], status: ResourceState, manifests: Manifests
    ) -> None:
        locations = {
            s.name: str(local_path(s.directory.path, kb.file.parent, self.dir))
            for s in kb.spec.sources
            if s.directory is not None and s.directory.claim_name is None
        }
        secrets, env = self._source_secrets(kb, manifests)
        spec_json = kb.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        fingerprint = _fingerprint(
            {
                "spec": spec_json,
                "files": {n: _files_fingerprint(Path(p)) for n, p in locations.items()},
                "secrets": digest({"files": secrets, "env": env}),  # a fixed credential re-reads the source
            }
        )
        locations.update(self._write_secret_files(kb, secrets))
        if (
            status.fingerprint == fingerprint
            and "milvusUri" in status.local
            and self._still_indexed(kb, status, manifests)
        ):
            return
        milvus_uri = self.milvus_uri(kb.spec, self._restarting(kb, manifests))
        resolved = resolve_knowledge_base(kb.namespace, kb.name, kb.spec, default_milvus_uri=milvus_uri)
        job = ingest_job(
            kb.namespace,
            kb.name,
            kb.spec,
            default_milvus_uri=milvus_uri,
            revision=fingerprint,
            source_locations=locations,
            token_file=secret_token_file(self.dir, manifests, resolved),
        )
        self.state.set(status, ready=False, reason="Indexing", message="ingest running")
        result = self.runner.run(kb.key, "tandem.workloads.ingest", job, env=env)
        message, figures = core_status.indexed(result, fingerprint, job.collection)
        self.state.set(
            status,
            ready=True,
            reason="Indexed",
            message=message,
            fingerprint=fingerprint,
            # What this run changed (the operator's status keeps only the totals; its Job log has these).
            local={
                "milvusUri": job.milvus_uri,
                "milvusServer": None if kb.spec.milvus.uri else MILVUS,
                "indexedMessage": message,
                **{k: result[k] for k in ("added", "updated", "unchanged", "removed") if k in result},
                "embeddedChunks": result.get("embedded_chunks"),
            },
            **figures,
            lastIndexedTime=result.get("finished_at"),
        )

    def _still_indexed(
        self, kb: Resource[KnowledgeBaseSpec], status: ResourceState, manifests: Manifests
    ) -> bool:
        """Whether the KnowledgeBase's last ingest of these very inputs is still searchable: its Milvus
        answers (local mode's server restarted if it is found stopped, crashed or hung) and holds the
        collection with every chunk. Restores Ready when it is; False when the collection is gone or
        short (ingest again); WorkFailed (MilvusUnavailable) when its Milvus cannot be reached."""
        local_server = not kb.spec.milvus.uri
        if local_server:
            health = self.servers.check(MILVUS)
            if health is None or not health.ok:
                why = f"milvus-lite server {health}" if health else "the milvus-lite server is not running"
                self._unavailable(kb, status, manifests, f"{why}: starting it again")
        uri = self.milvus_uri(kb.spec)
        collection = str(status.figures.get("collection") or "")
        resolved = resolve_knowledge_base(
            kb.namespace, kb.name, kb.spec, default_milvus_uri=uri, collection=collection or None
        )
        target = knowledge_base_target(resolved, secret_token_file(self.dir, manifests, resolved))
        try:
            chunks = self._count_chunks(kb.key, target)
        except MilvusUnreachable as e:
            if not local_server:
                self._unavailable(kb, status, manifests, str(e))
                raise WorkFailed("MilvusUnavailable", str(e)) from None
            # Ours, listening, and not answering (hung): started again, once per pass.
            self._unavailable(kb, status, manifests, f"milvus-lite server: {e}: restarting it")
            self.servers.stop(MILVUS)
            target = target.model_copy(update={"milvus_uri": self.milvus_uri(kb.spec)})
            try:
                chunks = self._count_chunks(kb.key, target)
            except MilvusUnreachable as again:
                self._unavailable(kb, status, manifests, f"milvus-lite server restarted: {again}")
                raise WorkFailed("MilvusUnavailable", str(again)) from None
        expected = status.figures.get("chunks")
        if chunks is None or (expected is not None and chunks != expected):
            found = "is gone" if chunks is None else f"holds {chunks} chunks, not {expected}"
            message = f"collection {resolved.collection} {found}: indexing again"
            self.progress(kb.key, {"stage": "reindex", "message": message})
            return False
        local = {"milvusUri": target.milvus_uri, "milvusServer": MILVUS if local_server else None}
        message = status.local.get("indexedMessage") or (
            f"{status.figures.get('documents')} documents, {expected} chunks at revision "
            f"{status.figures.get('indexedRevision')}"
        )
        if (status.ready, status.reason, status.message) != (True, "Indexed", message) or any(
            status.local.get(k) != v for k, v in local.items()
        ):
            self.state.set(status, ready=True, reason="Indexed", message=message, local=local)
        return True

    def _count_chunks(self, key: str, target: KnowledgeBaseTarget) -> int | None:
        """The chunks in the collection (None: it does not exist), or MilvusUnreachable when Milvus does not
        answer within MILVUS_PROBE_SECONDS. The check runs in a thread of its own: a Milvus that accepts
        connections and never answers holds a pymilvus call for over a minute, and `tandem up` must not
        wait for it (nor start a second check while the first still hangs)."""
        from tandem.workloads.knowledge.targets import open_store

        def count() -> int | None:
            store = open_store(target)
            try:
                # count() also loads the collection: a restarted milvus-lite server holds it released.
                return store.count() if store.exists() else None
            finally:
                store.close()

        running = self._probes.get(key)
        if running is None or running.done():
            running = self._probes[key] = _in_thread(count)
        try:
            return running.result(timeout=MILVUS_PROBE_SECONDS)
        except TimeoutError:
            raise MilvusUnreachable(
                f"Milvus at {target.milvus_uri} did not answer within {MILVUS_PROBE_SECONDS:.0f}s"
            ) from None
        except Exception as e:  # pymilvus raises several types; all mean "not reachable now"
            raise MilvusUnreachable(
                f"cannot search collection {target.collection} at {target.milvus_uri}: {e}"
            ) from None

    def _restarting(self, kb: Resource[KnowledgeBaseSpec], manifests: Manifests) -> Callable[[str], None]:
        status = self.state.resource(kb.kind, kb.namespace, kb.name)
        return lambda why: self._unavailable(kb, status, manifests, why)

    def _unavailable(
        self, kb: Resource[KnowledgeBaseSpec], status: ResourceState, manifests: Manifests, why: str
    ) -> None:
        """The KnowledgeBase's Milvus does not answer: it is not Ready, and neither is any HybridEndpoint
        that retrieves from it (until the endpoint's own check finds retrieval answering again)."""
        if (status.ready, status.reason, status.message) != (False, "MilvusUnavailable", why):
            self.state.set(status, ready=False, reason="MilvusUnavailable", message=why)
        for he in manifests.endpoints:
            if not any(
                (r.namespace or he.namespace, r.name) == (kb.namespace, kb.name)
                for r in he.spec.knowledge_bases
            ):
                continue
            served = self.state.resource(he.kind, he.namespace, he.name)
            if served.ready:
                self.state.set(
                    served,
                    ready=False,
                    reason="RetrievalUnavailable",
                    message=f"KnowledgeBase {kb.namespace}/{kb.name}: {why}; routes without retrieval "
                    "keep serving",
                )

    def _training(
        self, at: Resource[AdapterTrainingSpec], status: ResourceState, manifests: Manifests
    ) -> None:
        spec = at.spec
        dataset = (
            local_path(spec.dataset.uri, at.file.parent, self.dir)
            if spec.dataset and spec.dataset.uri
            else None
        )
        data_digest = hashlib.sha256(dataset.read_bytes()).hexdigest() if dataset else ""
        raft_kb = None
        if spec.raft is not None:
            ref = spec.raft.knowledge_base_ref
            raft_kb = knowledge_base(self.state, manifests, ref.namespace or at.namespace, ref.name)
        # Locally the dataset's bytes are part of the version: editing the file trains a new adapter.
        version = adapter_version(spec, raft_kb, run_token=data_digest[:16])
        output_root = local_path(spec.output.uri, at.file.parent, self.dir)
        output = Path(adapter_folder(str(output_root), at.name, version))
        done = (output / "tandem-manifest.json").exists() and "rank" in status.local
        publish = spec.output.publish
        # A store set, changed or removed since runs again: the adapter is found trained, only published.
        wanted = publish.model_dump(mode="json") if publish is not None else None
        if status.ready and status.fingerprint == version and done and status.local.get("publish") == wanted:
            return
        extra = [] if self.use_ray else ["--no-ray"]
        if publish is not None and publish.credentials_secret_ref is not None:
            folder = secret_folder(
                self.dir,
                manifests,
                at.namespace,
                publish.credentials_secret_ref.name,
                f"AdapterTraining {at.namespace}/{at.name}: spec.output.publish.credentialsSecretRef",
            )
            extra.append(f"--publish-credentials={folder}")
        job = training_job(
            at.namespace,
            at.name,
            spec,
            version=version,
            base_model=spec.base_model.uri,
            dataset=str(dataset) if dataset else None,
            output=str(output),
            raft=knowledge_base_target(raft_kb, secret_token_file(self.dir, manifests, raft_kb))
            if raft_kb
            else None,
            model_cache=str(self.model_cache),
        )
        self.state.set(status, ready=False, reason="Training", message=f"training version {version}")
        result = self.runner.run(at.key, "tandem.workloads.train", job, *extra)
        skipped = bool(result.get("skipped"))
        metrics = result.get("metrics") or {}
        self.state.set(
            status,
            ready=True,
            reason="Skipped" if skipped else "Trained",
            message=f"adapter {at.name}-{version}" + (" (already trained)" if skipped else ""),
            fingerprint=version,
            phase="Succeeded",
            adapterUri=str(output),
            adapterVersion=version,
            **{"artifact": None, **core_status.trained(result)},  # None: no earlier run's artifact
            local={
                "rank": spec.lora.r,
                "publish": wanted,
                # What retraining costs (the evaluation's update-cost figure); a skipped run keeps the last.
                "trainingSeconds": metrics.get("seconds")
                if not skipped
                else status.local.get("trainingSeconds"),
                "trainedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                if not skipped
                else status.local.get("trainedAt"),
            },
        )

    def resolve_adapters(self, he: Resource[HybridEndpointSpec]) -> list[ResolvedAdapter]:
        adapters = []
        for adapter in he.spec.adapters:
            if adapter.uri:
                remote = adapter.uri.partition("://")[0] in REMOTE_ADAPTER_SCHEMES  # fetched by digest
                where = adapter.uri if remote else str(local_path(adapter.uri, he.file.parent, self.dir))
                adapters.append(uri_adapter(adapter, where))
                continue
            ref = adapter.adapter_training_ref
            assert ref is not None
            trained = self.state.resource("AdapterTraining", ref.namespace or he.namespace, ref.name)
            if not trained.ready:
                raise WorkFailed(
                    "WaitingForAdapter", f"AdapterTraining {ref.name} is not Ready: {trained.message}"
                )
            f = trained.figures
            adapters.append(
                trained_adapter(
                    adapter,
                    # The folder it wrote, on this machine, even when it also published an artifact.
                    f["adapterUri"],
                    trained.local["rank"],
                    f["adapterVersion"],
                    digest=f.get("adapterDigest"),
                    namespace=trained.namespace,
                )
            )
        return adapters

    def _pool(self, pool: Resource[ServingPoolSpec], status: ResourceState, manifests: Manifests) -> None:
        reconcile_pool(self, pool, status, manifests)

    def _endpoint(
        self, he: Resource[HybridEndpointSpec], status: ResourceState, manifests: Manifests
    ) -> None:
        if he.spec.serving_pool_ref is not None:
            pooled_endpoint(self, he, status, manifests, self._ensure_gateway)
            return
        spec = he.spec
        adapters = self.resolve_adapters(he)
        fetcher = fetcher_for(self.dir, manifests, he, adapters)
        served = [
            AdapterConfig(
                name=a.name,
                # An oci:// or s3:// adapter: fetched by the sync into the cache, verified, loaded from there.
                path=str(fetcher.cache_dir / a.digest) if fetcher and a.remote and a.digest else a.uri,
                version=a.version,
                digest=a.digest,
                uri=a.uri if a.remote else None,
            )
            for a in adapters
        ]
        knowledge, secrets = self.gateway_inputs(he, manifests)
        fingerprint = _fingerprint(
            {
                "spec": spec.model_dump(mode="json"),
                "adapters": [a.model_dump() for a in served],
                "knowledge": [k.model_dump(mode="json") for k in knowledge],
                "keys": secrets,
            }
        )
        if (
            status.fingerprint == fingerprint
            and status.reason in SERVING
            and all(
                (h := self.servers.check(f"{kind}:{he.namespace}/{he.name}")) is not None and h.ok
                for kind in ("vllm", "gateway")
            )
        ):
            # Started for these inputs and answering: which routes serve is a matter of what answers now.
            url = str(status.figures["url"]).removesuffix("/v1")
            now = endpoint_condition(url)
            knowledge_ready = all(
                self.state.resource("KnowledgeBase", r.namespace or he.namespace, r.name).ready
                for r in spec.knowledge_bases
            )
            restarted = self._gateway_restarts.get(he.key, -GATEWAY_RESTART_EVERY)
            recent = time.monotonic() - restarted < GATEWAY_RESTART_EVERY
            if now.reason != "RetrievalUnavailable" or not knowledge_ready or recent:
                if (status.ready, status.reason, status.message) != (now.ready, now.reason, now.message):
                    phase = "Ready" if now.ready else "Progressing"
                    self.state.set(
                        status, ready=now.ready, reason=now.reason, message=now.message, phase=phase
                    )
                return
            # Every KnowledgeBase answered this pass's own check, yet not the gateway: its connection is
            # stuck (after an outage gRPC backs off reconnecting for up to two minutes, and a new client in
            # the same process shares the stuck channel). A gateway started now connects at once.
            self.state.set(status, ready=False, reason=now.reason, message=now.message, phase="Progressing")
            self.progress(
                he.key,
                {
                    "stage": "gateway",
                    "message": "Milvus answers again but the gateway's connection does not: "
                    "restarting the gateway",
                },
            )
            self.servers.stop(f"gateway:{he.namespace}/{he.name}")
            self._gateway_restarts[he.key] = time.monotonic()
        model = self.prepare_model(he.key, spec.base_model)
        directory = self.endpoint_directory(he)
        vllm_key_file = self.vllm_key(directory)
        vllm_key = vllm_key_file.read_text().strip()
        vllm = self._ensure_vllm(he, str(model.path), adapters, vllm_key)
        loaded = self._sync_adapters(vllm, served, vllm_key, fetcher)

        key_files = self.write_key_files(directory, secrets)
        config = gateway_config(
            spec,
            namespace=he.namespace,
            name=he.name,
            vllm_url=vllm.url,
            adapters=served,
            knowledge_bases=knowledge,
            api_key_files=key_files,
            vllm_api_key_file=str(vllm_key_file),
        )
        gateway = self._ensure_gateway(he, config, vllm_key_file, secrets)
        now = endpoint_condition(gateway.url)
        self.state.set(
            status,
            ready=now.ready,
            reason=now.reason,
            message=now.message,
            fingerprint=fingerprint,
            phase="Ready" if now.ready else "Progressing",
            url=f"{gateway.url}/v1",
            replicas=1,
            readyReplicas=1,
            gatewayReadyReplicas=1,
            # What vLLM's /v1/models listed after the sync: never more than was observed.
            adapters=[
                {
                    "name": a.name,
                    "version": a.version,
                    "loadedReplicas": int(a.name in loaded),
                    "ready": a.name in loaded,
                }
                for a in served
            ],
            local={
                "vllmUrl": vllm.url,
                "routes": [r.name for r in config.routes],
                "keyFiles": key_files,
            },
        )

    def prepare_model(self, key: str, source: ModelSource) -> PreparedModel:
        """The base model as a folder vLLM serves (converted once into the model cache), or WorkFailed."""
        from tandem.workloads.models import ModelError, prepare

        try:
            self.progress(key, {"stage": "model", "message": "preparing the base model"})
            return prepare(
                source.uri,
                source.gguf_file,
                self.model_cache,
                allow_private_networks=source.allow_private_networks,
            )
        except ModelError as e:
            raise WorkFailed(e.reason, str(e)) from None

    # --- gateways ----------------------------------------------------------------------------------

    def endpoint_directory(self, he: Resource[HybridEndpointSpec]) -> Path:
        return self.dir / "endpoints" / f"{he.namespace}-{he.name}"

    def gateway_inputs(
        self, he: Resource[HybridEndpointSpec], manifests: Manifests
    ) -> tuple[list[KnowledgeBaseConfig], dict[str, str]]:
        """The endpoint's KnowledgeBases as its gateway searches them, and each tenant's API key."""
        knowledge = [
            knowledge_base_config(kb, secret_token_file(self.dir, manifests, kb))
            for kb in (
                knowledge_base(self.state, manifests, ref.namespace or he.namespace, ref.name)
                for ref in he.spec.knowledge_bases
            )
        ]
        secrets = {
            t.name: manifests.secrets[(he.namespace, t.api_key_secret_ref.name)][t.api_key_secret_ref.key]
            for t in he.spec.tenants
        }
        return knowledge, secrets

    @staticmethod
    def write_key_files(directory: Path, secrets: dict[str, str]) -> dict[str, str]:
        """Each tenant's key in a 0600 file (as a mounted Secret); tenant -> path."""
        key_files = {}
        for tenant, key in secrets.items():
            key_file = directory / "keys" / tenant
            write_private(key_file, key)
            key_files[tenant] = str(key_file)
        return key_files

    def _ensure_gateway(
        self,
        he: Resource[HybridEndpointSpec],
        config: GatewayConfig,
        vllm_key_file: Path,
        secrets: dict[str, str],
    ) -> Server:
        """The endpoint's gateway on `config`, started again when the configuration, a tenant's key or the
        vLLM key changed."""
        directory = self.endpoint_directory(he)
        wire = config.model_dump(by_alias=True, exclude_none=True, mode="json")
        config_file = directory / "gateway.json"
        directory.mkdir(parents=True, exist_ok=True)  # an endpoint without tenants has no key files in it
        config_file.write_text(json.dumps(wire, indent=2, sort_keys=True))
        vllm_key = vllm_key_file.read_text().strip()
        return self.servers.ensure(
            f"gateway:{he.namespace}/{he.name}",
            # The vLLM key's digest too: the gateway reads it at start, so a new key restarts it.
            digest({"config": wire, "keys": secrets, "vllm": digest(vllm_key)}, FINGERPRINT_DIGEST),
            lambda port: [
                sys.executable,
                "-m",
                "tandem.workloads.gateway",
                "--config",
                str(config_file),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                # No /metrics locally: every local gateway would otherwise claim the same port (9090).
                "--metrics-port",
                "0",
            ],
            ready="/readyz",
            timeout=180,
            port=self.gateway_port
            if not self.state.servers.get(f"gateway:{he.namespace}/{he.name}")
            else None,
        )

    # --- servers -----------------------------------------------------------------------------------

    @staticmethod
    def vllm_key(directory: Path) -> Path:
        """The endpoint's key between gateway and vLLM (issue 15, item 1), as a cluster's generated Secret:
        random, made once, kept in a 0600 file in the endpoint's 0700 folder. vLLM refuses every route
        but /health and /metrics to any local process without it (tandem.core.vllm_guard)."""
        path = directory / "vllm-key"
        if not path.is_file() or not path.read_text().strip():
            write_private(path, random_secrets.token_urlsafe(32))
        return path

    def _ensure_vllm(
        self,
        he: Resource[HybridEndpointSpec],
        model_path: str,
        adapters: list[ResolvedAdapter],
        api_key: str,
    ) -> Server:
        from .vllm import key_guard, vllm_env, vllm_python

        serving = he.spec.serving
        python = self.vllm_python or vllm_python()

        # vLLM's own key check leaves /invocations open: the guard requires the key on every route.
        guard_arguments, guard_env = key_guard(self.dir / "vllm-guard")

        def argv(port: int) -> list[str]:
            return guard_arguments + vllm_arguments(
                serving,
                model=model_path,
                host="127.0.0.1",
                port=port,
                declared_adapters=len(he.spec.adapters),
                adapters=adapters,
                # The CPU build has no half-precision kernels for every op; bfloat16 is what it serves.
                dtype="bfloat16" if serving.dtype == "auto" else serving.dtype,
            )

        self.progress(he.key, {"stage": "vllm", "message": "starting vLLM (CPU build): about a minute"})
        return self.servers.ensure(
            f"vllm:{he.namespace}/{he.name}",
            # The key's digest: a vLLM started without this key (an older `tandem up`) is restarted.
            _fingerprint({"model": model_path, "argv": argv(0), "key": digest(api_key, FINGERPRINT_DIGEST)}),
            lambda port: [python, "-m", "vllm.entrypoints.openai.api_server", *argv(port)],
            ready="/health",
            timeout=600,
            env={**vllm_env(), **guard_env, VLLM_API_KEY_ENV: api_key},
        )

    def _sync_adapters(
        self, vllm: Server, adapters: list[AdapterConfig], api_key: str, fetcher: Fetcher | None = None
    ) -> set[str]:
        """Load the adapters into vLLM (fetching those from stores first); the names its /v1/models lists
        afterwards."""
        from tandem.workloads.adapter_sync import VllmAdmin, sync_once

        with VllmAdmin(vllm.url, api_key=api_key) as admin:
            sync_once(vllm.url, [a.model_dump() for a in adapters], admin=admin, fetcher=fetcher)
            return {a.name for a in admin.loaded_adapters()}

    # --- workloads ---------------------------------------------------------------------------------

    def _source_secrets(
        self, kb: Resource[KnowledgeBaseSpec], manifests: Manifests
    ) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """What the ingest pod would get from Secrets: an http source's headers (as files, per source)
        and an s3 source's credentials (as environment variables). Checked to exist when loaded."""
        files: dict[str, dict[str, str]] = {}
        env: dict[str, str] = {}
        for source in kb.spec.sources:
            if source.http is not None and source.http.headers_secret_ref is not None:
                files[source.name] = manifests.secrets[(kb.namespace, source.http.headers_secret_ref.name)]
            if source.s3 is not None and source.s3.credentials_secret_ref is not None:
                data = manifests.secrets[(kb.namespace, source.s3.credentials_secret_ref.name)]
                env.update({f"{s3_env_prefix(source.name)}_{k}": data[k] for k in S3_CREDENTIAL_KEYS})
        return files, env

    def _write_secret_files(
        self, kb: Resource[KnowledgeBaseSpec], secrets: dict[str, dict[str, str]]
    ) -> dict[str, str]:
        """Each source's Secret as a directory of one file per key, readable by this user only (as a
        Secret volume is in a pod); the directory is the source's location."""
        locations = {}
        for source, data in secrets.items():
            directory = self.dir / "secrets" / f"{kb.namespace}-{kb.name}-{source}"
            shutil.rmtree(directory, ignore_errors=True)  # keys removed from the Secret go too
            for key, value in data.items():
                write_private(directory / key, value)
            directory.mkdir(parents=True, mode=0o700, exist_ok=True)
            locations[source] = str(directory)
        return locations

    # --- evaluating --------------------------------------------------------------------------------

    def evaluate(self, ev: Resource[EvaluationSpec], manifests: Manifests) -> dict[str, Any]:
        """Run one Evaluation against the endpoint `tandem up` serves; the report goes under the state
        directory (or spec.report.uri). Returns the workload's result."""
        ref = ev.spec.endpoint_ref
        he = manifests.endpoint(ref.namespace or ev.namespace, ref.name)
        assert he is not None  # the manifests were checked
        served = self.state.resource("HybridEndpoint", he.namespace, he.name)
        if "url" not in served.figures or served.reason not in SERVING:
            raise WorkFailed(
                "WaitingForEndpoint",
                f"HybridEndpoint {he.name} is not serving ({served.reason}: {served.message}): "
                "run `tandem up` first",
            )
        # Observed now, not as recorded (`tandem up` may not be watching): with no route answering there is
        # nothing to compare. A retrieval outage is left to the workload's probe of each compared route.
        now = endpoint_condition(str(served.figures["url"]).removesuffix("/v1"))
        if now.reason in ("GatewayUnavailable", "VllmUnavailable"):
            raise WorkFailed(now.reason, f"HybridEndpoint {he.name}: {now.message}; nothing was asked")
        status = self.state.resource("Evaluation", ev.namespace, ev.name)
        output = (
            local_path(ev.spec.report.uri, ev.file.parent, self.dir)
            if ev.spec.report
            else self.dir / "evaluations" / f"{ev.namespace}-{ev.name}"
        )
        job = evaluation_job(ev, he, manifests, self.state, self.dir, output)
        self.state.set(status, ready=False, reason="Running", message=f"asking {he.name}")
        try:
            result = self.runner.run(ev.key, "tandem.workloads.evaluation", job)
        except WorkFailed as e:
            self.state.set(status, ready=False, reason=e.reason, message=str(e))
            raise
        trustworthy = result.get("trustworthy", True)
        if not trustworthy:  # a recommendation from a broken run would mislead: there is none, say why
            reason = "Untrustworthy"
            message = "not trustworthy: " + "; ".join(
                result.get("untrustworthyReasons") or ["see the report"]
            )
        else:
            reason = "Evaluated" if result.get("complete") else "PartialResults"
            message = result.get("recommendation", "")
        self.state.set(
            status,
            ready=bool(trustworthy),
            reason=reason,
            message=message,
            reportUri=str(output),
            questions=result.get("questions"),
            answered=result.get("answered"),
        )
        return result
