"""vLLM's CPU build as a local server: the same OpenAI API the vLLM pods serve, on 127.0.0.1.

vLLM pins its own torch and transformers, so it lives in a virtual environment of its own
(`make vllm` or `scripts/install-vllm.sh` creates `.venv-vllm`) and Tandem only ever starts it as a
process: nothing here imports vllm. The arguments mirror what the HybridEndpoint planner gives the vLLM
pods (the served name `base`, LoRA enabled with a rank vLLM accepts), so local mode and a cluster serve
the same way. Start to ready takes about a minute on two cores and about 3.5 GB of memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tandem.api.v1alpha1.hybridendpoint import Serving
from tandem.core import vllm_guard
from tandem.core.adapters import lora_rank_slot
from tandem.core.references import ResolvedAdapter
from tandem.core.vllm import ENTRYPOINT, GUARD_ARGUMENT, GUARD_MODULE, vllm_arguments
from tandem.workloads.adapter_sync import VLLM_API_KEY_ENV

from . import processes
from .processes import free_port, log_tail

# operator/tandem/platform/local/vllm.py -> the repository root, where `make vllm` puts `.venv-vllm`.
REPO_ROOT = Path(__file__).resolve().parents[4]
VENV_NAME = ".venv-vllm"
INSTALL_HINT = (
    "install it with `make vllm` (or scripts/install-vllm.sh [DIR]; then TANDEM_VLLM_PYTHON=DIR/bin/python)"
)


class VllmNotInstalled(RuntimeError):
    """No Python environment with vLLM's CPU build was found."""


class VllmFailed(RuntimeError):
    """vLLM exited or did not become healthy; the message carries the tail of its log."""


def vllm_python() -> str:
    """The Python of vLLM's environment: $TANDEM_VLLM_PYTHON, else `.venv-vllm` in the repo or here."""
    configured = os.environ.get("TANDEM_VLLM_PYTHON")
    if configured:
        if not os.access(configured, os.X_OK):
            raise VllmNotInstalled(f"TANDEM_VLLM_PYTHON={configured} is not an executable: {INSTALL_HINT}")
        return configured
    candidates = [REPO_ROOT / VENV_NAME / "bin" / "python", Path.cwd() / VENV_NAME / "bin" / "python"]
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise VllmNotInstalled(
        f"vLLM's CPU build was not found (looked for $TANDEM_VLLM_PYTHON, {looked}): {INSTALL_HINT}"
    )


def vllm_argv(
    model: str | Path,
    *,
    port: int,
    max_model_len: int,
    dtype: str = "bfloat16",
    max_lora_rank: int | None = 8,
    max_loras: int = 2,
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
) -> list[str]:
    """The arguments after the Python executable that start vLLM's OpenAI server.

    The same flags the HybridEndpoint planner gives the vLLM container; `max_lora_rank=None` serves the
    base model only (no --enable-lora). A rank vLLM does not offer is rounded up to one it does.
    """
    serving = Serving(max_model_len=max_model_len, max_loras=max_loras, extra_args=list(extra))
    ranks = (
        [ResolvedAdapter("", "", lora_rank_slot(max_lora_rank), None)] if max_lora_rank is not None else []
    )
    return [
        "-m",
        ENTRYPOINT,
        *vllm_arguments(
            serving,
            model=str(model),
            host=host,
            port=port,
            declared_adapters=1 if max_lora_rank is not None else 0,
            adapters=ranks,
            dtype=dtype,
        ),
    ]


def key_guard(directory: Path) -> tuple[list[str], dict[str, str]]:
    """vLLM's arguments and environment to require its key on every route but /health and /metrics
    (`tandem.core.vllm_guard`, copied into `directory` as a module vLLM's own Python imports)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vllm_guard.__file__, directory / f"{GUARD_MODULE}.py")
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
    return [GUARD_ARGUMENT], {"PYTHONPATH": path}


def vllm_env() -> dict[str, str]:
    """What vLLM's CPU build needs in its environment, on top of the caller's."""
    return {
        # GiB for the KV cache: vLLM's CPU default (4) is far more than a small model on 2k tokens uses.
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        # The model is a local folder: never ask a hub.
        "HF_HUB_OFFLINE": "1",
        # /v1/load_lora_adapter and /v1/unload_lora_adapter: adapters change without a restart.
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true",
        # The engine's processes talk to each other (torch.distributed, ZeroMQ) on an address vLLM
        # otherwise takes from the machine's default route: loopback keeps them off the network.
        "VLLM_HOST_IP": "127.0.0.1",
        # No usage report to vLLM's servers: nothing leaves this machine.
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


class VllmServer:
    """One vLLM OpenAI server process on 127.0.0.1, started in a session of its own and stopped by PID.

    vLLM runs its engine in child processes, so `stop()` signals the whole process group (the group id
    is the server's PID, since it leads its own session), never processes found by name.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        log: Path,
        port: int | None = None,
        python: str | None = None,
        max_model_len: int = 2048,
        dtype: str = "bfloat16",
        max_lora_rank: int | None = 8,
        max_loras: int = 2,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        api_key: str | None = None,
        api_key_file: Path | None = None,
    ) -> None:
        """`api_key`: required by vLLM on every route but /health and /metrics (through VLLM_API_KEY and
        the guard, never an argument), as `tandem up` runs it. `api_key_file`: the key read by the guard
        alone from that file, again when it changes, as a vLLM pod runs it (tandem.core.vllm_guard)."""
        self.model = Path(model)
        self.api_key = api_key
        self.api_key_file = api_key_file
        self.log = log
        self.port = port if port is not None else free_port()
        self.python = python
        self.argv_tail = vllm_argv(
            model,
            port=self.port,
            max_model_len=max_model_len,
            dtype=dtype,
            max_lora_rank=max_lora_rank,
            max_loras=max_loras,
            extra=extra,
        )
        self.env = dict(env or {})
        if api_key or api_key_file:
            arguments, guard_env = key_guard(log.parent / "guard")
            self.argv_tail += arguments
            self.env.update(guard_env)
        if api_key:
            self.env[VLLM_API_KEY_ENV] = api_key
        if api_key_file:
            self.env[vllm_guard.KEY_FILE_ENV] = str(api_key_file)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise VllmFailed("vLLM has not been started")
        return self.process.pid

    def argv(self) -> list[str]:
        return [self.python or vllm_python(), *self.argv_tail]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 600.0) -> VllmServer:
        """Start vLLM and wait until /health answers; on failure it is stopped and the log's tail raised."""
        if self.running():
            return self
        argv = self.argv()  # raises VllmNotInstalled before anything starts
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **vllm_env(), **self.env},
                start_new_session=True,  # its own process group: the engine's children stop with it
            )
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float) -> None:
        process = self.process
        if process is None:
            raise VllmFailed("vLLM has not been started")
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise VllmFailed(
                        f"vLLM exited with code {process.returncode} while starting "
                        f"(model {self.model}); the end of {self.log}:\n{log_tail(self.log)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                time.sleep(1)
        raise VllmFailed(
            f"vLLM was not healthy after {timeout:.0f} s (model {self.model}); "
            f"the end of {self.log}:\n{log_tail(self.log)}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after `timeout` seconds."""
        if self.process is not None:
            processes.stop(self.process.pid, timeout)
            self.process.wait()

    def models(self) -> list[dict[str, Any]]:
        """The entries of /v1/models: the base model, then the LoRA adapters loaded (with `parent` set)."""
        response = httpx.get(f"{self.url}/v1/models", timeout=10, headers=self.headers())
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Serve the LoRA adapter in `path` as model `name` from now on (replacing another path)."""
        from tandem.workloads.adapter_sync import ConfiguredAdapter, VllmAdmin, execute, plan_sync

        with VllmAdmin(self.url, api_key=self.api_key or "", api_key_file=self.api_key_file) as admin:
            loaded = {a.name: a for a in admin.loaded_adapters() if a.name == name}
            for result in execute(admin, plan_sync([ConfiguredAdapter(name, str(path))], loaded)):
                if result.error:
                    raise VllmFailed(f"cannot load adapter {name!r} from {path}: {result.error}")

    def unload_adapter(self, name: str) -> None:
        from tandem.workloads.adapter_sync import VllmAdmin

        with VllmAdmin(self.url, api_key=self.api_key or "", api_key_file=self.api_key_file) as admin:
            admin.unload(name)

    def headers(self) -> dict[str, str]:
        """What a client of its /v1 routes sends: the key, when it has one."""
        key = self.api_key or (self.api_key_file.read_text().strip() if self.api_key_file else "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
