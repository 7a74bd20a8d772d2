"""A bearer key kept in a file (a mounted Secret) and read again while the process runs.

The kubelet rewrites a Secret volume's files in place (about a minute after the Secret changes), so a
client that read its key once would be locked out after a rotation until it restarts. This reads the file
again once KEY_RELOAD_SECONDS have passed, the same period vLLM's guard (tandem.core.vllm_guard) uses on
its side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path

import httpx

KEY_RELOAD_SECONDS = 2.0


class FileBearer(httpx.Auth):
    """`Authorization: Bearer <the file's content>`, read again after KEY_RELOAD_SECONDS. An unreadable or
    empty file sends no key: the server refuses, and the caller reports its 401 rather than guessing."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.read_at = float("-inf")
        self.key = ""

    def current(self) -> str:
        now = self.clock()
        if now - self.read_at >= KEY_RELOAD_SECONDS:
            self.read_at = now
            try:
                self.key = self.path.read_text().strip()
            except OSError:
                self.key = ""
        return self.key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = self.current()
        if key:
            request.headers["Authorization"] = f"Bearer {key}"
        yield request
