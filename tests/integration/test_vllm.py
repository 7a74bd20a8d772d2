"""vLLM's CPU build for real, and the adapter-sync sidecar against it.

Shown: the base model answers; the sidecar loads an adapter into the running server (same PID, listed
in /v1/models, answering by its name), a second round does nothing, a new version in a new folder
replaces the old one, and an adapter removed from the configuration is unloaded, with the sidecar
following its configuration file as the kubelet rewrites it. vLLM binds loopback only; a model folder
that does not exist is a clear error carrying vLLM's own last words.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.platform.local.vllm import (
    VllmFailed,
    VllmNotInstalled,
    VllmServer,
    free_port,
    vllm_argv,
    vllm_python,
)
from tests.integration.vllm_server import require_vllm
from tests.manifests import ROOT, example

pytestmark = pytest.mark.integration

ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}"}
QUESTION = "What is the capital of France?"


def chat(server: VllmServer, model: str, max_tokens: int = 16) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
        timeout=120,
    )


def answer(server: VllmServer, model: str) -> str:
    response = chat(server, model)
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


def adapters(server: VllmServer) -> dict[str, str]:
    """Loaded adapters by name, with the folder each was loaded from."""
    return {m["id"]: m["root"] for m in server.models() if m.get("parent")}


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: last={last!r}")


def write_config(path: Path, entries: list[dict[str, Any]]) -> None:
    """As the kubelet updates a mounted ConfigMap: the new file appears whole, by a rename."""
    staging = path.with_name(path.name + ".new")
    staging.write_text(json.dumps({"endpoint": {"namespace": "test", "name": "vllm"}, "adapters": entries}))
    staging.replace(path)


def others(server: VllmServer, mine: set[str]) -> list[dict[str, Any]]:
    """Adapters another module loaded into the shared server: configured too, so left alone."""
    return [{"name": n, "path": p, "version": None} for n, p in adapters(server).items() if n not in mine]


def sidecar_argv(config: Path, server: VllmServer, *extra: str) -> list[str]:
    """The adapter-sync sidecar's command line, as the vLLM pod runs it."""
    return [
        sys.executable,
        "-m",
        "tandem.workloads.adapter_sync",
        "--config",
        str(config),
        "--vllm",
        server.url,
        *extra,
    ]


def sync_cli(config: Path, server: VllmServer, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sidecar_argv(config, server, *extra),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=180,
    )


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# --- no server needed ----------------------------------------------------------------------------------


def test_local_vllm_gets_the_flags_the_operator_gives_its_pods() -> None:
    from tandem.api.v1alpha1 import HybridEndpointSpec
    from tandem.core.references import ResolvedAdapter
    from tandem.core.vllm import GUARD_ARGUMENT
    from tandem.platform.kubernetes.ownership import Owner
    from tandem.platform.kubernetes.planners.hybridendpoint import plan_hybrid_endpoint
    from tandem.platform.kubernetes.settings import OperatorSettings

    spec = HybridEndpointSpec.model_validate(example("HybridEndpoint")["spec"])
    settings = OperatorSettings()
    plan = plan_hybrid_endpoint(
        Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team", "assistant", "uid-1"),
        spec,
        settings,
        [ResolvedAdapter("house-style", "pvc://adapters/handbook/hs-v1", 12, "v1")],
        [],
    )
    vllm = next(
        c for c in plan.children if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("vllm")
    )
    command = vllm["spec"]["template"]["spec"]["containers"][0]["command"]
    model = next(a.removeprefix("--model=") for a in command if a.startswith("--model="))
    max_loras = next(int(a.removeprefix("--max-loras=")) for a in command if a.startswith("--max-loras="))
    local = vllm_argv(
        model,
        host="0.0.0.0",
        port=settings.vllm_port,
        max_model_len=spec.serving.max_model_len,
        dtype=spec.serving.dtype,
        max_lora_rank=12,  # rounded up to 16 as the planner does
        max_loras=max_loras,
        extra=spec.serving.extra_args,
    )
    # The same flags, then the guard, as a local vLLM started with a key gets it (VllmServer, key_guard).
    assert command[1:] == [*local, GUARD_ARGUMENT]
    assert "--max-lora-rank=16" in local
    assert "--enable-lora" not in vllm_argv("/m", port=1, max_model_len=2048, max_lora_rank=None)


def test_a_missing_vllm_environment_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TANDEM_VLLM_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(VllmNotInstalled, match=r"make vllm.*scripts/install-vllm\.sh"):
        vllm_python()
    server = VllmServer(tmp_path / "model", log=tmp_path / "vllm.log")
    with pytest.raises(VllmNotInstalled):
        server.start()
    assert server.process is None and not (tmp_path / "vllm.log").exists()


def test_the_sidecar_waits_for_vllm_and_gives_up_only_when_told(tmp_path: Path) -> None:
    config = tmp_path / "gateway.json"
    write_config(config, [])
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tandem.workloads.adapter_sync",
            "--config",
            str(config),
            "--vllm",
            f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "--once",
            "--timeout",
            "4",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    seen = events(result.stdout)
    assert [e["event"] for e in seen] == ["vllm-unavailable"] * len(seen) and len(seen) >= 2
    assert [e.get("retryInSeconds") for e in seen[:2]] == [1, 2]
    assert time.monotonic() - started < 30


# --- the real server -------------------------------------------------------------------------------------


def test_a_model_folder_that_does_not_exist_fails_with_vllms_reason(tmp_path: Path) -> None:
    python = require_vllm()
    missing = tmp_path / "no-such-model"
    server = VllmServer(missing, log=tmp_path / "vllm.log", python=python)
    started = time.monotonic()
    with pytest.raises(VllmFailed, match="exited with code") as failure:
        server.start(timeout=300)
    message = str(failure.value)
    assert str(missing) in message and "the end of" in message
    assert len(message.splitlines()) > 3  # the log's tail, not only our summary
    assert not server.running()
    print(f"vLLM gave up on a missing model in {time.monotonic() - started:.0f} s")


def test_the_base_model_answers(vllm_server: VllmServer) -> None:
    assert answer(vllm_server, "base").strip()
    base = next(m for m in vllm_server.models() if m["id"] == "base")
    assert base["parent"] is None and base["max_model_len"] == 2048


def test_vllm_listens_on_loopback_only(vllm_server: VllmServer) -> None:
    listening = _listening_addresses(vllm_server.pid)
    print(f"vLLM's process group listens on {sorted(listening)}")
    assert f"127.0.0.1:{vllm_server.port}" in listening
    assert all(a.startswith(("127.0.0.1:", "[::1]:")) for a in listening), listening


def test_sync_once_loads_an_adapter_at_run_time_and_a_second_round_does_nothing(
    vllm_server: VllmServer, identity_adapter: Path, tmp_path: Path
) -> None:
    pid = vllm_server.pid
    name = "sync-identity"
    config = tmp_path / "gateway.json"
    write_config(
        config, [*others(vllm_server, {name}), {"name": name, "path": str(identity_adapter), "version": "v1"}]
    )
    try:
        first = sync_cli(config, vllm_server, "--once")
        assert first.returncode == 0, first.stdout + first.stderr
        assert [(e["event"], e["adapter"]) for e in events(first.stdout)] == [("adapter-loaded", name)]
        assert adapters(vllm_server)[name] == str(identity_adapter)
        assert answer(vllm_server, name).strip()

        second = sync_cli(config, vllm_server, "--once")
        assert second.returncode == 0, second.stdout + second.stderr
        assert events(second.stdout) == []
        assert vllm_server.pid == pid and vllm_server.running()
    finally:
        vllm_server.unload_adapter(name)


def test_the_sidecar_follows_its_config_new_versions_and_removals_without_a_restart(
    vllm_server: VllmServer, identity_adapter: Path, tmp_path: Path
) -> None:
    pid = vllm_server.pid
    name = "sidecar-style"
    v1 = tmp_path / "sidecar-style-v1"
    v2 = tmp_path / "sidecar-style-v2"  # a new version lives in a new folder
    shutil.copytree(identity_adapter, v1)
    shutil.copytree(identity_adapter, v2)
    kept = others(vllm_server, {name})
    config = tmp_path / "gateway.json"
    write_config(config, [*kept, {"name": name, "path": str(v1), "version": "v1"}])
    log = tmp_path / "sidecar.log"
    with _sidecar(config, vllm_server, log):
        eventually(lambda: adapters(vllm_server).get(name) == str(v1), what=f"{name} loaded from v1")
        assert answer(vllm_server, name).strip()

        write_config(config, [*kept, {"name": name, "path": str(v2), "version": "v2"}])
        eventually(lambda: adapters(vllm_server).get(name) == str(v2), what=f"{name} reloaded from v2")
        assert answer(vllm_server, name).strip()

        write_config(config, kept)
        eventually(lambda: name not in adapters(vllm_server), what=f"{name} unloaded")
        assert chat(vllm_server, name).status_code == 404
        time.sleep(1.5)  # a few more rounds: with nothing to do, nothing is done
    actions = [(e["event"], e.get("adapter")) for e in events(log.read_text())]
    assert actions == [
        ("adapter-loaded", name),
        ("adapter-reloaded", name),
        ("adapter-unloaded", name),
    ], log.read_text()
    assert {a["name"] for a in kept} <= set(adapters(vllm_server))
    assert vllm_server.pid == pid and vllm_server.running()


def test_load_adapter_replaces_by_path_and_unload_removes(
    vllm_server: VllmServer, identity_adapter: Path, tmp_path: Path
) -> None:
    v2 = tmp_path / "direct-v2"
    shutil.copytree(identity_adapter, v2)
    vllm_server.load_adapter("direct", identity_adapter)
    vllm_server.load_adapter("direct", identity_adapter)  # already so: nothing to do
    assert adapters(vllm_server)["direct"] == str(identity_adapter)
    vllm_server.load_adapter("direct", v2)
    assert adapters(vllm_server)["direct"] == str(v2)
    with pytest.raises(VllmFailed, match=r"no adapter_config\.json"):
        vllm_server.load_adapter("direct", tmp_path / "missing")
    assert adapters(vllm_server)["direct"] == str(v2)  # the old version keeps serving
    vllm_server.unload_adapter("direct")
    vllm_server.unload_adapter("direct")  # already gone: fine
    assert "direct" not in adapters(vllm_server)


# --- helpers ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sidecar(config: Path, server: VllmServer, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The sidecar's loop as its own process, as in the vLLM pod; stopped by its PID."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            sidecar_argv(config, server, "--interval", "0.5"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    try:
        yield process
        assert process.poll() is None, f"the sidecar exited:\n{log.read_text()}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _listening_addresses(group: int) -> set[str]:
    """The TCP addresses the processes of a process group listen on (read from /proc, by socket inode)."""
    inodes: set[str] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            for fd in (stat.parent / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    found.add(_address(fields[1], v6))
    return found


def _address(hex_address: str, v6: bool) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if not v6:
        return f"{'.'.join(str(b) for b in reversed(raw))}:{int(port, 16)}"
    # /proc prints IPv6 as four 32-bit words in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return f"[{ipaddress.IPv6Address(words)}]:{int(port, 16)}"
