"""Local mode: the same manifests a cluster takes, reconciled on this machine in dependency order.

KnowledgeBases are ingested into a milvus-lite server, AdapterTrainings train with PEFT, and each
HybridEndpoint gets vLLM's CPU build plus the gateway on 127.0.0.1. The work is the cluster's own
workloads (`tandem.workloads.ingest`, `tandem.workloads.train`, `tandem.workloads.gateway`), run as
subprocesses; their JSON progress lines drive the progress bars. Each resource is reconciled when its
inputs' fingerprint changes (spec, files of its sources, dataset bytes), so a second `tandem up`
resumes instead of redoing work, and a watch loop picks up edits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tandem.api.v1alpha1 import AdapterTrainingSpec, EvaluationSpec, HybridEndpointSpec, KnowledgeBaseSpec
from tandem.api.v1alpha1.hybridendpoint import Adapter
from tandem.api.v1alpha1.knowledgebase import S3_CREDENTIAL_KEYS, s3_env_prefix
from tandem.naming import collection_name
from tandem.platform.kubernetes.planners.hybridendpoint import (
    BASE_MODEL_NAME,
    default_routes,
    gateway_config,
    max_lora_rank,
)
from tandem.workloads.evaluation.job import EvaluationJob, KnowledgeBaseInfo, RetrainInfo, RouteInfo

from . import processes
from .manifests import Manifests, Resource, local_path
from .state import ResourceState, Server, State

Progress = Callable[[str, dict[str, Any]], None]  # (resource key, event) -> None


class WorkFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def digest(value: Any, length: int = 16) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


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
        self._child: subprocess.Popen[str] | None = None

    # --- entry points ------------------------------------------------------------------------------

    def reconcile(self, manifests: Manifests) -> bool:
        """One pass in dependency order; True when every resource is Ready."""
        for kb in manifests.knowledge_bases:
            self._guard(kb, self._knowledge_base, manifests)
        for at in manifests.trainings:
            self._guard(at, self._training, manifests)
        for he in manifests.endpoints:
            self._guard(he, self._endpoint, manifests)
        everything: list[Resource[Any]] = [
            *manifests.knowledge_bases,
            *manifests.trainings,
            *manifests.endpoints,
        ]
        keys = {r.key for r in everything}
        return all(self.state.resources[k].ready for k in keys)

    def down(self) -> list[str]:
        stopped = []
        for name, server in list(self.state.servers.items()):
            processes.stop(server.pid)
            stopped.append(f"{name} (pid {server.pid})")
            del self.state.servers[name]
        for resource in self.state.resources.values():
            if resource.kind == "HybridEndpoint":
                resource.ready, resource.reason, resource.message = False, "Stopped", "tandem down"
        self.state.save()
        return stopped

    def interrupt(self) -> None:
        """Stop the work in progress (its whole process group); servers keep running."""
        child = self._child
        if child is not None and child.poll() is None:
            processes.stop(child.pid, timeout=20)  # the workload leads its own process group
            child.wait()

    # --- per kind ----------------------------------------------------------------------------------

    def _guard(self, resource: Resource[Any], step: Callable[..., None], manifests: Manifests) -> None:
        status = self.state.resource(resource.kind, resource.namespace, resource.name)
        try:
            step(resource, status, manifests)
        except WorkFailed as e:
            self.state.set(status, ready=False, reason=e.reason, message=str(e))
            self.progress(resource.key, {"stage": "failed", "reason": e.reason, "message": str(e)})

    def _milvus_uri(self, spec: KnowledgeBaseSpec) -> str:
        if spec.milvus.uri:
            return spec.milvus.uri
        server = self._ensure_server(
            "milvus",
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
        fingerprint = digest(
            {
                "spec": spec_json,
                "files": {n: _files_fingerprint(Path(p)) for n, p in locations.items()},
                "secrets": digest({"files": secrets, "env": env}),  # a fixed credential re-reads the source
            }
        )
        locations.update(self._write_secret_files(kb, secrets))
        if status.ready and status.fingerprint == fingerprint:
            return
        job = {
            "namespace": kb.namespace,
            "name": kb.name,
            "collection": collection_name(kb.namespace, kb.name),
            "milvusUri": self._milvus_uri(kb.spec),
            "revision": fingerprint,
            "sourceLocations": locations,
            "spec": spec_json,
        }
        self.state.set(status, ready=False, reason="Indexing", message="ingest running")
        result = self._run_workload(kb.key, "tandem.workloads.ingest", job, env=env)
        failed = result.get("failed_documents") or []
        failed_count = result.get("failed_document_count", len(failed))
        message = f"{result['documents']} documents, {result['chunks']} chunks"
        if failed_count:
            message += f"; {failed_count} failed: " + ", ".join(
                f"{f['source']}/{f['document']} ({f['reason']})" for f in failed
            )
        self.state.set(
            status,
            ready=True,
            reason="Indexed",
            message=message,
            fingerprint=fingerprint,
            collection=job["collection"],
            milvusUri=job["milvusUri"],
            documents=result["documents"],
            chunks=result["chunks"],
            embeddedChunks=result["embedded_chunks"],
            added=result["added"],
            updated=result["updated"],
            unchanged=result["unchanged"],
            removed=result["removed"],
            failedDocuments=failed_count,
            embeddingDimension=result["embedding_dimension"],
            embeddingModel=kb.spec.embedding.model,
            search=kb.spec.search.model_dump(by_alias=True, mode="json"),
        )

    def _training(
        self, at: Resource[AdapterTrainingSpec], status: ResourceState, manifests: Manifests
    ) -> None:
        from tandem.platform.kubernetes.planners.adaptertraining import ResolvedKnowledgeBase, adapter_version

        spec = at.spec
        dataset = (
            local_path(spec.dataset.uri, at.file.parent, self.dir)
            if spec.dataset and spec.dataset.uri
            else None
        )
        data_digest = hashlib.sha256(dataset.read_bytes()).hexdigest() if dataset else ""
        raft_kb = None
        raft_job = None
        if spec.raft is not None:
            ref = spec.raft.knowledge_base_ref
            kb_state = self.state.resource("KnowledgeBase", ref.namespace or at.namespace, ref.name)
            if not kb_state.ready:
                raise WorkFailed("WaitingForKnowledgeBase", f"KnowledgeBase {ref.name} is not Ready")
            figures = kb_state.figures
            raft_kb = ResolvedKnowledgeBase(
                kb_state.namespace,
                ref.name,
                figures["collection"],
                figures["milvusUri"],
                kb_state.fingerprint,
            )
            raft_job = {"collection": figures["collection"], "milvusUri": figures["milvusUri"]}
        # Locally the dataset's bytes are part of the version: editing the file trains a new adapter.
        version = adapter_version(spec, raft_kb, run_token=data_digest[:16])
        output = local_path(spec.output.uri, at.file.parent, self.dir) / f"{at.name}-{version}"
        if status.ready and status.fingerprint == version and (output / "tandem-manifest.json").exists():
            return
        job = {
            "namespace": at.namespace,
            "name": at.name,
            "version": version,
            "baseModel": spec.base_model.uri,
            "dataset": str(dataset) if dataset else None,
            "output": str(output),
            "modelCache": str(self.model_cache),
            "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
            **({"raftKnowledgeBase": raft_job} if raft_job else {}),
        }
        self.state.set(status, ready=False, reason="Training", message=f"training version {version}")
        result = self._run_workload(
            at.key, "tandem.workloads.train", job, *([] if self.use_ray else ["--no-ray"])
        )
        metrics = result.get("metrics") or {}
        self.state.set(
            status,
            ready=True,
            reason="Skipped" if result.get("skipped") else "Trained",
            message=f"adapter {at.name}-{version}" + (" (already trained)" if result.get("skipped") else ""),
            fingerprint=version,
            adapterPath=str(output),
            adapterVersion=version,
            adapterDigest=result.get("adapterDigest"),
            rank=spec.lora.r,
            loss=metrics.get("loss") or metrics.get("final_loss"),
            steps=metrics.get("steps"),
            # What retraining costs, for the evaluation's update-cost figure; a skipped run keeps the last.
            trainingSeconds=metrics.get("seconds") or status.figures.get("trainingSeconds"),
            trainedAt=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if not result.get("skipped")
            else status.figures.get("trainedAt"),
        )

    def _endpoint(
        self, he: Resource[HybridEndpointSpec], status: ResourceState, manifests: Manifests
    ) -> None:
        from tandem.workloads.models import ModelError, prepare

        spec = he.spec
        adapters = []
        for adapter in spec.adapters:
            if adapter.uri:
                path = local_path(adapter.uri, he.file.parent, self.dir)
                adapters.append(
                    {"name": adapter.name, "path": str(path), "version": None, "rank": adapter.rank or 8}
                )
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
                {
                    "name": adapter.name,
                    "path": f["adapterPath"],
                    "version": f["adapterVersion"],
                    "rank": f["rank"],
                }
            )
        knowledge = []
        for ref in spec.knowledge_bases:
            kb_state = self.state.resource("KnowledgeBase", ref.namespace or he.namespace, ref.name)
            if not kb_state.ready:
                raise WorkFailed("WaitingForKnowledgeBase", f"KnowledgeBase {ref.name} is not Ready")
            f = kb_state.figures
            knowledge.append(
                {
                    "namespace": kb_state.namespace,
                    "name": kb_state.name,
                    "collection": f["collection"],
                    "milvusUri": f["milvusUri"],
                    "embeddingModel": f["embeddingModel"],
                    "search": f["search"],
                }
            )
        secrets = {
            t.name: manifests.secrets[(he.namespace, t.api_key_secret_ref.name)][t.api_key_secret_ref.key]
            for t in spec.tenants
        }
        fingerprint = digest(
            {
                "spec": spec.model_dump(mode="json"),
                "adapters": adapters,
                "knowledge": knowledge,
                "keys": secrets,
            }
        )
        servers = [self.state.servers.get(f"{kind}:{he.namespace}/{he.name}") for kind in ("vllm", "gateway")]
        if (
            status.ready
            and status.fingerprint == fingerprint
            and all(s and processes.alive(s.pid) for s in servers)
        ):
            return
        try:
            self.progress(he.key, {"stage": "model", "message": "preparing the base model"})
            model = prepare(
                spec.base_model.uri,
                spec.base_model.gguf_file,
                self.model_cache,
                allow_private_networks=spec.base_model.allow_private_networks,
            )
        except ModelError as e:
            raise WorkFailed(e.reason, str(e)) from None
        vllm = self._ensure_vllm(he, str(model.path), adapters)
        self._sync_adapters(vllm, adapters)

        directory = self.dir / "endpoints" / f"{he.namespace}-{he.name}"
        keys = directory / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        key_files = {}
        for tenant, key in secrets.items():
            key_file = keys / tenant
            key_file.write_text(key)
            key_file.chmod(0o600)
            key_files[tenant] = str(key_file)
        config = gateway_config(
            spec,
            namespace=he.namespace,
            name=he.name,
            vllm_url=vllm.url,
            adapters=[{k: a[k] for k in ("name", "path", "version")} for a in adapters],
            knowledge_bases=knowledge,
            api_key_files=key_files,
        )
        config_file = directory / "gateway.json"
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
        gateway = self._ensure_server(
            f"gateway:{he.namespace}/{he.name}",
            digest({"config": config, "keys": secrets}),
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
            ],
            ready="/readyz",
            timeout=180,
            port=self.gateway_port
            if not self.state.servers.get(f"gateway:{he.namespace}/{he.name}")
            else None,
        )
        self.state.set(
            status,
            ready=True,
            reason="Serving",
            message=f"{gateway.url}/v1",
            fingerprint=fingerprint,
            url=f"{gateway.url}/v1",
            vllmUrl=vllm.url,
            routes=[r["name"] for r in config["routes"]],
            adapters={a["name"]: a["version"] for a in adapters},
            keyFiles=key_files,
        )

    # --- servers -----------------------------------------------------------------------------------

    def _ensure_vllm(
        self, he: Resource[HybridEndpointSpec], model_path: str, adapters: list[dict[str, Any]]
    ) -> Server:
        from tandem.platform.kubernetes.planners.hybridendpoint import ResolvedAdapter

        from .vllm import vllm_argv, vllm_env, vllm_python

        serving = he.spec.serving
        max_loras = serving.max_loras or max(1, min(len(adapters), 8))
        rank = max_lora_rank(
            [ResolvedAdapter(a["name"], a["path"], a["rank"], a["version"]) for a in adapters]
        )
        python = self.vllm_python or vllm_python()
        settings = {
            "model": model_path,
            "maxModelLen": serving.max_model_len,
            "dtype": serving.dtype,
            "maxLoras": max_loras,
            "maxLoraRank": rank,
            "lora": bool(adapters),
            "extra": serving.extra_args,
        }
        self.progress(he.key, {"stage": "vllm", "message": "starting vLLM (CPU build): about a minute"})
        return self._ensure_server(
            f"vllm:{he.namespace}/{he.name}",
            digest(settings),
            lambda port: [
                python,
                *vllm_argv(
                    model_path,
                    port=port,
                    served_name=BASE_MODEL_NAME,
                    max_model_len=serving.max_model_len,
                    dtype="bfloat16" if serving.dtype == "auto" else serving.dtype,
                    max_lora_rank=rank if adapters else None,
                    max_loras=max_loras,
                    extra=serving.extra_args,
                ),
            ],
            ready="/health",
            timeout=600,
            env=vllm_env(),
        )

    def _sync_adapters(self, vllm: Server, adapters: list[dict[str, Any]]) -> None:
        from tandem.workloads.adapter_sync import sync_once

        sync_once(vllm.url, [{k: a[k] for k in ("name", "path", "version")} for a in adapters])

    def _ensure_server(
        self,
        name: str,
        fingerprint: str,
        argv: Callable[[int], list[str]],
        *,
        ready: str | None,
        timeout: float,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> Server:
        """The server `name` running for `fingerprint`: reused if it is, (re)started if not."""
        existing = self.state.servers.get(name)
        if existing is not None and processes.alive(existing.pid):
            if existing.fingerprint == fingerprint:
                return existing
            processes.stop(existing.pid)
        port = (existing.port if existing else None) or port or processes.free_port()
        log = self.dir / "logs" / f"{name.replace(':', '-').replace('/', '-')}.log"
        pid = processes.start(argv(port), log, env)
        server = Server(pid=pid, port=port, log=str(log), fingerprint=fingerprint)
        self.state.servers[name] = server
        self.state.save()
        if ready is None:
            self._wait_port(server, timeout, name)
        else:
            processes.wait_ready(f"{server.url}{ready}", pid, log, timeout, name)
        return server

    @staticmethod
    def _wait_port(server: Server, timeout: float, what: str) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not processes.alive(server.pid):
                raise WorkFailed("ServerFailed", f"{what} exited: {processes.log_tail(Path(server.log))}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", server.port)) == 0:
                    return
            time.sleep(0.3)
        raise WorkFailed("ServerFailed", f"{what} did not listen on {server.port} in {timeout:.0f}s")

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
            directory.mkdir(parents=True, mode=0o700)
            for key, value in data.items():
                path = directory / key
                path.touch(mode=0o600)
                path.write_text(value)
            locations[source] = str(directory)
        return locations

    def _run_workload(
        self, key: str, module: str, job: dict[str, Any], *extra: str, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        jobs = self.dir / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        spec_file = jobs / f"{key.replace('/', '-')}.json"
        spec_file.write_text(json.dumps(job, indent=2))
        log = self.dir / "logs" / f"{key.replace('/', '-')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TANDEM_MODEL_CACHE": str(self.model_cache),
            **(env or {}),
        }
        result: dict[str, Any] | None = None
        with (
            log.open("a") as out,
            self._process(
                [sys.executable, "-m", module, "--spec", str(spec_file), *extra], env, out
            ) as child,
        ):
            assert child.stdout is not None
            for line in child.stdout:
                out.write(line)
                if not line.startswith("{"):
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "result" in event:
                    result = event["result"]
                else:
                    self.progress(key, event)
            code = child.wait()
        if result is None:
            raise WorkFailed("WorkloadFailed", f"{module} exited {code} without a result; see {log}")
        if "error" in result:
            raise WorkFailed(result["error"], result.get("message", ""))
        return result

    @contextmanager
    def _process(self, argv: list[str], env: dict[str, str], log: Any) -> Iterator[subprocess.Popen[str]]:
        child = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
        )
        self._child = child
        try:
            yield child
        finally:
            self.interrupt()
            self._child = None

    # --- evaluating --------------------------------------------------------------------------------

    def evaluate(self, ev: Resource[EvaluationSpec], manifests: Manifests) -> dict[str, Any]:
        """Run one Evaluation against the endpoint `tandem up` serves; the report goes under the state
        directory (or spec.report.uri). Returns the workload's result."""
        ref = ev.spec.endpoint_ref
        he = manifests.endpoint(ref.namespace or ev.namespace, ref.name)
        assert he is not None  # the manifests were checked
        served = self.state.resource("HybridEndpoint", he.namespace, he.name)
        if not served.ready:
            raise WorkFailed(
                "WaitingForEndpoint", f"HybridEndpoint {he.name} is not serving: run `tandem up` first"
            )
        status = self.state.resource("Evaluation", ev.namespace, ev.name)
        output = (
            local_path(ev.spec.report.uri, ev.file.parent, self.dir)
            if ev.spec.report
            else self.dir / "evaluations" / f"{ev.namespace}-{ev.name}"
        )
        job = EvaluationJob(
            namespace=ev.namespace,
            name=ev.name,
            gateway=served.figures["url"],
            api_key_files=served.figures.get("keyFiles") or {},
            routes=[
                self._route_info(he, r["name"], r.get("adapter"), r.get("retrieval", True), manifests)
                for r in default_routes(he.spec)
            ],
            questions=str(local_path(ev.spec.questions.uri or "", ev.file.parent, self.dir)),
            knowledge_bases=[
                self._knowledge_info(he.namespace, k.namespace, k.name, manifests)
                for k in he.spec.knowledge_bases
            ],
            retrain=[self._retrain_info(he, a) for a in he.spec.adapters],
            output=str(output),
            spec=ev.spec,
        )
        self.state.set(status, ready=False, reason="Running", message=f"asking {he.name}")
        try:
            result = self._run_workload(
                ev.key, "tandem.workloads.evaluation", job.model_dump(by_alias=True, mode="json")
            )
        except WorkFailed as e:
            self.state.set(status, ready=False, reason=e.reason, message=str(e))
            raise
        self.state.set(
            status,
            ready=True,
            reason="Evaluated" if result.get("complete") else "PartialResults",
            message=result.get("recommendation", ""),
            report=str(output),
            questions=result.get("questions"),
            answered=result.get("answered"),
        )
        return result

    def _route_info(
        self,
        he: Resource[HybridEndpointSpec],
        name: str,
        adapter: str | None,
        retrieval: bool,
        manifests: Manifests,
    ) -> RouteInfo:
        raft = False
        declared = next((a for a in he.spec.adapters if a.name == adapter), None)
        if declared is not None and declared.adapter_training_ref is not None:
            ref = declared.adapter_training_ref
            training = manifests.training(ref.namespace or he.namespace, ref.name)
            raft = training is not None and training.spec.raft is not None
        return RouteInfo(name=name, adapter=adapter, retrieval=retrieval, raft=raft)

    def _knowledge_info(
        self, namespace: str, ref_namespace: str | None, name: str, manifests: Manifests
    ) -> KnowledgeBaseInfo:
        kb_state = self.state.resource("KnowledgeBase", ref_namespace or namespace, name)
        kb = manifests.knowledge_base(ref_namespace or namespace, name)
        f = kb_state.figures
        return KnowledgeBaseInfo(
            name=name,
            collection=f["collection"],
            milvus_uri=f["milvusUri"],
            embedding_model=f["embeddingModel"],
            database=kb.spec.milvus.database if kb else None,
            spec=kb.spec if kb else None,
        )

    def _retrain_info(self, he: Resource[HybridEndpointSpec], adapter: Adapter) -> RetrainInfo:
        ref = adapter.adapter_training_ref
        if ref is None:
            return RetrainInfo(adapter=adapter.name)
        trained = self.state.resource("AdapterTraining", ref.namespace or he.namespace, ref.name)
        return RetrainInfo(
            adapter=adapter.name,
            seconds=trained.figures.get("trainingSeconds"),
            recorded=trained.figures.get("trainedAt"),
        )

    # --- asking ------------------------------------------------------------------------------------

    def endpoint(self, name: str | None) -> ResourceState:
        endpoints = [r for r in self.state.resources.values() if r.kind == "HybridEndpoint"]
        if name:
            endpoints = [r for r in endpoints if r.name == name]
        if not endpoints:
            raise WorkFailed("NoEndpoint", "no HybridEndpoint is running here: run `tandem up -f DIR` first")
        if len(endpoints) > 1:
            raise WorkFailed("AmbiguousEndpoint", "several endpoints run here: name one with --endpoint")
        return endpoints[0]


def ask(
    endpoint: ResourceState,
    question: str,
    *,
    model: str | None = None,
    tenant: str | None = None,
    trace: bool = False,
    max_tokens: int = 200,
) -> dict[str, Any]:
    """One question through the gateway, as any OpenAI client would ask it."""
    figures = endpoint.figures
    keys: dict[str, str] = figures.get("keyFiles") or {}
    headers = {"X-Tandem-Trace": "1"} if trace else {}
    if keys:
        chosen = tenant or next(iter(keys))
        if chosen not in keys:
            raise WorkFailed("UnknownTenant", f"tenant {chosen!r} is not one of {', '.join(keys)}")
        headers["Authorization"] = f"Bearer {Path(keys[chosen]).read_text().strip()}"
    routes: list[str] = figures.get("routes") or []
    route = model or ("hybrid" if "hybrid" in routes else routes[-1])
    response = httpx.post(
        f"{figures['url']}/chat/completions",
        json={
            "model": route,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": max_tokens,
        },
        headers=headers,
        timeout=300,
    )
    body: dict[str, Any] = response.json()
    if response.status_code != 200:
        raise WorkFailed(
            "RequestFailed", f"{response.status_code}: {body.get('error', {}).get('message', body)}"
        )
    return body
