"""Training progress of a running RayJob, read back from the Ray dashboard's Jobs API.

The training workload prints one JSON line per optimiser step (`tandem.workloads.reporting.emit`) and a
`{"result": ...}` line at the end. Ray keeps the driver's output (Ray Train workers' lines reach it with a
`(RayTrainWorker pid=...)` prefix), and `GET /api/jobs/{id}/logs` on the head's dashboard returns all of
it as `{"logs": "..."}`. That endpoint has no tail or offset parameter, so the client streams the body
and keeps only its end: the newest step is always in the last lines.

Status never claims more than was observed: a figure the log does not state stays unknown, and a
dashboard that cannot be read yields nothing, so the caller keeps the figures it last saw.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger("tandem.operator")

# One attempt per reconciliation, bounded as a whole (a dashboard that trickles bytes cannot hold the
# resource's reconcile lock for longer); the resync timer is the retry.
DASHBOARD_TIMEOUT = 3.0
# About 500 progress lines of Ray-prefixed JSON: enough to find the newest step behind a burst of noise
# (a traceback, Ray's own warnings), small enough to hold per running training.
TAIL_BYTES = 64 * 1024
# The training workload's stage name for a per-step line (tandem.workloads.training.trainer).
TRAINING_STAGE = "training"
# A line break inside a JSON string: `\n` after an even run of backslashes (escaped backslashes) that
# follows a character that is not a backslash.
_LINE_BREAK = re.compile(r"(?<=[^\\])(?:\\\\)*\\n")


@dataclass(frozen=True)
class TrainingProgress:
    """The newest per-step figures a training printed; None: the log did not state it."""

    step: int
    total_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: int | None = None

    def figures(self) -> dict[str, Any]:
        """The AdapterTraining status fields this progress states (unstated ones are left out, so a
        merge patch keeps what was last observed for them)."""
        named = {
            "step": self.step,
            "totalSteps": self.total_steps,
            "loss": self.loss,
            "evalLoss": self.eval_loss,
            "tokensPerSecond": self.tokens_per_second,
            "etaSeconds": self.eta_seconds,
        }
        return {k: v for k, v in named.items() if v is not None}


# The status fields a progress line can fill: what the reconciler clears when a new run starts.
PROGRESS_FIELDS = ("step", "totalSteps", "loss", "evalLoss", "tokensPerSecond", "etaSeconds")


def _json_object(line: str) -> dict[str, Any] | None:
    """The JSON object a log line carries after any prefix (Ray's `(RayTrainWorker pid=1, ip=...)`,
    colour codes) and before any suffix (Ray's ` [repeated 2x across cluster]`); None for anything else,
    including a line cut short."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(line, start)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _integer(value: Any) -> int | None:
    # bool is an int to Python, never a step count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def last_progress(log_text: str) -> TrainingProgress | None:
    """The newest per-step progress line in a training's log, or None when there is none yet.

    A `{"result": ...}` line after it adds the evaluation loss the run ended with (the per-step lines do
    not carry one). A result with no step line before it (a skipped run that found its adapter already
    trained) says nothing about this run's steps, so it yields nothing.
    """
    final_eval_loss: float | None = None
    for line in reversed(log_text.splitlines()):
        event = _json_object(line)
        if event is None:
            continue
        if isinstance(event.get("result"), dict):
            metrics = event["result"].get("metrics")
            if isinstance(metrics, dict) and final_eval_loss is None:
                final_eval_loss = _number(metrics.get("eval_loss"))
            continue
        step = _integer(event.get("step"))
        if event.get("stage") != TRAINING_STAGE or step is None:
            continue
        eval_loss = _number(event.get("evalLoss"))
        return TrainingProgress(
            step=step,
            total_steps=_integer(event.get("totalSteps")),
            loss=_number(event.get("loss")),
            eval_loss=final_eval_loss if final_eval_loss is not None else eval_loss,
            tokens_per_second=_number(event.get("tokensPerSecond")),
            eta_seconds=_integer(event.get("etaSeconds")),
        )
    return None


def logs_from_tail(body_tail: bytes) -> str:
    """The whole log lines at the end of a `{"logs": "..."}` body of which only the end was kept.

    The log is one JSON string, so a line break is the escape `\\n`: a backslash-n whose backslash is
    not itself escaped. Whether it is depends on how many backslashes precede it, which is unknown for
    a run of them at the very start of the tail, so only breaks after a character that is not a backslash
    count. Everything before the first break is the rest of a cut line and is dropped.
    """
    text = body_tail.decode("utf-8", errors="replace").rstrip()
    text = text.removesuffix("}").rstrip().removesuffix('"')  # the end of the object and of the string
    escape = len("\\n")
    # Where each whole line starts (after a break), and the end of the text as if a break followed it.
    bounds = [m.end() for m in _LINE_BREAK.finditer(text)] + [len(text) + escape]
    lines = []
    for begin, next_begin in itertools.pairwise(bounds):
        content = text[begin : next_begin - escape]
        try:
            lines.append(json.loads(f'"{content}"'))
        except ValueError:  # not string content after all (a body that is not the Jobs API's): noise
            continue
    return "\n".join(lines)


class DashboardUnavailable(Exception):
    """The job's logs could not be read; the message says why."""


async def read_log_tail(
    dashboard_url: str, job_id: str, *, timeout: float = DASHBOARD_TIMEOUT, tail_bytes: int = TAIL_BYTES
) -> str:
    """The last lines of a Ray job's driver log (all of it when it is short)."""
    base = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    url = f"{base.rstrip('/')}/api/jobs/{quote(job_id, safe='')}/logs"
    kept, truncated = bytearray(), False
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("GET", url) as response,
        ):
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                kept += chunk
                if len(kept) > 2 * tail_bytes:  # trim in steps, not per chunk
                    del kept[:-tail_bytes]
                    truncated = True
    except TimeoutError:
        raise DashboardUnavailable(f"{url}: no complete answer within {timeout:g} s") from None
    except httpx.HTTPStatusError as e:
        raise DashboardUnavailable(f"{url}: HTTP {e.response.status_code}") from None
    except httpx.HTTPError as e:
        raise DashboardUnavailable(f"{url}: {type(e).__name__}: {e}") from None
    if truncated:
        return logs_from_tail(bytes(kept[-tail_bytes:]))
    try:
        logs = json.loads(kept).get("logs")
    except (ValueError, AttributeError):
        raise DashboardUnavailable(f"{url}: the answer is not a Ray Jobs API logs object") from None
    if not isinstance(logs, str):
        raise DashboardUnavailable(f"{url}: the answer is not a Ray Jobs API logs object")
    return logs


async def rayjob_progress(rayjob: dict[str, Any] | None) -> TrainingProgress | None:
    """The newest progress of a RayJob's training, from the dashboard its KubeRay status names; None when
    the status does not name one yet, the dashboard cannot be read, or no step has been printed yet."""
    status = (rayjob or {}).get("status") or {}
    dashboard_url, job_id = status.get("dashboardURL"), status.get("jobId")
    if not dashboard_url or not job_id:
        return None
    try:
        return last_progress(await read_log_tail(str(dashboard_url), str(job_id)))
    except DashboardUnavailable as e:
        meta = (rayjob or {}).get("metadata") or {}
        log.info("training progress of RayJob %s/%s not read: %s", meta.get("namespace"), meta.get("name"), e)
        return None
