"""A training with spec.output.publish (issue 16, item 2): the real trainer (SmolLM2-135M, PEFT, two
steps on CPU, no Ray) writes the adapter, publishes it to a real OCI registry with basic auth
(tests/integration/oci_registry.py) using the credentials of a mounted Secret folder, and its result line,
which the operator reads from the termination message, carries `artifact`; the artifact fetched back has
the adapterDigest the result reports. A registry that does not answer fails the attempt for a retry
(exit 1), the adapter stays written, and the retry finds it trained and only publishes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tandem.workloads.artifacts import Credentials, fetch
from tandem.workloads.model_common import adapter_digest
from tests.integration.oci_registry import Registry, registry_auth_fixture  # noqa: F401  (`registry_auth`)
from tests.integration.test_training import ENV, command, result_of, write_job
from tests.isolation import requires_private_network

pytestmark = pytest.mark.integration


@requires_private_network
def test_a_trained_adapter_is_published_and_its_result_names_the_artifact(
    registry_auth: Registry,
    tmp_path: Path,
    model_cache: Path,
) -> None:
    assert registry_auth.credentials is not None
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "username").write_text(registry_auth.credentials[0])
    (secret / "password").write_text(registry_auth.credentials[1])
    job = write_job(
        tmp_path,
        model_cache,
        training={"maxSteps": 2, "learningRate": 0.002, "batchSize": 2, "checkpointEverySteps": 2},
        output={
            "uri": f"file://{tmp_path / 'adapters'}",
            "publish": {
                "uri": f"oci://{registry_auth.host}/team/codeword",
                "credentialsSecretRef": {"name": "registry"},
            },
        },
    )
    run = command(job, "--no-ray", f"--publish-credentials={secret}")
    done = subprocess.run(run, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = result_of(done.stdout)
    artifact = result["artifact"]
    assert set(artifact) == {"uri", "manifestDigest"}
    assert artifact["uri"] == f"oci://{registry_auth.host}/team/codeword@{artifact['manifestDigest']}"
    adapter = tmp_path / "adapters" / "codeword-v1"
    assert result["adapterDigest"] == adapter_digest(adapter)

    # what an endpoint's adapter sync does with status.artifact and status.adapterDigest
    username, password = registry_auth.credentials
    folder = fetch(
        artifact["uri"],
        result["adapterDigest"],
        tmp_path / "cache",
        Credentials(username=username, password=password),
    )
    assert adapter_digest(folder) == result["adapterDigest"]
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 8

    # the same run again: found trained, published again as the same artifact
    again = subprocess.run(run, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert result_of(again.stdout)["skipped"] is True
    assert result_of(again.stdout)["artifact"] == artifact

    # the store down: the attempt fails for a retry (exit 1), the adapter stays as written
    registry_auth.stop()
    down = subprocess.run(run, env=ENV, capture_output=True, text=True, timeout=600)
    assert down.returncode == 1, down.stderr[-3000:]
    assert result_of(down.stdout)["error"] == "ArtifactUnavailable"
    assert adapter_digest(adapter) == result["adapterDigest"]
