"""How a workload reports: JSON progress lines on stdout, and a final result that also goes to the
Kubernetes termination message (the operator copies it into status without the pod needing API access)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

TERMINATION_LOG = Path("/dev/termination-log")
# Exit codes a Job's podFailurePolicy reads: a permanent error fails the Job at once, others retry.
EXIT_OK, EXIT_RETRY, EXIT_PERMANENT = 0, 1, 2


def emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def finish(outcome: dict[str, Any], result_file: str | None = None) -> None:
    text = json.dumps({"result": outcome})
    print(text, flush=True)
    if result_file:
        Path(result_file).write_text(text)
    if TERMINATION_LOG.parent.exists() and os.access(TERMINATION_LOG.parent, os.W_OK):
        with contextlib.suppress(OSError):  # not in a Kubernetes pod after all
            TERMINATION_LOG.write_text(text[:4096])  # the kubelet keeps at most 4 KiB
