"""`python -m tandem.workloads.ray_submit -- ENTRYPOINT...`: a RayJob's submitter that reports back.

KubeRay runs a RayJob's entrypoint as a Ray job, submitted by a Kubernetes Job (the "submitter") it
creates from `spec.submitterPodTemplate`, giving that container RAY_DASHBOARD_ADDRESS and
RAY_JOB_SUBMISSION_ID. The entrypoint runs on the Ray head, whose termination message nobody reads, so a
workload's `{"result": ...}` line (tandem.workloads.reporting) would only be in the Ray job's log. This
submitter follows that log, echoes it, and writes the newest result line to its own termination message,
where the operator reads it as it reads an ingest Job's.

Like KubeRay's own submitter, it submits only once: a retried submitter pod finds the job under its
submission id and follows it instead of starting it again. It exits 0 once the Ray job has ended, whether
the job succeeded or not (KubeRay judges the RayJob by the Ray job's status; a non-zero exit would only
make the Job retry a report it already has); it exits non-zero when it could not follow the job to its end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .reporting import EXIT_RETRY, TERMINATION_LOG, write_termination_message

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# After the log stream ends, how long to wait for the job's status to turn terminal.
STATUS_WAIT_SECONDS = 60.0


class ResultLines:
    """Newest `{"result": ...}` object among the log's lines, fed in arbitrary pieces."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self._partial = ""

    def feed(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def _line(self, line: str) -> None:
        line = line.strip()
        if not line.startswith('{"result"'):
            return
        try:
            parsed = json.loads(line)
        except ValueError:
            return
        if isinstance(parsed, dict) and isinstance(parsed.get("result"), dict):
            self.result = parsed["result"]


def outcome_of(status: str, message: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """What the termination message says: the workload's own result when it printed one, else why not."""
    if result is not None:
        return result
    if status == "SUCCEEDED":
        return {"error": "NoResult", "message": "the Ray job succeeded but printed no result line"}
    return {
        "error": "RayJobFailed" if status == "FAILED" else "RayJobStopped",
        "message": (message or f"the Ray job ended {status}")[-1000:],
    }


async def follow(
    address: str,
    submission_id: str,
    entrypoint: str,
    echo: Callable[[str], None],
    *,
    status_wait: float = STATUS_WAIT_SECONDS,
) -> tuple[str, dict[str, Any]]:
    """Submit (once) and follow the job to its end: (its final status, the outcome to report)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    try:
        client.get_job_info(submission_id)
        echo(f"following Ray job {submission_id} (already submitted)\n")
    except RuntimeError:  # not found: this is the first submitter pod
        client.submit_job(entrypoint=entrypoint, submission_id=submission_id)
        echo(f"submitted Ray job {submission_id}: {entrypoint}\n")
    lines = ResultLines()
    async for text in client.tail_job_logs(submission_id):
        echo(text)
        lines.feed(text)
    lines.close()
    deadline = time.monotonic() + status_wait
    while True:
        info = client.get_job_info(submission_id)
        status = str(getattr(info.status, "value", info.status))
        if status in TERMINAL or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    if status not in TERMINAL:
        raise RuntimeError(f"the log of Ray job {submission_id} ended while its status is {status}")
    return status, outcome_of(status, info.message or "", lines.result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--termination-log", type=Path, default=TERMINATION_LOG)
    parser.add_argument("entrypoint", nargs=argparse.REMAINDER, help="after --: the Ray job's command")
    args = parser.parse_args(argv)
    # Quoted for the shell Ray runs the entrypoint in; only the separator before it is dropped.
    command = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    entrypoint = shlex.join(command)
    address = os.environ.get("RAY_DASHBOARD_ADDRESS", "")
    submission_id = os.environ.get("RAY_JOB_SUBMISSION_ID", "")
    if not (address and submission_id and entrypoint):
        print(
            "RAY_DASHBOARD_ADDRESS and RAY_JOB_SUBMISSION_ID (set by KubeRay) and an entrypoint are needed",
            file=sys.stderr,
        )
        return EXIT_RETRY
    if "://" not in address:
        address = f"http://{address}"

    def echo(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        status, outcome = asyncio.run(follow(address, submission_id, entrypoint, echo))
    except Exception as e:  # the dashboard went away mid-job: the Job's next pod follows it again
        print(f"lost Ray job {submission_id}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RETRY
    write_termination_message(json.dumps({"result": outcome}), args.termination_log)
    print(f"Ray job {submission_id} ended {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
