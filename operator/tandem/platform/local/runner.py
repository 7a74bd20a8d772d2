"""Running a workload locally: its job contract written to `.tandem/jobs`, the cluster's own entrypoint
(`python -m tandem.workloads.X --spec FILE`) run as a child process, its JSON progress lines relayed and
its result line returned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tandem.workloads.jobs import JobContract

from . import processes

Progress = Callable[[str, dict[str, Any]], None]  # (resource key, event) -> None


class WorkFailed(Exception):
    """A resource's work cannot go on; `reason` is a CamelCase status reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class WorkloadRunner:
    def __init__(self, directory: Path, model_cache: Path, progress: Progress) -> None:
        self.dir = directory
        self.model_cache = model_cache
        self.progress = progress
        self._child: subprocess.Popen[str] | None = None

    def run(
        self, key: str, module: str, job: JobContract, *extra: str, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run `module` on `job` for resource `key`; its result, or WorkFailed with the workload's reason."""
        jobs = self.dir / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        spec_file = jobs / f"{key.replace('/', '-')}.json"
        spec_file.write_text(job.to_json())
        log = self.dir / "logs" / f"{key.replace('/', '-')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TANDEM_MODEL_CACHE": str(self.model_cache),
            **(env or {}),
        }
        result: dict[str, Any] | None = None
        with (
            log.open("a") as out,
            self._process(
                [sys.executable, "-m", module, "--spec", str(spec_file), *extra], env, out
            ) as child,
        ):
            assert child.stdout is not None
            for line in child.stdout:
                out.write(line)
                if not line.startswith("{"):
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "result" in event:
                    result = event["result"]
                else:
                    self.progress(key, event)
            code = child.wait()
        if result is None:
            raise WorkFailed("WorkloadFailed", f"{module} exited {code} without a result; see {log}")
        if "error" in result:
            raise WorkFailed(result["error"], result.get("message", ""))
        return result

    def interrupt(self) -> None:
        """Stop the work in progress (its whole process group); servers keep running."""
        child = self._child
        if child is not None and child.poll() is None:
            processes.stop(child.pid, timeout=20)  # the workload leads its own process group
            child.wait()

    @contextmanager
    def _process(self, argv: list[str], env: dict[str, str], log: Any) -> Iterator[subprocess.Popen[str]]:
        child = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
        )
        self._child = child
        try:
            yield child
        finally:
            self.interrupt()
            self._child = None
