"""The operator image, run as the chart runs it, reconciles examples/basic against the API emulator.

The container's command is the image's ENTRYPOINT with the arguments and environment of the chart's
Deployment (rendered by helm), as the user the chart's pod security context names, with /tmp as its only
writable place (the chart mounts an emptyDir there and sets readOnlyRootFilesystem). The emulator runs
on 127.0.0.1 with Tandem's CRDs and KubeRay's; the operator reaches it through a mounted kubeconfig.
The children it creates for examples/basic, and the Ready conditions once the cluster's controllers are
played, must equal those of the same operator run from the source tree (`python -m
tandem.platform.kubernetes`, as tests/integration/test_operator_process.py runs it), and name the worker
and gateway images `make images` builds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster_controllers import finish_jobs, finish_rayjobs, roll_out_deployments
from tests.images.runtime import ROOT, Container, Image, container, image, image_ref, skip_or_fail
from tests.manifests import load_all

NAMESPACE = "handbook"
MANAGED = "app.kubernetes.io/managed-by=tandem"
KUBECONFIG = "/etc/tandem/kubeconfig"  # where the container finds the kubeconfig (mounted read-only)
CHILDREN = {
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    "CronJob": "/apis/batch/v1/namespaces/{ns}/cronjobs",
    "RayJob": "/apis/ray.io/v1/namespaces/{ns}/rayjobs",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
}
OWNERS = {
    "KnowledgeBase": "/apis/tandem.dev/v1alpha1/namespaces/{ns}/knowledgebases",
    "AdapterTraining": "/apis/tandem.dev/v1alpha1/namespaces/{ns}/adaptertrainings",
    "HybridEndpoint": "/apis/tandem.dev/v1alpha1/namespaces/{ns}/hybridendpoints",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


# -- the chart's Deployment --------------------------------------------------------------------------------


def rendered_chart() -> list[dict[str, Any]]:
    helm = ROOT / ".tools" / "bin" / "helm"
    if not helm.exists():
        skip_or_fail("helm renders the chart's Deployment for this test: run `make tools`")
    out = subprocess.run(
        [str(helm), "template", "tandem", str(ROOT / "charts" / "tandem"), "--namespace", "tandem-system"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def chart() -> dict[str, Any]:
    docs = rendered_chart()
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [peering] = [d for d in docs if d["kind"] == "ClusterKopfPeering"]
    pod = deployment["spec"]["template"]["spec"]
    [operator] = pod["containers"]
    return {"pod": pod, "container": operator, "peering": peering}


def operator_args(chart: dict[str, Any], health: int, metrics: int) -> list[str]:
    """The chart's arguments, on free loopback ports (the container shares the host's network)."""
    args = []
    for arg in chart["container"]["args"]:
        if arg.startswith("--health="):
            assert arg.endswith(":8080/healthz"), arg
            arg = f"--health=http://127.0.0.1:{health}/healthz"
        elif arg.startswith("--metrics-port="):
            arg = f"--metrics-port={metrics}"
        args.append(arg)
    return [*args, "--metrics-host=127.0.0.1"]


def operator_env(chart: dict[str, Any]) -> dict[str, str]:
    env = {}
    for var in chart["container"]["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var["name"] == "POD_ID":  # the downward API: the pod's name
            env["POD_ID"] = "tandem-operator-smoke"
    return {**env, "KUBECONFIG": KUBECONFIG}


# -- the API emulator --------------------------------------------------------------------------------------


@contextmanager
def api_emulator(directory: Path) -> Iterator[tuple[str, Path]]:
    """`python -m tests.emulator` on 127.0.0.1 with the CRDs; yields its URL and kubeconfig."""
    kubeconfig = directory / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.emulator",
            "--port",
            "0",
            "--crds",
            str(ROOT / "crds"),
            "--crds",
            str(ROOT / "tests" / "emulator" / "upstream"),
            "--kubeconfig",
            str(kubeconfig),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("READY "), f"the API emulator did not start: {line!r}"
        url = line.split()[1]
        assert url.startswith("http://127.0.0.1:"), url
        kubeconfig.chmod(0o644)  # read by the container's user
        yield url, kubeconfig
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def create(client: httpx.Client, obj: dict[str, Any]) -> None:
    version, kind = obj["apiVersion"], obj["kind"]
    prefix = "/api/v1" if version == "v1" else f"/apis/{version}"
    plural = {"ClusterKopfPeering": "clusterkopfpeerings"}.get(kind, kind.lower() + "s")
    namespace = obj["metadata"].get("namespace")
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    response = client.post(path, json=obj)
    assert response.status_code == 201, f"{kind} {obj['metadata']['name']}: {response.text}"


def ready(obj: dict[str, Any]) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return f"{c['status']} {c.get('reason', '')}"
    return "-"


def children(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """What the operator created in the namespace: per child, its component and each container's
    image, command and arguments."""
    found: dict[str, dict[str, Any]] = {}
    for kind, path in CHILDREN.items():
        response = client.get(path.format(ns=NAMESPACE), params={"labelSelector": MANAGED})
        response.raise_for_status()
        for item in response.json()["items"]:
            template = item.get("spec", {})
            if kind == "CronJob":
                template = template["jobTemplate"]["spec"]
            if kind == "RayJob":
                pods = [template["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]] + [
                    g["template"]["spec"] for g in template["rayClusterSpec"].get("workerGroupSpecs", [])
                ]
            else:
                pods = [template["template"]["spec"]] if "template" in template else []
            containers = [
                (c["name"], c.get("image"), c.get("command"), c.get("args"))
                for pod in pods
                for c in pod.get("initContainers", []) + pod.get("containers", [])
            ]
            labels = item["metadata"].get("labels", {})
            found[f"{kind}/{item['metadata']['name']}"] = {
                "component": labels.get("app.kubernetes.io/component"),
                "owner": labels.get("tandem.dev/name"),
                "containers": containers,
            }
    return found


def reconcile_examples(url: str, log: Path, alive: Callable[[], bool]) -> dict[str, Any]:
    """Apply examples/basic, play the cluster's controllers until the work is done, and return the
    children and the Ready conditions."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for doc in load_all():
            create(client, doc)

        def created() -> bool:
            assert alive(), log.read_text(errors="replace")
            kinds = {key.split("/")[0] for key in children(client)}
            return {"Job", "RayJob", "Deployment"} <= kinds

        wait_for(created, 90, "the ingest Job, the RayJob and the Deployments", log)

        def done() -> dict[str, str] | None:
            assert alive(), log.read_text(errors="replace")
            finish_jobs(client, NAMESPACE)
            finish_rayjobs(client, NAMESPACE)
            roll_out_deployments(client, NAMESPACE)
            states = {
                f"{kind}/{obj['metadata']['name']}": ready(obj)
                for kind, path in OWNERS.items()
                for obj in client.get(path.format(ns=NAMESPACE)).json()["items"]
            }
            trained = states.get("AdapterTraining/house-style", "").startswith("True")
            indexed = states.get("KnowledgeBase/handbook", "").startswith("True")
            # The endpoint has taken up the trained adapter and its Deployments rolled out: it waits for a
            # pod to report the adapter loaded (no pods run here).
            serving = states.get("HybridEndpoint/assistant", "") == "False LoadingAdapters"
            return states if trained and indexed and serving else None

        states = wait_for(done, 150, "the KnowledgeBase and AdapterTraining Ready, the endpoint loading", log)
        return {"children": children(client), "ready": states}


def wait_healthy(url: str, log: Path, alive: Callable[[], bool]) -> None:
    def healthy() -> bool:
        assert alive(), log.read_text(errors="replace")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 90, f"the operator's liveness endpoint {url}", log)


def run_from_image(
    img: Image, box: Container, chart: dict[str, Any], url: str, kubeconfig: Path, log: Path
) -> dict[str, Any]:
    health, metrics = free_port(), free_port()
    with log.open("wb") as out:
        process = box.start(
            [*img.entrypoint, *operator_args(chart, health, metrics)],
            log=out,
            env=operator_env(chart),
            volumes={kubeconfig: KUBECONFIG},
        )
    alive = lambda: process.poll() is None  # noqa: E731
    wait_healthy(f"http://127.0.0.1:{health}/healthz", log, alive)
    metrics_text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    assert "tandem_" in metrics_text, "the operator's Prometheus metrics"
    outcome = reconcile_examples(url, log, alive)
    code = box.stop(process)
    assert code == 0, f"the operator exited {code} on SIGTERM\n{log.read_text(errors='replace')[-3000:]}"
    return outcome


def run_from_source(chart: dict[str, Any], url: str, kubeconfig: Path, log: Path) -> dict[str, Any]:
    health, metrics = free_port(), free_port()
    env = {
        **os.environ,
        **operator_env(chart),
        "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}",
    }
    env.pop("TANDEM_KUBE_SERVER", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tandem.platform.kubernetes", *operator_args(chart, health, metrics)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        alive = lambda: process.poll() is None  # noqa: E731
        wait_healthy(f"http://127.0.0.1:{health}/healthz", log, alive)
        return reconcile_examples(url, log, alive)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def operator_image() -> Image:
    return image("operator")


def test_runs_as_the_chart_says(operator_image: Image, chart: dict[str, Any]) -> None:
    security = chart["pod"]["securityContext"]
    assert operator_image.user == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert security.get("runAsNonRoot") is True
    assert chart["container"]["securityContext"]["readOnlyRootFilesystem"] is True
    assert [m["mountPath"] for m in chart["container"]["volumeMounts"]] == ["/tmp"]
    assert chart["container"]["image"] == image_ref("operator")


def test_reconciles_examples_like_the_source_tree(
    operator_image: Image, chart: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "image").mkdir()
    with api_emulator(tmp_path / "image") as (url, kubeconfig), container(operator_image) as box:
        with httpx.Client(base_url=url, timeout=10) as client:
            create(client, chart["peering"])  # the chart creates the peering object; kopf only uses it
        from_image = run_from_image(operator_image, box, chart, url, kubeconfig, tmp_path / "image.log")
        assert box.written() == [], "the operator wrote outside /tmp: readOnlyRootFilesystem would refuse"

    # The same operator from the source tree, against an emulator of its own.
    (tmp_path / "source").mkdir()
    with api_emulator(tmp_path / "source") as (url, kubeconfig):
        with httpx.Client(base_url=url, timeout=10) as client:
            create(client, chart["peering"])
        from_source = run_from_source(chart, url, kubeconfig, tmp_path / "source.log")

    assert from_image["children"] == from_source["children"]
    assert from_image["ready"] == from_source["ready"]
    images = {c[1] for child in from_image["children"].values() for c in child["containers"]}
    assert {image_ref("worker"), image_ref("gateway")} <= images, images
