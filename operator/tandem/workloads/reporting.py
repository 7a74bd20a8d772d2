"""How a workload reports: JSON progress lines on stdout, and a final result that also goes to the
Kubernetes termination message (the operator copies it into status without the pod needing API access)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

TERMINATION_LOG = Path("/dev/termination-log")
# The kubelet keeps 4 KiB of termination message; results longer than that must shrink themselves first.
TERMINATION_BYTES = 4096
# What a result object may take inside the `{"result": ...}` line.
RESULT_BYTES = TERMINATION_BYTES - len(json.dumps({"result": {}})) + 2
# Exit codes a Job's podFailurePolicy reads: a permanent error fails the Job at once, others retry.
EXIT_OK, EXIT_RETRY, EXIT_PERMANENT = 0, 1, 2


def emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def finish(outcome: dict[str, Any], result_file: str | None = None) -> None:
    text = json.dumps({"result": outcome})
    print(text, flush=True)
    if result_file:
        Path(result_file).write_text(text)
    write_termination_message(text)


def write_termination_message(text: str, path: Path = TERMINATION_LOG) -> None:
    if path.parent.exists() and os.access(path.parent, os.W_OK):
        with contextlib.suppress(OSError):  # not in a Kubernetes pod after all
            path.write_text(text[:TERMINATION_BYTES])


def shrink_lists(data: dict[str, Any], flags: dict[str, str], limit: int = RESULT_BYTES) -> dict[str, Any]:
    """`data` with each list named in `flags` halved until its JSON fits `limit` bytes, and that list's
    flag set to true when it was cut (its full length is the caller's to report), so the operator, which
    reads the result from the termination message, gets a shorter list rather than JSON cut mid-way."""
    out = dict(data)
    for key, flag in flags.items():
        while len(json.dumps(out).encode()) > limit and out.get(key):
            out[key] = out[key][: len(out[key]) // 2]
            out[flag] = True
    return out
