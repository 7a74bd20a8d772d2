"""
The API emulator as a separate process (``python -m tests.emulator``), used by the real ``kubectl``
and by ``kopf run`` with a KUBECONFIG. Needs the kubectl binary; skipped without it.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
ROOT = pathlib.Path(__file__).parents[2]

if not pathlib.Path(KUBECTL).exists():
    pytest.skip("kubectl is not available", allow_module_level=True)

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.emulator.test
spec:
  group: emulator.test
  scope: Namespaced
  names:
    {kind: Gizmo, listKind: GizmoList, plural: gizmos, singular: gizmo, shortNames: [gz], categories: [toys]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        description: A gizmo for testing the emulator.
        properties:
          spec:
            type: object
            description: The desired state of the gizmo.
            required: [color]
            x-kubernetes-validations:
            - rule: "self.size <= 10 || self.color != 'red'"
              message: "red gizmos are small"
              fieldPath: .size
            properties:
              color: {type: string, enum: [red, green, blue], description: The color.}
              size: {type: integer, minimum: 1, maximum: 100, default: 5, description: The size.}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""

GIZMO = """
apiVersion: emulator.test/v1
kind: Gizmo
metadata:
  name: g1
  labels: {team: a}
spec:
  color: green
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1
        ports: [{containerPort: 80}]
      - name: sidecar
        image: busybox:1
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``python -m tests.emulator`` in a subprocess; yields its url and kubeconfig path."""
    workdir = tmp_path_factory.mktemp("emulator")
    crds = workdir / "crds"
    crds.mkdir()
    (crds / "gizmos.yaml").write_text(CRD)
    kubeconfig = workdir / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.emulator",
            "--port",
            "0",
            "--crds",
            str(crds),
            "--kubeconfig",
            str(kubeconfig),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY "), line
        yield {"url": line.split()[1], "kubeconfig": kubeconfig, "workdir": workdir}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def kubectl(cluster: dict[str, Any], *args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [KUBECTL, f"--kubeconfig={cluster['kubeconfig']}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout + result.stderr


def test_discovery_and_crd(cluster: dict[str, Any]) -> None:
    out = kubectl(cluster, "api-resources")
    assert any(line.split()[:2] == ["gizmos", "gz"] for line in out.splitlines()), out
    assert "KopfPeering" in out and "deployments" in out
    out = kubectl(cluster, "get", "crd")
    assert "gizmos.emulator.test" in out
    out = kubectl(cluster, "version", "-o", "json")
    assert json.loads(out.split("\nWARNING")[0])["serverVersion"]["major"] == "1"


def test_apply_get_describe_patch_delete(cluster: dict[str, Any]) -> None:
    out = kubectl(cluster, "apply", "-f", "-", stdin=GIZMO)
    assert "gizmo.emulator.test/g1 created" in out
    out = kubectl(cluster, "apply", "-f", "-", stdin=GIZMO)
    assert "gizmo.emulator.test/g1 unchanged" in out

    table = kubectl(cluster, "get", "gz")  # a short name; server-side table with printer columns
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "COLOR", "SIZE", "PHASE", "AGE"]
    assert row.split()[:3] == ["g1", "green", "5"]  # size: defaulted by the CRD schema

    obj = yaml.safe_load(kubectl(cluster, "get", "gizmo", "g1", "-o", "yaml"))
    assert obj["spec"] == {"color": "green", "size": 5}
    assert obj["metadata"]["generation"] == 1 and obj["metadata"]["uid"]
    assert kubectl(cluster, "get", "gizmos", "-l", "team=a", "-o", "name").strip() == "gizmo.emulator.test/g1"
    assert "No resources found" in kubectl(cluster, "get", "gizmos", "-l", "team=b")
    assert "g1" in kubectl(cluster, "get", "toys")  # by category

    out = kubectl(cluster, "describe", "gizmo", "g1")
    assert "Name:         g1" in out and "Color:  green" in out

    kubectl(cluster, "patch", "gizmo", "g1", "--type", "merge", "-p", '{"spec": {"size": 7}}')
    out = kubectl(cluster, "get", "gizmo", "g1", "-o", "jsonpath={.spec.size} {.metadata.generation}")
    assert out == "7 2"
    kubectl(
        cluster,
        "patch",
        "gizmo",
        "g1",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        '{"status": {"phase": "Shiny"}}',
    )
    assert "Shiny" in kubectl(cluster, "get", "gizmo", "g1")

    out = kubectl(cluster, "delete", "gizmo", "g1")
    assert 'gizmo.emulator.test "g1" deleted' in out
    assert "NotFound" in kubectl(cluster, "get", "gizmo", "g1", check=False)


def test_invalid_objects_name_the_field(cluster: dict[str, Any]) -> None:
    bad = GIZMO.replace("name: g1", "name: bad").replace("color: green", "color: red\n  size: 50")
    out = kubectl(cluster, "apply", "-f", "-", stdin=bad, check=False)
    assert 'The Gizmo "bad" is invalid' in out
    assert "spec.size: Invalid value" in out and "red gizmos are small" in out

    bad = GIZMO.replace("name: g1", "name: bad").replace("color: green", "color: pink")
    out = kubectl(cluster, "apply", "-f", "-", stdin=bad, check=False)
    assert 'spec.color: Unsupported value: "pink": supported values: "red", "green", "blue"' in out

    unknown = GIZMO.replace("name: g1", "name: strict").replace("color: green", "color: blue\n  bogus: 1")
    out = kubectl(cluster, "apply", "-f", "-", stdin=unknown, check=False)
    assert 'unknown field "spec.bogus"' in out  # kubectl's default --validate=strict, done server-side


def test_explain(cluster: dict[str, Any]) -> None:
    out = kubectl(cluster, "explain", "gizmo.spec")
    assert "The desired state of the gizmo." in out and "color" in out and "size" in out


def test_builtin_kinds_apply_and_namespaces(cluster: dict[str, Any]) -> None:
    kubectl(cluster, "apply", "-n", "web", "-f", "-", stdin=DEPLOYMENT)
    changed = DEPLOYMENT.replace("image: busybox:1", "image: busybox:2")
    kubectl(cluster, "apply", "-n", "web", "-f", "-", stdin=changed)  # a strategic merge patch
    obj = json.loads(kubectl(cluster, "get", "deploy", "web", "-n", "web", "-o", "json"))
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "nginx:1"), ("sidecar", "busybox:2")]
    assert containers[0]["ports"] == [{"containerPort": 80}]
    assert obj["metadata"]["generation"] == 2

    namespaces = kubectl(cluster, "get", "namespaces", "-o", "name").split()
    assert "namespace/web" in namespaces and "namespace/default" in namespaces
    kubectl(cluster, "scale", "deployment", "web", "-n", "web", "--replicas", "3")
    assert kubectl(cluster, "get", "deploy", "web", "-n", "web", "-o", "jsonpath={.spec.replicas}") == "3"
    kubectl(cluster, "delete", "namespace", "web")
    assert "NotFound" in kubectl(cluster, "get", "deploy", "web", "-n", "web", check=False)


def test_imperative_creation(cluster: dict[str, Any]) -> None:
    # kubectl sends these as protobuf.
    kubectl(cluster, "create", "namespace", "imperative")
    kubectl(cluster, "create", "configmap", "c", "--from-literal=a=b", "-n", "imperative")
    kubectl(cluster, "create", "secret", "generic", "s", "--from-literal=pw=x", "-n", "imperative")
    kubectl(cluster, "create", "serviceaccount", "robot", "-n", "imperative")
    assert kubectl(cluster, "get", "cm", "c", "-n", "imperative", "-o", "jsonpath={.data.a}") == "b"
    assert kubectl(cluster, "get", "secret", "s", "-n", "imperative", "-o", "jsonpath={.data.pw}") == "eA=="
    assert (
        kubectl(cluster, "get", "sa", "robot", "-n", "imperative", "-o", "name") == "serviceaccount/robot\n"
    )


OPERATOR = """
import kopf

@kopf.on.create("emulator.test", "v1", "gizmos")
def created(spec, patch, **_):
    patch.status["phase"] = "Seen-" + spec["color"]
"""


def test_kopf_run_with_kubeconfig(cluster: dict[str, Any]) -> None:
    script = cluster["workdir"] / "operator.py"
    script.write_text(OPERATOR)
    env = {**os.environ, "KUBECONFIG": str(cluster["kubeconfig"])}
    log = (cluster["workdir"] / "kopf.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", str(script)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        kubectl(cluster, "apply", "-f", "-", stdin=GIZMO.replace("name: g1", "name: watched"))
        deadline = time.monotonic() + 30
        phase = ""
        while time.monotonic() < deadline and phase != "Seen-green":
            time.sleep(0.2)
            phase = kubectl(cluster, "get", "gizmo", "watched", "-o", "jsonpath={.status.phase}", check=False)
        assert phase == "Seen-green", (cluster["workdir"] / "kopf.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
