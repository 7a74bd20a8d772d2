"""Remote base models: s3:// prefixes (moto) and http(s):// files (a loopback server) into the model cache."""

from __future__ import annotations

import http.server
import io
import ipaddress
import json
import tarfile
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tandem.api.v1alpha1.adaptertraining import TRANSIENT_MODEL_REASONS
from tandem.workloads import model_download
from tandem.workloads.knowledge import safe_http
from tandem.workloads.model_download import fetch_model
from tandem.workloads.models import ModelError, file_digest, folder_digest, prepare


def _no_partials(cache: Path) -> bool:
    return not list(cache.rglob("*.partial"))


# -------------------------------------------------------------------------------------------------- S3


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[str]]]:
    """A moto bucket `models` with a tiny Hugging Face folder, and the keys the code under test GETs."""
    import boto3
    from moto import mock_aws

    for name, value in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ]:
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        client.put_object(Bucket="models", Key="smol/config.json", Body=b'{"model_type": "llama"}')
        client.put_object(Bucket="models", Key="smol/model.safetensors", Body=b"weights-v1")
        client.put_object(Bucket="models", Key="smol-2/config.json", Body=b"{}")  # a neighbour prefix
        client.put_object(Bucket="models", Key="ggufs/tiny.gguf", Body=b"GGUF tiny")
        client.put_object(Bucket="models", Key="docs/readme.md", Body=b"# not a model")
        fetched: list[str] = []
        measured = boto3.client("s3")
        measured.meta.events.register(
            "provide-client-params.s3.GetObject", lambda params, **_: fetched.append(params["Key"])
        )
        monkeypatch.setattr(model_download, "_s3_client", lambda: measured)
        yield client, fetched


def test_s3_folder_is_downloaded_once_and_again_when_it_changes(
    s3: tuple[Any, list[str]], tmp_path: Path
) -> None:
    client, fetched = s3
    first = prepare("s3://models/smol", cache=tmp_path)
    assert sorted(p.name for p in first.path.iterdir()) == ["config.json", "model.safetensors"]
    assert (first.path / "model.safetensors").read_bytes() == b"weights-v1"
    assert first.digest == folder_digest(first.path)  # the weights, as for a local folder
    assert sorted(fetched) == ["smol/config.json", "smol/model.safetensors"]  # not smol-2/

    fetched.clear()
    again = prepare("s3://models/smol/", cache=tmp_path)
    assert again == first and fetched == []

    client.put_object(Bucket="models", Key="smol/model.safetensors", Body=b"weights-v2")
    changed = prepare("s3://models/smol", cache=tmp_path)
    assert len(fetched) == 2 and changed.path != first.path and changed.digest != first.digest
    assert (changed.path / "model.safetensors").read_bytes() == b"weights-v2"
    assert _no_partials(tmp_path)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("s3://models/nothing-here", "BaseModelNotFound"),
        ("s3://no-such-bucket/smol", "BaseModelNotFound"),
        ("s3://models/ggufs/absent.gguf", "BaseModelNotFound"),
        ("s3://models/docs", "BaseModelUnsupported"),
        ("s3://models/ggufs", "BaseModelUnsupported"),  # GGUF files, but none named by ggufFile
    ],
)
def test_s3_failures_name_the_uri(s3: tuple[Any, list[str]], tmp_path: Path, uri: str, reason: str) -> None:
    with pytest.raises(ModelError, match=uri) as raised:
        prepare(uri, cache=tmp_path)
    assert raised.value.reason == reason


def test_s3_gguf_object_is_returned_as_a_file(s3: tuple[Any, list[str]], tmp_path: Path) -> None:
    by_key = fetch_model("s3://models/ggufs/tiny.gguf", tmp_path)
    by_name = fetch_model("s3://models/ggufs", tmp_path, gguf_file="tiny.gguf")
    assert by_key.name == by_name.name == "tiny.gguf" and by_key.read_bytes() == b"GGUF tiny"


def test_s3_size_cap(s3: tuple[Any, list[str]], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="exceeds the limit") as raised:
        fetch_model("s3://models/smol", tmp_path, max_bytes=10)
    assert raised.value.reason == "BaseModelTooLarge" and s3[1] == []


def test_s3_interrupted_download_leaves_nothing_that_looks_complete(
    s3: tuple[Any, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = model_download._download_object

    def dies_on_the_weights(client: Any, uri: str, bucket: str, obj: Any, dest: Path) -> None:
        if obj.key.endswith(".safetensors"):
            raise KeyboardInterrupt  # as a killed process would, midway through the folder
        real(client, uri, bucket, obj, dest)

    monkeypatch.setattr(model_download, "_download_object", dies_on_the_weights)
    with pytest.raises(KeyboardInterrupt):
        fetch_model("s3://models/smol", tmp_path)
    assert list((tmp_path / "s3").iterdir()) == []
    monkeypatch.setattr(model_download, "_download_object", real)
    assert (fetch_model("s3://models/smol", tmp_path) / "model.safetensors").exists()


def test_s3_unreachable_store_is_worth_retrying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import EndpointConnectionError

    class Unreachable:
        def get_paginator(self, name: str) -> Any:
            raise EndpointConnectionError(endpoint_url="http://minio:9000")

    monkeypatch.setattr(model_download, "_s3_client", Unreachable)
    with pytest.raises(ModelError, match=r"s3://models/smol.*AWS_ENDPOINT_URL") as raised:
        fetch_model("s3://models/smol", tmp_path)
    assert raised.value.reason == "BaseModelUnreachable"


# ---------------------------------------------------------------------------------------------- HTTP


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


BIG = b"GGUF" + bytes(16 << 20)  # larger than anything the download should hold in memory


class _Models(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {
        "/model.gguf": b"GGUF" + b"\x00" * 1000,
        "/big.gguf": BIG,
        "/smol.tar.gz": _tar({"smol/config.json": b"{}", "smol/model.safetensors": b"w"}),
        "/evil.tar.gz": _tar({"../escaped.txt": b"x", "config.json": b"{}"}),
        "/notes.txt": b"just some text",
    }
    etag = '"v1"'
    redirects = {"/redirect": "/model.gguf", "/to-private": "http://127.0.0.2:{port}/model.gguf"}

    def do_GET(self) -> None:
        if self.path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[self.path].format(port=self.server.server_address[1]))
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.files.get(path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        if query != "unsized":  # no Content-Length: the size cap must hold while streaming
            self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", self.etag)
        self.end_headers()
        view = memoryview(body)
        for start in range(0, len(body), 1 << 16):
            self.wfile.write(view[start : start + (1 << 16)])

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_loopback_is_refused_unless_private_networks_are_allowed(server: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"127\.0\.0\.1.*allowPrivateNetworks") as raised:
        fetch_model(f"{server}/model.gguf", tmp_path)
    assert raised.value.reason == "BaseModelAddressRefused"
    got = fetch_model(f"{server}/model.gguf", tmp_path, allow_private_networks=True)
    assert got.name == "model.gguf" and got.read_bytes() == _Models.files["/model.gguf"]


def test_redirects_are_followed_and_checked_again(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    followed = fetch_model(f"{server}/redirect", tmp_path, allow_private_networks=True)
    assert followed.read_bytes() == _Models.files["/model.gguf"]
    # Treat only 127.0.0.2 as private: the first hop passes, the redirect to 127.0.0.2 must not.
    monkeypatch.setattr(safe_http, "_forbidden", lambda a: a == ipaddress.ip_address("127.0.0.2"))
    with pytest.raises(ModelError, match=r"127\.0\.0\.2") as raised:
        fetch_model(f"{server}/to-private", tmp_path / "other")
    assert raised.value.reason == "BaseModelAddressRefused"


def test_second_fetch_downloads_nothing_and_a_new_etag_downloads_again(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fetch_model(f"{server}/model.gguf", tmp_path, allow_private_networks=True)
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(model_download, "_write_body", None)  # any download now would fail
    assert fetch_model(f"{server}/model.gguf", tmp_path, allow_private_networks=True) == first
    assert first.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    monkeypatch.setattr(_Models, "etag", '"v2"')
    second = fetch_model(f"{server}/model.gguf", tmp_path, allow_private_networks=True)
    assert second != first and file_digest(second) == file_digest(first)


def test_body_streams_to_disk(server: str, tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        got = fetch_model(f"{server}/big.gguf", tmp_path, allow_private_networks=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.stat().st_size == len(BIG) and peak < len(BIG) // 2


@pytest.mark.parametrize("query", ["", "?unsized"])
def test_size_cap_leaves_no_partial_download(server: str, tmp_path: Path, query: str) -> None:
    with pytest.raises(ModelError, match="limit of 100000 bytes") as raised:
        fetch_model(f"{server}/big.gguf{query}", tmp_path, allow_private_networks=True, max_bytes=100_000)
    assert raised.value.reason == "BaseModelTooLarge"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [] and _no_partials(tmp_path)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.gguf", "BaseModelNotFound"),
        ("/notes.txt", "BaseModelUnsupported"),
        ("/evil.tar.gz", "BaseModelUnsupported"),
    ],
)
def test_http_failures_name_the_uri(server: str, tmp_path: Path, path: str, reason: str) -> None:
    with pytest.raises(ModelError, match=f"{server}{path}") as raised:
        fetch_model(f"{server}{path}", tmp_path / "cache", allow_private_networks=True)
    assert raised.value.reason == reason
    assert not (tmp_path / "escaped.txt").exists() and _no_partials(tmp_path)


def test_prepare_unpacks_a_folder_archive(server: str, tmp_path: Path) -> None:
    model = prepare(f"{server}/smol.tar.gz", cache=tmp_path, allow_private_networks=True)
    assert (model.path / "config.json").read_bytes() == b"{}" and model.path.name == "smol"
    assert model.digest == folder_digest(model.path)
    assert prepare(f"{server}/smol.tar.gz", cache=tmp_path, allow_private_networks=True) == model
    assert _no_partials(tmp_path)


def test_vllm_init_container_links_the_fetched_folder(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the vLLM pod's init container runs: the model lands in the cache and a fixed path points at it."""
    link = tmp_path / "base"
    argv = ["--uri", f"{server}/smol.tar.gz", "--cache", str(tmp_path / "cache"), "--link", str(link)]
    assert model_download.main([*argv, "--allow-private-networks"]) == 0
    assert (link / "config.json").is_file() and link.is_symlink()
    first = link.resolve()
    assert model_download.main([*argv, "--allow-private-networks"]) == 0  # a restarted init container
    assert link.resolve() == first and not (tmp_path / "base.new").exists()
    result = capsys.readouterr().out.strip().splitlines()[-1]
    assert str(first) in result

    # Without --allow-private-networks the loopback server is refused: a permanent error (exit 2, the
    # operator reports it Stalled), which names the address and the field that allows it.
    assert model_download.main(argv) == 2
    refused = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["result"]
    assert refused["error"] not in TRANSIENT_MODEL_REASONS
    assert "127.0.0.1" in refused["message"] and "allowPrivateNetworks" in refused["message"]


def test_a_single_gguf_file_cannot_be_served_by_vllm(server: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as refused:
        model_download.link_model(
            f"{server}/model.gguf", tmp_path / "cache", tmp_path / "base", allow_private_networks=True
        )
    assert refused.value.reason == "ModelNotServable" and "folder" in str(refused.value)
    assert not (tmp_path / "base").exists()
