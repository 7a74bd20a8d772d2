"""Adapters that travel by digest (issue 16, item 2): publish a LoRA adapter folder to a real OCI
registry (Debian's docker-registry on 127.0.0.1, tests/integration/oci_registry.py) or to S3 (moto), and
fetch it back into the content-addressed cache only when its files have the digest training recorded.

The hostile cases: content changed in the store after publishing, an adapter other than the one
expected, archives with `..`, links or more bytes than allowed, and the cache read with the store gone.

S3 is a real HTTP server on 127.0.0.1: moto's ThreadedMotoServer (moto[server], Flask), started once for
the module on a free port and stopped at its end. The store reaches it through `Credentials.endpoint_url`
(plain http is allowed to loopback), read from the Secret folder like any other S3-compatible endpoint;
moto's in-process patching (mock_aws) is not used and is checked to be off, and no AWS_* variable from the
host reaches boto3. Each test gets its own bucket, emptied and removed after it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.platform.local.processes import free_port
from tandem.workloads.artifacts import (
    ARTIFACT_TYPE,
    LAYER_MEDIA_TYPE,
    ArtifactAccessDenied,
    ArtifactDigestMismatch,
    ArtifactNotFound,
    ArtifactTooLarge,
    ArtifactUnavailable,
    ArtifactUnsafe,
    Credentials,
    fetch,
    publish,
)
from tandem.workloads.artifacts import manifest as manifests
from tandem.workloads.artifacts.archive import copy_verified, pack
from tandem.workloads.artifacts.oci import OciStore
from tandem.workloads.artifacts.s3 import S3Store
from tandem.workloads.model_common import ADAPTER_MANIFEST, adapter_digest
from tests.integration.oci_registry import (  # noqa: F401  (the fixtures `registry`, `registry_auth`...)
    Registry,
    TokenServer,
    registry_auth_fixture,
    registry_fixture,
    registry_token_fixture,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def make_adapter(folder: Path, *, weights: bytes | None = None, seed: str = "a") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "seed": seed}))
    (folder / "adapter_model.safetensors").write_bytes(
        weights if weights is not None else os.urandom(64 * 1024)
    )
    (folder / ADAPTER_MANIFEST).write_text(json.dumps({"written": "after the digest"}))
    return folder


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def push_raw(
    store: Any, tmp_path: Path, blob: bytes, claimed_adapter: str, *, size: int | None = None
) -> str:
    """Publish `blob` as it is (no packing), with a manifest claiming `claimed_adapter`; the pinned URI."""
    path = tmp_path / "raw-blob.tar.gz"
    path.write_bytes(blob)
    digest = manifests.sha256_digest(blob)
    manifest_bytes = manifests.build(digest, len(blob) if size is None else size, claimed_adapter)
    with store:
        pinned: str = store.push(path, digest, len(blob), manifest_bytes)
    return pinned


def assert_nothing_kept(cache: Path) -> None:
    assert not cache.exists() or list(cache.iterdir()) == [], list(cache.iterdir())


# --- OCI registry -----------------------------------------------------------------------------------------


def test_publish_then_fetch_by_digest(registry: Registry, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    published = publish(adapter, f"oci://{registry.host}/tandem/adapters:v1", None)

    assert published.adapter_digest == adapter_digest(adapter)
    assert published.uri_with_digest == f"oci://{registry.host}/tandem/adapters@{published.manifest_digest}"
    raw = httpx.get(
        f"{registry.url}/v2/tandem/adapters/manifests/v1",
        headers={"Accept": manifests.MANIFEST_MEDIA_TYPE},
    )
    assert raw.headers["Docker-Content-Digest"] == published.manifest_digest
    document = raw.json()
    assert document["artifactType"] == ARTIFACT_TYPE
    [layer] = document["layers"]
    assert layer["mediaType"] == LAYER_MEDIA_TYPE
    assert layer["annotations"][manifests.ADAPTER_DIGEST_ANNOTATION] == published.adapter_digest
    assert document["annotations"][manifests.ADAPTER_DIGEST_ANNOTATION] == published.adapter_digest

    cache = tmp_path / "cache"
    folder = fetch(published.uri_with_digest, published.adapter_digest, cache, None)
    assert folder == cache / published.adapter_digest
    for name in ("adapter_config.json", "adapter_model.safetensors", ADAPTER_MANIFEST):
        assert (folder / name).read_bytes() == (adapter / name).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [published.adapter_digest]  # no partial folder left

    # By tag too, into another cache; and publishing again gives the same manifest (reproducible blob).
    assert fetch(f"oci://{registry.host}/tandem/adapters:v1", published.adapter_digest, tmp_path / "c2") == (
        tmp_path / "c2" / published.adapter_digest
    )
    again = publish(adapter, f"oci://{registry.host}/tandem/adapters:v2", None)
    assert again.manifest_digest == published.manifest_digest


def test_the_cache_serves_a_second_fetch_with_the_registry_stopped(
    registry: Registry, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    published = publish(adapter, f"oci://{registry.host}/tandem/adapters:v1", None)
    cache = tmp_path / "cache"
    first = fetch(published.uri_with_digest, published.adapter_digest, cache)
    registry.stop()

    assert fetch(published.uri_with_digest, "sha256:" + published.adapter_digest, cache) == first
    assert adapter_digest(first) == published.adapter_digest

    # A cache entry damaged since is not served: it is dropped and fetched again (here: cannot be).
    (first / "adapter_model.safetensors").write_bytes(b"flipped")
    with pytest.raises(ArtifactUnavailable):
        fetch(published.uri_with_digest, published.adapter_digest, cache)
    assert_nothing_kept(cache)


def test_a_blob_tampered_with_in_the_registry_is_refused(registry: Registry, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    published = publish(adapter, f"oci://{registry.host}/tandem/adapters:v1", None)
    with OciStore(published.uri_with_digest, None) as store:
        layer = manifests.parse(store.manifest()[0], "test")
    blob = registry.blob_file(layer.digest)
    original = blob.read_bytes()
    blob.write_bytes(original[:-10] + bytes(10))  # same size, other bytes

    cache = tmp_path / "cache"
    with pytest.raises(ArtifactDigestMismatch) as refused:
        fetch(published.uri_with_digest, published.adapter_digest, cache)
    assert refused.value.expected == layer.digest
    assert refused.value.found != layer.digest and refused.value.found in str(refused.value)
    assert layer.digest in str(refused.value)
    assert_nothing_kept(cache)


def test_another_adapter_under_the_tag_is_refused(registry: Registry, tmp_path: Path) -> None:
    first = publish(
        make_adapter(tmp_path / "a", seed="a"), f"oci://{registry.host}/tandem/adapters:prod", None
    )
    second = publish(
        make_adapter(tmp_path / "b", seed="b"), f"oci://{registry.host}/tandem/adapters:prod", None
    )
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactDigestMismatch) as refused:
        fetch(f"oci://{registry.host}/tandem/adapters:prod", first.adapter_digest, cache)
    assert (refused.value.expected, refused.value.found) == (first.adapter_digest, second.adapter_digest)
    assert first.adapter_digest in str(refused.value) and second.adapter_digest in str(refused.value)

    # The annotation lies (claims the first adapter, the blob is the second): the files decide.
    blob = tmp_path / "b.tar.gz"
    pack(tmp_path / "b", blob)
    lying = push_raw(
        OciStore(f"oci://{registry.host}/tandem/lying:v1", None),
        tmp_path,
        blob.read_bytes(),
        first.adapter_digest,
    )
    with pytest.raises(ArtifactDigestMismatch) as refused:
        fetch(lying, first.adapter_digest, cache)
    assert (refused.value.expected, refused.value.found) == (first.adapter_digest, second.adapter_digest)
    assert "adapter folder" in str(refused.value)
    assert_nothing_kept(cache)


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info, None


@pytest.mark.parametrize(
    ("members", "complaint"),
    [
        ([regular("../escaped.txt", b"out")], "`..`"),
        ([regular("adapter/../../escaped.txt", b"out")], "`..`"),
        ([regular("/tmp/absolute.txt", b"out")], "absolute"),
        (
            [regular("adapter_config.json", b"{}"), _symlink("adapter_model.safetensors", "/etc/passwd")],
            "link",
        ),
        ([_symlink("inner", "adapter_config.json")], "link"),
        ([_device("null")], "not a regular file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-in", "device"],
)
def test_unsafe_archives_are_refused(
    registry: Registry, tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], complaint: str
) -> None:
    claimed = "0" * 64
    uri = push_raw(
        OciStore(f"oci://{registry.host}/tandem/hostile:v1", None), tmp_path, tar_gz(members), claimed
    )
    cache = tmp_path / "nested" / "cache"
    with pytest.raises(ArtifactUnsafe, match=complaint):
        fetch(uri, claimed, cache)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "nested" / "escaped.txt").exists()
    assert_nothing_kept(cache)


def test_an_oversized_artifact_is_refused_before_it_is_read(registry: Registry, tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024)  # random: gzip leaves it at 3 MiB
    adapter = make_adapter(tmp_path / "adapter", weights=big)
    published = publish(adapter, f"oci://{registry.host}/tandem/big:v1", None)
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactTooLarge) as refused:  # the manifest says so: no blob byte is read
        fetch(published.uri_with_digest, published.adapter_digest, cache, max_bytes=1024 * 1024)
    assert refused.value.read == 0

    # A manifest understating the blob's size: refused from the Content-Length, or else at the first
    # chunk past it.
    blob = tmp_path / "big.tar.gz"
    pack(adapter, blob)
    understated = push_raw(
        OciStore(f"oci://{registry.host}/tandem/understated:v1", None),
        tmp_path,
        blob.read_bytes(),
        published.adapter_digest,
        size=100,
    )
    with pytest.raises(ArtifactTooLarge) as refused:
        fetch(understated, published.adapter_digest, cache, max_bytes=1024 * 1024)
    assert refused.value.read < len(big)
    assert_nothing_kept(cache)


def test_a_stream_without_length_stops_at_the_limit() -> None:
    read: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            read.append(1)
            yield bytes(65536)

    with pytest.raises(ArtifactTooLarge) as refused:
        copy_verified(endless(), io.BytesIO(), what="blob", digest="sha256:" + "0" * 64, limit=1024 * 1024)
    assert refused.value.read == 1024 * 1024 + 65536 and len(read) == 17


def test_a_decompression_bomb_stops_at_the_limit(registry: Registry, tmp_path: Path) -> None:
    zeros = 64 * 1024 * 1024  # 64 MiB of zeros: about 64 KiB compressed
    info = tarfile.TarInfo("adapter_model.safetensors")
    info.size = zeros
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        tar.addfile(info, io.BytesIO(bytes(zeros)))
    assert len(raw.getvalue()) < 1024 * 1024
    claimed = "1" * 64
    uri = push_raw(OciStore(f"oci://{registry.host}/tandem/bomb:v1", None), tmp_path, raw.getvalue(), claimed)
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactTooLarge):
        fetch(uri, claimed, cache, max_bytes=4 * 1024 * 1024)
    assert_nothing_kept(cache)


def test_basic_auth_with_credentials_from_a_secret_folder(registry_auth: Registry, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    uri = f"oci://{registry_auth.host}/tandem/private:v1"
    with pytest.raises(ArtifactAccessDenied):
        publish(adapter, uri, None)
    wrong = Credentials(username="tandem", password="wrong")
    with pytest.raises(ArtifactAccessDenied):
        publish(adapter, uri, wrong)

    secret = tmp_path / "secret"
    secret.mkdir()
    assert registry_auth.credentials is not None
    (secret / "username").write_text(registry_auth.credentials[0])
    (secret / "password").write_text(registry_auth.credentials[1] + "\n")  # as `kubectl create secret` may
    credentials = Credentials.from_folder(secret)
    assert registry_auth.credentials[1] not in repr(credentials)
    published = publish(adapter, uri, credentials)
    with pytest.raises(ArtifactAccessDenied):
        fetch(published.uri_with_digest, published.adapter_digest, tmp_path / "cache", None)
    folder = fetch(published.uri_with_digest, published.adapter_digest, tmp_path / "cache", credentials)
    assert adapter_digest(folder) == published.adapter_digest


def test_bearer_tokens_from_the_registry_s_token_service(
    registry_token: tuple[Registry, TokenServer], tmp_path: Path
) -> None:
    registry, tokens = registry_token
    adapter = make_adapter(tmp_path / "adapter")
    uri = f"oci://{registry.host}/tandem/tokens:v1"
    with pytest.raises(ArtifactAccessDenied):  # the token service wants credentials
        publish(adapter, uri, None)
    assert registry.credentials is not None
    credentials = Credentials(username=registry.credentials[0], password=registry.credentials[1])
    published = publish(adapter, uri, credentials)
    assert any(scope.startswith("repository:tandem/tokens:") and "push" in scope for scope in tokens.issued)
    folder = fetch(published.uri_with_digest, published.adapter_digest, tmp_path / "cache", credentials)
    assert adapter_digest(folder) == published.adapter_digest


def test_plain_http_only_to_loopback_unless_insecure() -> None:
    assert OciStore("oci://registry.example.com/a/b:v1", None).base.startswith("https://")
    assert OciStore("oci://127.0.0.1:5000/a/b:v1", None).base == "http://127.0.0.1:5000/v2/a/b"
    assert OciStore("oci://localhost:5000/a/b:v1", None).base.startswith("http://")
    assert OciStore("oci://registry.lan:5000/a/b:v1", Credentials(insecure=True)).base.startswith("http://")
    with pytest.raises(ValueError, match="plain http"):
        S3Store("s3://bucket/p", Credentials(endpoint_url="http://minio.lan:9000"))
    for bad in ("oci://host/UPPER:v1", "oci://host/a:b:c", "oci:///a", "oci://host/a@sha256:abc"):
        with pytest.raises(ValueError):
            OciStore(bad, None)


# --- The CLI ----------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    return subprocess.run(
        [sys.executable, "-m", "tandem.workloads.artifacts", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_publish_fetch_and_refusals(registry: Registry, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    published = _cli("publish", str(adapter), f"oci://{registry.host}/tandem/cli:v1")
    assert published.returncode == 0, published.stderr
    result = json.loads(published.stdout.strip().splitlines()[-1])["result"]
    assert result["adapterDigest"] == adapter_digest(adapter)
    assert result["uri"].endswith("@" + result["manifestDigest"])

    cache = tmp_path / "cache"
    fetched = _cli(
        "fetch", result["uri"], "--adapter-digest", result["adapterDigest"], "--cache-dir", str(cache)
    )
    assert fetched.returncode == 0, fetched.stderr
    line = json.loads(fetched.stdout.strip().splitlines()[-1])["result"]
    assert line["folder"] == str(cache / result["adapterDigest"])

    wrong = "f" * 64
    refused = _cli("fetch", result["uri"], "--adapter-digest", wrong, "--cache-dir", str(tmp_path / "c2"))
    assert refused.returncode == 2
    error = json.loads(refused.stdout.strip().splitlines()[-1])["result"]
    assert error["error"] == "ArtifactDigestMismatch"
    assert wrong in refused.stderr and result["adapterDigest"] in refused.stderr

    for bad in (
        ["fetch", result["uri"], "--cache-dir", str(cache)],  # no digest
        ["fetch", result["uri"], "--adapter-digest", "xyz", "--cache-dir", str(cache)],
        ["fetch", "ftp://host/x", "--adapter-digest", wrong, "--cache-dir", str(cache)],
        ["publish", str(adapter)],
        ["push"],
    ):
        assert _cli(*bad).returncode == 2, bad


# --- S3 ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server (ThreadedMotoServer: werkzeug in a thread of this process) on a free port of
    127.0.0.1, once for the module; its URL. Stopped at the end: the port no longer answers."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    # start() waits for the server's socket without a timeout, forever if binding fails (the port taken
    # since free_port): started from a thread that is given 30 s.
    starting = threading.Thread(target=server.start, daemon=True)
    starting.start()
    starting.join(30)
    if starting.is_alive():
        pytest.fail(f"moto's S3 server did not start on 127.0.0.1:{port} within 30 s")
    host, bound = server.get_host_and_port()
    assert (host, bound) == ("127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


@dataclass
class Bucket:
    """A bucket of the S3 server, and a client of its own (over HTTP too) to look and tamper with it."""

    name: str
    endpoint: str
    client: Any

    def get(self, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return data

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body)

    def object_keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name)
        return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Bucket]:
    """A new bucket on the S3 server for this test; emptied and removed after it."""
    import boto3
    from moto.core.models import botocore_stubber

    # Nothing of the host's AWS setup reaches boto3 (keys, profile, endpoint, CA bundle, region...), nor
    # its ~/.aws files, nor a proxy between boto3 and 127.0.0.1.
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # moto's mock_aws would answer boto3 in-process, before any byte is sent: it must be off here.
    assert not botocore_stubber.enabled, "moto's mock_aws is active: the S3 tests must go over HTTP"

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    made = Bucket(f"adapters-{uuid.uuid4().hex[:12]}", s3_endpoint, client)
    client.create_bucket(Bucket=made.name)
    try:
        yield made
    finally:
        if made.name in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            for key in made.object_keys():
                client.delete_object(Bucket=made.name, Key=key)
            client.delete_bucket(Bucket=made.name)
        client.close()


@pytest.fixture
def s3_credentials(bucket: Bucket, tmp_path: Path) -> Credentials:
    """The Secret folder for the S3 server: access key pair, region and the server's endpoint_url."""
    secret = tmp_path / "s3-secret"
    secret.mkdir()
    (secret / "AWS_ACCESS_KEY_ID").write_text("test")
    (secret / "AWS_SECRET_ACCESS_KEY").write_text("test")
    (secret / "region").write_text("us-east-1")
    (secret / "endpoint_url").write_text(bucket.endpoint)
    credentials = Credentials.from_folder(secret)
    assert (credentials.aws_access_key_id, credentials.region) == ("test", "us-east-1")
    assert credentials.endpoint_url == bucket.endpoint and not credentials.insecure
    return credentials


def test_s3_publish_then_fetch(bucket: Bucket, s3_credentials: Credentials, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    location = f"s3://{bucket.name}/team-a/support"
    published = publish(adapter, location, s3_credentials)
    assert published.uri_with_digest == f"{location}@{published.manifest_digest}"
    keys = bucket.object_keys()
    manifest_hex = published.manifest_digest.removeprefix("sha256:")
    [blob_key] = [k for k in keys if k.startswith("team-a/support/blobs/sha256/")]
    assert keys == sorted(
        [blob_key, f"team-a/support/manifests/sha256/{manifest_hex}", "team-a/support/manifest.json"]
    )
    blob = bucket.get(blob_key)
    assert blob_key.endswith(manifests.sha256_digest(blob).removeprefix("sha256:"))
    # The objects are the server's, behind its HTTP: refused without a signature, served with one.
    assert httpx.get(f"{bucket.endpoint}/{bucket.name}/{blob_key}").status_code == 403
    presigned = bucket.client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket.name, "Key": blob_key}, ExpiresIn=60
    )
    assert presigned.startswith(f"{bucket.endpoint}/{bucket.name}/")
    assert httpx.get(presigned).content == blob

    cache = tmp_path / "cache"
    folder = fetch(published.uri_with_digest, published.adapter_digest, cache, s3_credentials)
    assert adapter_digest(folder) == published.adapter_digest
    assert fetch(location, published.adapter_digest, tmp_path / "c2", s3_credentials)

    # The cache is read without the store: the bucket is gone.
    for key in keys:
        bucket.client.delete_object(Bucket=bucket.name, Key=key)
    bucket.client.delete_bucket(Bucket=bucket.name)
    with pytest.raises(ArtifactNotFound):
        fetch(published.uri_with_digest, published.adapter_digest, tmp_path / "c3", s3_credentials)
    assert fetch(published.uri_with_digest, published.adapter_digest, cache, s3_credentials) == folder


def test_s3_objects_tampered_with_are_refused(
    bucket: Bucket, s3_credentials: Credentials, tmp_path: Path
) -> None:
    first = publish(make_adapter(tmp_path / "a", seed="a"), f"s3://{bucket.name}/x", s3_credentials)
    manifest_key = "x/manifests/sha256/" + first.manifest_digest.removeprefix("sha256:")
    layer = manifests.parse(bucket.get(manifest_key), "test")
    blob_key = "x/blobs/sha256/" + layer.digest.removeprefix("sha256:")
    original = bucket.get(blob_key)
    bucket.put(blob_key, original[:-10] + bytes(10))
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactDigestMismatch) as refused:
        fetch(first.uri_with_digest, first.adapter_digest, cache, s3_credentials)
    assert refused.value.expected == layer.digest
    assert_nothing_kept(cache)

    # The manifest pinned by the URI rewritten: its bytes no longer have the digest.
    bucket.put(blob_key, original)
    bucket.put(manifest_key, manifests.build(layer.digest, layer.size, "2" * 64))
    with pytest.raises(ArtifactDigestMismatch) as refused:
        fetch(first.uri_with_digest, first.adapter_digest, cache, s3_credentials)
    assert refused.value.expected == first.manifest_digest

    # Blob and latest manifest swapped consistently for another adapter, claiming the first: the files decide.
    blob_b = tmp_path / "b.tar.gz"
    make_adapter(tmp_path / "b", seed="b")
    digest_b, size_b = pack(tmp_path / "b", blob_b)
    bucket.put(blob_key, blob_b.read_bytes())  # under the old name
    bucket.put("x/manifest.json", manifests.build(layer.digest, size_b, first.adapter_digest))
    with pytest.raises(ArtifactDigestMismatch):  # the blob's sha256 is not its name
        fetch(f"s3://{bucket.name}/x", first.adapter_digest, cache, s3_credentials)
    bucket.put("x/blobs/sha256/" + digest_b.removeprefix("sha256:"), blob_b.read_bytes())
    bucket.put("x/manifest.json", manifests.build(digest_b, size_b, first.adapter_digest))
    with pytest.raises(ArtifactDigestMismatch) as refused:
        fetch(f"s3://{bucket.name}/x", first.adapter_digest, cache, s3_credentials)
    assert refused.value.expected == first.adapter_digest
    assert refused.value.found == adapter_digest(tmp_path / "b")
    assert_nothing_kept(cache)


def test_s3_unsafe_and_oversized_archives(
    bucket: Bucket, s3_credentials: Credentials, tmp_path: Path
) -> None:
    claimed = "3" * 64
    uri = push_raw(
        S3Store(f"s3://{bucket.name}/evil", s3_credentials),
        tmp_path,
        tar_gz([regular("../x", b"x")]),
        claimed,
    )
    with pytest.raises(ArtifactUnsafe):
        fetch(uri, claimed, tmp_path / "cache", s3_credentials)
    assert not (tmp_path / "x").exists()
    big = make_adapter(tmp_path / "big", weights=os.urandom(2 * 1024 * 1024))
    published = publish(big, f"s3://{bucket.name}/big", s3_credentials)
    with pytest.raises(ArtifactTooLarge) as refused:
        fetch(
            published.uri_with_digest,
            published.adapter_digest,
            tmp_path / "cache",
            s3_credentials,
            max_bytes=2**20,
        )
    assert refused.value.read == 0
    assert_nothing_kept(tmp_path / "cache")
