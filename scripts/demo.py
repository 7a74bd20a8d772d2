#!/usr/bin/env python3
"""`make demo` (for now): the operator against the API emulator, driven with the real kubectl.

Starts the emulator (with Tandem's CRDs and KubeRay's RayJob CRD) and the operator as two processes,
applies examples/basic with kubectl, shows what the operator created, plays the cluster's Job,
Deployment and KubeRay controllers (the emulator runs no pods), and shows the resources turn Ready.
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

import httpx

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

        def kubectl(*args: str, check: bool = True) -> None:
            subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], check=check)

        banner("kubectl explain knowledgebase.spec.chunking")
        kubectl("explain", "knowledgebase.spec.chunking", check=False)
        banner("kubectl apply -f examples/basic")
        kubectl("apply", "-f", str(ROOT / "examples/basic"))
        banner("an invalid manifest is refused by the CRD schema, naming the field")
        bad = workdir / "bad.yaml"
        bad.write_text(
            (ROOT / "examples/basic/10-knowledgebase.yaml").read_text().replace("overlap: 32", "overlap: 300")
        )
        kubectl("apply", "-f", str(bad), check=False)
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
