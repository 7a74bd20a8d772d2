"""A shared serving pool end to end with the real vLLM CPU build (issue 16, "What must be shown"): two vLLM
replicas ("pods" p-0 and p-1) serve two endpoints of two namespaces, three adapters, one copy each (k = 1).

What runs for real: vLLM's CPU build (two processes serving SmolLM2-135M, each with Tandem's key guard as a
pool pod has it: its own sidecar key from TANDEM_VLLM_KEY_FILE, the attached gateways' keys by SHA-256
digest from TANDEM_VLLM_KEY_DIGESTS_FILE); an OCI registry (Debian's docker-registry on 127.0.0.1) the
three adapters are published to with `tandem.workloads.artifacts.publish`; the placement
(`tandem.core.placement.place`) written as the `<pod>.json` file each pod's sidecar reads; the adapter
sync (`tandem.workloads.adapter_sync.run`, once per pod, with a cache of its own) fetching each artifact by
digest and loading it into its pod under its pool-unique served name; and two gateways (the real gateway
process, `vllmPool` over both pods' URLs, each with its own vLLM key and tenant).

What does not run: Kubernetes. The operator's side (the ServingPool's children, the placement's
publication in the ConfigMap, the key digests, a lost pod) is tests/integration/test_operator_serving_pool.py
against the API emulator; here the files it publishes are written by the test, as the planner would.

Shown: each pod serves exactly its placed share, loaded from its cache by digest; every request lands on a
pod that has its adapter; a tenant reaches neither another endpoint's adapter nor its pool name; only the
pool's key and the attached gateways' keys get into a pod (an unlisted key or none: 401), and an endpoint
detached (its digest dropped from the list) is refused until listed again; an artifact that is not the
declared adapter is never loaded; a stopped pod is skipped, its adapters answer 503 with Retry-After until
they are placed again and synced on the other pod, then answer from there.

Which pod answered is measured on the pods themselves (each vLLM's `vllm:request_success_total`, read
before and after each request) and cross-checked with the gateway's own record of the pod it used.

Slow: two vLLM starts (1-3 minutes each on two cores). The tests share the module's pool and run in order:
the last one stops p-0.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.core import vllm_guard
from tandem.core.placement import Placement, PodSlot, place
from tandem.core.pools import served_name
from tandem.platform.local.vllm import VllmServer
from tandem.workloads.adapter_sync import Fetcher, run
from tandem.workloads.artifacts import publish
from tandem.workloads.gateway.config import AdapterConfig
from tandem.workloads.model_common import adapter_digest
from tests.integration.oci_registry import Registry, start_registry
from tests.integration.test_gateway import GatewayProcess
from tests.integration.vllm_server import MAX_LORA_RANK, MAX_MODEL_LEN, STARTUP_TIMEOUT, require_vllm

pytestmark = pytest.mark.integration

POOL_KEY = "pool-sidecar-key-9c41"  # the pool's own Secret: what each pod's adapter sync holds
GATEWAY_KEYS = {"team-a": "gateway-team-a-key-3e07", "team-b": "gateway-team-b-key-b512"}
UNLISTED_KEY = "gateway-team-c-key-detached-77aa"  # a gateway whose endpoint is not attached
TENANT_KEYS = {"team-a": "sk-team-a-tenant-1f2d", "team-b": "sk-team-b-tenant-8a6c"}
ENDPOINTS = {"team-a": "assistant", "team-b": "helpdesk"}
# (namespace, adapter name in its endpoint) -> where it is published in the registry
ADAPTERS = {("team-a", "support"): "team-a/support", ("team-a", "tone"): "team-a/tone"}
ADAPTERS[("team-b", "support")] = "team-b/support"
SUPPORT_A = served_name("team-a", "assistant", "support")
TONE_A = served_name("team-a", "assistant", "tone")
SUPPORT_B = served_name("team-b", "helpdesk", "support")
PODS = ("p-0", "p-1")
CAPACITY = 8  # the pods' slots in the placement; vLLM's --max-cpu-loras is set to hold every adapter
MAX_CPU_LORAS = 4
CHAT_TOKENS = 2


@dataclass(frozen=True)
class Artifact:
    served: str  # its name in the pool
    uri: str  # oci://127.0.0.1:PORT/<repo>@sha256:...
    digest: str  # the adapter's digest (what the endpoint declares)


@dataclass
class Pool:
    servers: dict[str, VllmServer]
    key_file: Path
    digests_file: Path
    workdir: Path
    artifacts: dict[str, Artifact]  # by served name
    placement: Placement = field(default_factory=lambda: Placement({}, {}, {}))

    def cache(self, pod: str) -> Path:
        return self.workdir / "cache" / pod

    def entry(self, pod: str, artifact: Artifact) -> AdapterConfig:
        """An adapter as the pod's sidecar reads it: the served name, fetched into <cache>/<digest>."""
        return AdapterConfig(
            name=artifact.served,
            path=str(self.cache(pod) / artifact.digest),
            digest=artifact.digest,
            uri=artifact.uri,
        )

    def write_share(self, pod: str, entries: list[AdapterConfig]) -> Path:
        """`<pod>.json` as the ServingPool planner writes it into the pool's ConfigMap."""
        path = self.workdir / "placement" / f"{pod}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        wire = {
            "endpoint": {"namespace": "pools", "name": "smollm2"},
            "adapters": [e.model_dump(by_alias=True, exclude_none=True, mode="json") for e in entries],
        }
        path.write_text(json.dumps(wire, indent=2, sort_keys=True))
        return path

    def publish_placement(self, placement: Placement) -> None:
        self.placement = placement
        for pod, served in placement.by_pod.items():
            self.write_share(pod, [self.entry(pod, self.artifacts[s]) for s in served])

    def sync(self, pod: str, events: list[dict[str, Any]], timeout: float = 180.0) -> bool:
        """One successful round of the pod's adapter sync (--once), or False once `timeout` has passed."""
        return run(
            self.workdir / "placement" / f"{pod}.json",
            self.servers[pod].url,
            once=True,
            timeout=timeout,
            report=events.append,
            api_key_file=self.key_file,
            fetcher=Fetcher(self.cache(pod)),
        )

    def loaded(self, pod: str) -> dict[str, str]:
        """The adapters the pod's vLLM lists (with the pool's key): served name -> folder loaded from."""
        return {m["id"]: m.get("root", "") for m in self.servers[pod].models() if m.get("parent")}

    def holder(self, served: str) -> str:
        (pod,) = self.placement.by_adapter[served]
        return pod


def successes(server: VllmServer) -> float:
    """The requests this vLLM finished (every finish reason), from its Prometheus counters."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total")
    )


def answered_by(pool: Pool, send: Callable[[], httpx.Response]) -> tuple[httpx.Response, list[str]]:
    """The response, and the pods whose finished-request counters rose while it was sent."""
    live = {name: server for name, server in pool.servers.items() if server.running()}
    before = {name: successes(server) for name, server in live.items()}
    response = send()
    deadline = time.monotonic() + (10 if response.status_code == 200 else 1)
    while True:  # the counters are updated by the engine's output loop, a moment after the answer
        rose = [name for name, server in live.items() if successes(server) > before[name]]
        if (rose and response.status_code == 200) or time.monotonic() > deadline:
            return response, rose
        time.sleep(0.2)


def chat(gateway: GatewayProcess, tenant: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": CHAT_TOKENS},
        headers={"Authorization": f"Bearer {TENANT_KEYS[tenant]}"},
        timeout=180,
    )


def last_pod(gateway: GatewayProcess) -> str | None:
    """The pod the gateway's router used for its last chat request (its own log record)."""
    chats = [r for r in gateway.log_records() if r.get("event") == "chat"]
    return chats[-1].get("pod") if chats else None


def pool_status(gateway: GatewayProcess) -> dict[str, Any]:
    url = gateway.metrics_url.removesuffix("/metrics") + "/healthz/dependencies"
    status: dict[str, Any] = httpx.get(url, timeout=10).json()["pool"]
    return status


def pods_up(gateway: GatewayProcess, *urls: str) -> bool:
    up = {p["address"] for p in pool_status(gateway)["pods"] if p["up"]}
    return up >= set(urls)


def pod_down(gateway: GatewayProcess, url: str) -> bool:
    return any(p["address"] == url and not p["up"] for p in pool_status(gateway)["pods"])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    started = start_registry(tmp_path_factory.mktemp("pool-registry"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, identity_adapter: Path
) -> dict[str, Artifact]:
    """Three distinct adapters (the identity adapter, its config told apart by a key PEFT and vLLM ignore),
    each published to its team's repository."""
    root = tmp_path_factory.mktemp("pool-adapters")
    published: dict[str, Artifact] = {}
    for (namespace, adapter), repository in ADAPTERS.items():
        served = served_name(namespace, ENDPOINTS[namespace], adapter)
        folder = root / repository.replace("/", "-")
        shutil.copytree(identity_adapter, folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        config["tandem_test_variant"] = served
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
        result = publish(folder, f"oci://{registry.host}/{repository}:v1")
        assert result.adapter_digest == adapter_digest(folder)
        published[served] = Artifact(served, result.uri_with_digest, result.adapter_digest)
    assert len({a.digest for a in published.values()}) == 3
    return published


@pytest.fixture(scope="module")
def pool(
    tmp_path_factory: pytest.TempPathFactory, served_model_dir: Path, artifacts: dict[str, Artifact]
) -> Iterator[Pool]:
    """Two guarded vLLM pods, started together, each given its share of the placement by its sidecar."""
    python = require_vllm()
    workdir = tmp_path_factory.mktemp("serving-pool")
    key_file = workdir / "pool-key"
    key_file.write_text(POOL_KEY)
    digests_file = workdir / "keys.json"
    digests_file.write_text(
        json.dumps(sorted(hashlib.sha256(k.encode()).hexdigest() for k in GATEWAY_KEYS.values()))
    )
    servers = {
        pod: VllmServer(
            served_model_dir,
            log=workdir / pod / "vllm.log",
            python=python,
            max_model_len=MAX_MODEL_LEN,
            max_lora_rank=MAX_LORA_RANK,
            max_loras=3,
            extra=[f"--max-cpu-loras={MAX_CPU_LORAS}"],
            api_key_file=key_file,
            env={vllm_guard.DIGESTS_FILE_ENV: str(digests_file)},
        )
        for pod in PODS
    }
    try:
        with ThreadPoolExecutor(len(servers)) as threads:
            list(threads.map(lambda server: server.start(timeout=STARTUP_TIMEOUT), servers.values()))
        pool = Pool(servers, key_file, digests_file, workdir, artifacts)
        pool.publish_placement(place(sorted(artifacts), [PodSlot(p, CAPACITY) for p in PODS], 1))
        for pod in PODS:
            events: list[dict[str, Any]] = []
            assert pool.sync(pod, events), events
        yield pool
    finally:
        for server in servers.values():
            server.stop()


def gateway_config(directory: Path, namespace: str, pool: Pool) -> dict[str, Any]:
    """The gateway configuration the operator writes for a pooled endpoint: its adapters under their
    pool names, the pool's pods, its own key for them, its tenant."""
    (directory / "vllm-key").write_text(GATEWAY_KEYS[namespace])
    (directory / "tenant").write_text(TENANT_KEYS[namespace])
    mine = {
        adapter: pool.artifacts[served_name(namespace, ENDPOINTS[namespace], adapter)]
        for (ns, adapter) in ADAPTERS
        if ns == namespace
    }
    adapters = [
        AdapterConfig(
            name=adapter,
            path=f"/var/cache/tandem/adapters/{a.digest}",
            digest=a.digest,
            uri=a.uri,
            served_name=a.served,
        ).model_dump(by_alias=True, exclude_none=True, mode="json")
        for adapter, a in mine.items()
    ]
    return {
        "endpoint": {"namespace": namespace, "name": ENDPOINTS[namespace]},
        "vllmPool": {
            "pods": [pool.servers[p].url for p in PODS],
            "pollSeconds": 1,
            "retryAfterSeconds": 3,
        },
        "vllmApiKeyFile": str(directory / "vllm-key"),
        "maxModelLen": MAX_MODEL_LEN,
        "baseModel": "base",
        "routes": [
            {"name": "base", "retrieval": False},
            *({"name": adapter, "adapter": adapter, "retrieval": False} for adapter in mine),
        ],
        "adapters": adapters,
        "tenants": [{"name": namespace, "apiKeyFile": str(directory / "tenant"), "maxConcurrentRequests": 4}],
    }


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, pool: Pool) -> Iterator[dict[str, GatewayProcess]]:
    started: dict[str, GatewayProcess] = {}
    try:
        for namespace in ENDPOINTS:
            directory = tmp_path_factory.mktemp(f"gateway-{namespace}")
            started[namespace] = GatewayProcess(gateway_config(directory, namespace, pool), directory)
        for gateway in started.values():
            wait_for(partial(pods_up, gateway, *(pool.servers[p].url for p in PODS)), 30, "the pods polled")
        yield started
    finally:
        for gateway in started.values():
            gateway.stop()


# --- what must be shown -----------------------------------------------------------------------------------


def test_each_pod_serves_exactly_its_placed_share(pool: Pool) -> None:
    placement = pool.placement
    assert placement.unplaced == {}
    assert sorted(s for share in placement.by_pod.values() for s in share) == sorted(pool.artifacts)
    assert all(placement.by_pod[p] for p in PODS), placement  # both pods hold something: a real split
    for pod in PODS:
        loaded = pool.loaded(pod)
        assert sorted(loaded) == sorted(placement.by_pod[pod]), (pod, loaded)
        for served, root in loaded.items():  # loaded from the pod's cache, by the artifact's digest
            assert Path(root) == pool.cache(pod) / pool.artifacts[served].digest
            assert adapter_digest(Path(root)) == pool.artifacts[served].digest


def test_every_request_is_served_by_a_pod_that_has_its_adapter(
    pool: Pool, gateways: dict[str, GatewayProcess]
) -> None:
    for namespace, adapter in list(ADAPTERS) * 2:
        gateway = gateways[namespace]
        served = served_name(namespace, ENDPOINTS[namespace], adapter)
        response, rose = answered_by(pool, partial(chat, gateway, namespace, adapter))
        assert response.status_code == 200, response.text
        assert response.json()["model"] == adapter  # the caller's name, never the pool's
        assert served not in response.text and "127.0.0.1" not in response.text
        assert rose == [pool.holder(served)], (served, rose)
        assert last_pod(gateway) == pool.servers[pool.holder(served)].url


def test_a_tenant_cannot_reach_another_endpoints_adapter(
    pool: Pool, gateways: dict[str, GatewayProcess]
) -> None:
    gateway = gateways["team-a"]
    # By its own endpoint's name, team-a's `support` is its own adapter, on the pod holding team-a's.
    response, rose = answered_by(pool, partial(chat, gateway, "team-a", "support"))
    assert response.status_code == 200 and rose == [pool.holder(SUPPORT_A)]
    assert pool.holder(SUPPORT_A) != pool.holder(SUPPORT_B)  # so the pod tells the two apart
    # By the pool's name of team-b's adapter: not a model of this endpoint, and no pod is asked.
    response, rose = answered_by(pool, partial(chat, gateway, "team-a", SUPPORT_B))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found" and rose == []
    listed = httpx.get(
        f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {TENANT_KEYS['team-a']}"}, timeout=10
    )
    assert listed.status_code == 200 and "team-b" not in listed.text and "helpdesk" not in listed.text
    # Nor with team-b's tenant key at team-a's gateway.
    refused = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {TENANT_KEYS['team-b']}"},
        timeout=30,
    )
    assert refused.status_code == 401


def test_only_listed_gateway_keys_and_the_pool_key_reach_the_pods(pool: Pool) -> None:
    body = {"model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": CHAT_TOKENS}
    for pod, server in pool.servers.items():
        for headers in ({}, {"Authorization": f"Bearer {UNLISTED_KEY}"}):
            assert httpx.get(f"{server.url}/v1/models", headers=headers, timeout=10).status_code == 401, pod
            chat_status = httpx.post(
                f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60
            ).status_code
            assert chat_status == 401, pod
        for key in (POOL_KEY, *GATEWAY_KEYS.values()):
            listed = httpx.get(
                f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10
            )
            assert listed.status_code == 200, (pod, listed.text)


def test_a_detached_endpoints_gateway_is_refused_by_the_pods(
    pool: Pool, gateways: dict[str, GatewayProcess]
) -> None:
    """The operator drops an endpoint's key digest from the pool's list when it detaches: within the
    guard's RELOAD_SECONDS its gateway is refused (401 on every pod), the other endpoint is untouched, and
    listing it again lets it back in."""
    attached = json.loads(pool.digests_file.read_text())
    team_b = hashlib.sha256(GATEWAY_KEYS["team-b"].encode()).hexdigest()
    b_urls = [pool.servers[p].url for p in PODS]
    pool.digests_file.write_text(json.dumps([d for d in attached if d != team_b]))
    try:
        time.sleep(vllm_guard.RELOAD_SECONDS + 0.5)
        for pod, server in pool.servers.items():
            for namespace, status in (("team-b", 401), ("team-a", 200)):
                headers = {"Authorization": f"Bearer {GATEWAY_KEYS[namespace]}"}
                assert (
                    httpx.get(f"{server.url}/v1/models", headers=headers, timeout=10).status_code == status
                ), (
                    pod,
                    namespace,
                )
        # team-b's gateway finds every pod refusing its polls: no pod serves it, and none generates for it.
        for url in b_urls:
            wait_for(partial(pod_down, gateways["team-b"], url), 30, f"team-b's gateway refused by {url}")
        assert all("401" in (p.get("error") or "") for p in pool_status(gateways["team-b"])["pods"])
        response, rose = answered_by(pool, partial(chat, gateways["team-b"], "team-b", "support"))
        assert response.status_code == 503 and rose == [], response.text
        assert response.json()["error"]["code"] == "pool_refused_endpoint"  # not an adapter missing
        response, rose = answered_by(pool, partial(chat, gateways["team-a"], "team-a", "tone"))
        assert response.status_code == 200 and rose == [pool.holder(TONE_A)], response.text
    finally:
        pool.digests_file.write_text(json.dumps(attached))
    wait_for(partial(pods_up, gateways["team-b"], *b_urls), 30, "team-b's gateway admitted again")
    response, rose = answered_by(pool, partial(chat, gateways["team-b"], "team-b", "support"))
    assert response.status_code == 200 and rose == [pool.holder(SUPPORT_B)], response.text


def test_an_artifact_that_is_not_the_declared_adapter_is_never_loaded(pool: Pool) -> None:
    pod = "p-1"
    share = [pool.entry(pod, pool.artifacts[s]) for s in pool.placement.by_pod[pod]]
    wrong = hashlib.sha256(b"not the adapter published there").hexdigest()
    forged_name = served_name("team-b", "helpdesk", "forged")
    forged = AdapterConfig(
        name=forged_name,
        path=str(pool.cache(pod) / wrong),
        digest=wrong,
        uri=pool.artifacts[SUPPORT_B].uri,  # a real artifact, but not the adapter whose digest is declared
    )
    pool.write_share(pod, [*share, forged])
    events: list[dict[str, Any]] = []
    try:
        assert not pool.sync(pod, events, timeout=0)  # one round, reported as failed
        failed = {e["adapter"]: e["error"] for e in events if e.get("event") == "adapter-load-failed"}
        assert list(failed) == [forged_name] and "ArtifactDigestMismatch" in failed[forged_name], events
        assert sorted(pool.loaded(pod)) == sorted(pool.placement.by_pod[pod])
        assert not (pool.cache(pod) / wrong).exists()
    finally:
        pool.write_share(pod, share)
    events.clear()
    assert pool.sync(pod, events), events
    assert sorted(pool.loaded(pod)) == sorted(pool.placement.by_pod[pod])


def test_a_lost_pod_is_skipped_and_its_adapters_move_to_the_other(
    pool: Pool, gateways: dict[str, GatewayProcess]
) -> None:
    lost, survivor = "p-0", "p-1"
    moved = pool.placement.by_pod[lost]
    assert moved and pool.holder(SUPPORT_B) == survivor
    lost_url = pool.servers[lost].url
    pool.servers[lost].stop()
    # At once, whether or not a poll has noticed yet: a request a gateway sends to the stopped pod is refused
    # the connection and goes to the other pod (the base model and team-b's adapter, on p-1, keep answering).
    for namespace, model in [("team-a", "base"), ("team-b", "base"), ("team-b", "support")] * 2:
        response, rose = answered_by(pool, partial(chat, gateways[namespace], namespace, model))
        assert response.status_code == 200 and rose == [survivor], (namespace, model, response.text)
    for gateway in gateways.values():
        wait_for(partial(pod_down, gateway, lost_url), 30, f"{lost} seen down")
    # Before the re-sync, a moved adapter is on no pod that answers: 503 with Retry-After, never an answer
    # from another adapter.
    for served in moved:
        namespace, _, adapter = served.split("/")
        response = chat(gateways[namespace], namespace, adapter)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "3"
        assert response.json()["error"]["code"] == "adapter_not_placed"

    placement = place(sorted(pool.artifacts), [PodSlot(survivor, CAPACITY)], 1, pool.placement)
    assert placement.by_pod == {survivor: tuple(sorted(pool.artifacts))} and placement.unplaced == {}
    assert placement.moves(pool.placement).loads == {survivor: moved}
    pool.publish_placement(placement)
    events: list[dict[str, Any]] = []
    assert pool.sync(survivor, events), events
    assert sorted(e["adapter"] for e in events if e.get("event") == "adapter-loaded") == sorted(moved)
    assert sorted(pool.loaded(survivor)) == sorted(pool.artifacts)

    time.sleep(1.1)  # past the gateway's miss-poll rate limit after the 503s
    for namespace, adapter in ADAPTERS:
        gateway = gateways[namespace]
        response, rose = answered_by(pool, partial(chat, gateway, namespace, adapter))
        assert response.status_code == 200, response.text
        assert rose == [survivor] and last_pod(gateway) == pool.servers[survivor].url
