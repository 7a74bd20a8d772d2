#!/usr/bin/env python3
"""`make demo` (for now): the operator against the API emulator, driven with the real kubectl.

Starts the emulator (with Tandem's CRDs and KubeRay's RayJob CRD) and the operator as two processes,
applies examples/basic with kubectl, shows what the operator created, plays the cluster's Job,
Deployment and KubeRay controllers (the emulator runs no pods), and shows the resources turn Ready.
It also shows the two ways a mistake is refused: at admission, by the CRD (kubectl prints the API
server's message naming the field), and by the cluster when the operator makes a child (the owner turns
Stalled with reason ChildRefused, the API server's message and a Warning event).
Later issues replace this with the local quickstart (`tandem up`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster_controllers import finish_jobs, finish_rayjobs, roll_out_deployments  # noqa: E402

NAMESPACE = "handbook"


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Admitted by the CRD (each inline document may be 1,000,000 characters; the request is under the API
# server's 3 MiB), but the ingest ConfigMap that carries the documents to the Job would be over a
# ConfigMap's 1 MiB: the API server refuses that child, and only then is the mistake visible.
BIG = "big-handbook"


def refused_child(kubectl: Any, workdir: Path) -> None:
    banner(
        "a child the cluster refuses: the owner turns Stalled (ChildRefused) with the API server's message"
    )
    page = "Every employee has 27 days of paid leave. " * 14_000  # about 600 kB
    manifest = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": BIG, "namespace": NAMESPACE},
        "spec": {
            "sources": [
                {
                    "name": "pages",
                    "inline": {"documents": [{"id": f"page-{i}", "text": page} for i in (1, 2)]},
                }
            ]
        },
    }
    path = workdir / "big-handbook.yaml"
    path.write_text(yaml.safe_dump(manifest))
    # create, not apply: apply would copy the 1.2 MB manifest into an annotation (256 kB at most).
    print(f"$ kubectl create -f big-handbook.yaml   # two inline documents of {len(page):,} characters each")
    kubectl("create", "-f", str(path))
    jsonpath = '{.status.conditions[?(@.type=="Stalled")].reason}'
    for _ in range(30):
        if stalled_reason(kubectl, jsonpath) == "ChildRefused":
            break
        time.sleep(1)
    print(f"$ kubectl get kb {BIG}")
    kubectl("get", "kb", BIG, "-n", NAMESPACE)
    print(f"$ kubectl get kb {BIG} -o jsonpath='{{.status.conditions[?(@.type==\"Stalled\")].message}}'")
    kubectl(
        "get", "kb", BIG, "-n", NAMESPACE, "-o", 'jsonpath={.status.conditions[?(@.type=="Stalled")].message}'
    )
    columns = "TYPE:.type,REASON:.reason,FROM:.source.component,MESSAGE:.message"
    print(f"\n$ kubectl get events --field-selector involvedObject.name={BIG} -o custom-columns={columns}")
    kubectl(
        "get",
        "events",
        "-n",
        NAMESPACE,
        f"--field-selector=involvedObject.name={BIG}",
        f"-o=custom-columns={columns}",
    )
    print(f"$ kubectl delete kb {BIG}")
    kubectl("delete", "kb", BIG, "-n", NAMESPACE, "--wait=false")


def stalled_reason(kubectl: Any, jsonpath: str) -> str:
    return str(kubectl("get", "kb", BIG, "-n", NAMESPACE, "-o", f"jsonpath={jsonpath}", capture=True))


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tandem-demo-"))
    kubeconfig = workdir / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}"}
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.emulator",
            "--crds",
            str(ROOT / "crds"),
            "--crds",
            str(ROOT / "tests/emulator/upstream"),
            "--kubeconfig",
            str(kubeconfig),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    processes = [emulator]
    try:
        assert emulator.stdout is not None
        line = emulator.stdout.readline().strip()
        if not line.startswith("READY "):
            raise SystemExit(f"the API emulator did not start: {line!r}")
        url = line.split()[1]
        banner(f"API emulator at {url} (kubeconfig {kubeconfig})")
        operator_log = (workdir / "operator.log").open("w")
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tandem.platform.kubernetes",
                "--health",
                f"http://127.0.0.1:{free_port()}/healthz",
                "--metrics-port",
                "0",
                "--peering",
                "",
            ],
            cwd=ROOT,
            env={**env, "TANDEM_KUBE_SERVER": url, "TANDEM_RESYNC_SECONDS": "3"},
            stdout=operator_log,
            stderr=subprocess.STDOUT,
        )
        processes.append(operator)

        def kubectl(*args: str, check: bool = True, capture: bool = False) -> str:
            done = subprocess.run(
                ["kubectl", f"--kubeconfig={kubeconfig}", *args],
                check=check,
                capture_output=capture,
                text=True,
            )
            return done.stdout if capture else ""

        banner("kubectl explain knowledgebase.spec.chunking")
        kubectl("explain", "knowledgebase.spec.chunking", check=False)
        banner("kubectl apply -f examples/basic")
        kubectl("apply", "-f", str(ROOT / "examples/basic"))
        banner("a CRD-level mistake is refused at admission, the API server's message naming the field")
        bad = workdir / "bad.yaml"
        bad.write_text(
            (ROOT / "examples/basic/10-knowledgebase.yaml").read_text().replace("overlap: 32", "overlap: 300")
        )
        print("$ kubectl apply -f bad.yaml   # examples/basic's KnowledgeBase with chunking.overlap: 300")
        kubectl("apply", "-f", str(bad), check=False)
        print(
            "$ kubectl scale he assistant --replicas=2   # its vLLM pods are autoscaled (serving.autoscaling)"
        )
        kubectl("scale", "he", "assistant", "-n", NAMESPACE, "--replicas=2", check=False)
        refused_child(kubectl, workdir)
        time.sleep(4)
        banner("what the operator created (kubectl get ... -l app.kubernetes.io/managed-by=tandem)")
        kubectl(
            "get",
            "configmaps,jobs,cronjobs,rayjobs,deployments,services,networkpolicies,hpa",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/managed-by=tandem",
        )
        banner("kubectl get tandem (nothing runs pods here, so the work is still in progress)")
        kubectl("get", "tandem", "-n", NAMESPACE)
        banner("playing the cluster's controllers: Jobs complete, KubeRay finishes, Deployments roll out")
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(10):
                finish_jobs(client, NAMESPACE)
                finish_rayjobs(client, NAMESPACE)
                roll_out_deployments(client, NAMESPACE)
                time.sleep(2)
        banner("kubectl get tandem -o wide")
        kubectl("get", "tandem", "-n", NAMESPACE, "-o", "wide")
        banner("kubectl describe knowledgebase handbook")
        kubectl("describe", "knowledgebase", "handbook", "-n", NAMESPACE)
        print(f"\noperator log: {workdir / 'operator.log'}")
        return 0
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
