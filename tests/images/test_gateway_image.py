"""The gateway image starts from its configuration, as the operator's gateway pods start it, and answers
/healthz and an authenticated /v1/models.

The configuration is what the operator writes for examples/basic's HybridEndpoint (the same
`tandem.core.gateway.gateway_config`), mounted where the pod has its ConfigMap and the tenants' API
keys where the pod has its Secret; the command is the image's CMD (the pod's command), on a loopback
port. No vLLM runs: /readyz must say so, while /healthz and /v1/models answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.core.gateway import gateway_config
from tandem.platform.kubernetes.planners.hybridendpoint import CONFIG_DIR, GATEWAY_PORT, KEYS_DIR
from tandem.workloads.gateway.config import AdapterConfig, KnowledgeBaseConfig
from tests.images.runtime import container, image
from tests.images.test_operator_image import free_port
from tests.manifests import example, load_all

KEYS = {d["metadata"]["name"]: d["stringData"] for d in load_all() if d["kind"] == "Secret"}["assistant-keys"]


def config(keys_dir: str) -> dict[str, object]:
    endpoint = example("HybridEndpoint")
    spec = HybridEndpointSpec.model_validate(endpoint["spec"])
    built = gateway_config(
        spec,
        namespace=endpoint["metadata"]["namespace"],
        name=endpoint["metadata"]["name"],
        vllm_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        adapters=[AdapterConfig(name="house-style", path="/models/adapters/house-style-v1")],
        knowledge_bases=[
            KnowledgeBaseConfig(
                namespace="handbook",
                name="handbook",
                collection="handbook_smoke",
                milvus_uri="/tmp/milvus/handbook.db",  # milvus-lite, empty
            )
        ],
        api_key_files={t.name: f"{keys_dir}/{t.name}" for t in spec.tenants},
    )
    return built.model_dump(by_alias=True, exclude_none=True, mode="json")


def test_starts_from_its_config_and_answers(tmp_path: Path) -> None:
    gateway = image("gateway")
    assert gateway.config.get("Cmd")[:3] == ["python", "-m", "tandem.workloads.gateway"]
    settings = tmp_path / "config"
    keys = tmp_path / "keys"
    settings.mkdir()
    keys.mkdir()
    # /var/run is a link to /run in Debian: buildah's chroot mounts the Secret at the link's target.
    (settings / "gateway.json").write_text(json.dumps(config(KEYS_DIR)))
    for tenant, key in KEYS.items():
        (keys / tenant).write_text(key)
    for path in (settings, keys, *settings.iterdir(), *keys.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)

    port = free_port()
    command = [str(a) for a in gateway.config["Cmd"]]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    assert f"{CONFIG_DIR}/gateway.json" in command and str(GATEWAY_PORT) not in command
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    with container(gateway) as box:
        (box.tmp / "milvus").mkdir()
        (box.tmp / "milvus").chmod(0o777)
        with log.open("wb") as out:
            process = box.start(
                command,
                log=out,
                volumes={settings: CONFIG_DIR, keys: KEYS_DIR.replace("/var/run/", "/run/", 1)},
            )
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                health = httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.5)
        assert health.status_code == 200 and health.json() == {"status": "ok"}

        assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 401
        wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-wrong"}, timeout=5)
        assert wrong.status_code == 401
        models = httpx.get(
            f"{url}/v1/models", headers={"Authorization": f"Bearer {KEYS['staff']}"}, timeout=5
        )
        assert models.status_code == 200, models.text
        assert [m["id"] for m in models.json()["data"]] == ["base", "house-style", "hybrid"]
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503  # no vLLM: no traffic

        assert box.stop(process) == 0, log.read_text(errors="replace")[-3000:]
        assert box.written() == [], "the gateway wrote outside /tmp: readOnlyRootFilesystem would refuse"
