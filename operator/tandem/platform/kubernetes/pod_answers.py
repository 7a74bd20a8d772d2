"""Reading what a pod answers the operator (an adapter sync's status port, a gateway's dependencies):
bounded in size and in total time. The operator is shared by every namespace, and a pod may run an image
its manifest's author chose (a HybridEndpoint's `serving.image` shares the vLLM pod's network with the
adapter sync): an answer of gigabytes, or one trickled a byte at a time, must cost the operator a bounded
read and a failed probe, not its memory or a reconcile that never ends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

MAX_ANSWER_BYTES = 1024 * 1024  # a status answer is a few KiB; a pool of 1000 adapters stays well below


class AnswerTooLarge(ValueError):
    """The answer went past MAX_ANSWER_BYTES: not read further."""


async def get_json(
    client: httpx.AsyncClient, url: str, *, seconds: float, limit: int = MAX_ANSWER_BYTES
) -> tuple[int, Any]:
    """GET `url`: its status code and JSON body, within `seconds` in all (TimeoutError otherwise).
    AnswerTooLarge past `limit` bytes, ValueError when it is not JSON, httpx.HTTPError when it fails."""
    body = bytearray()
    async with asyncio.timeout(seconds), client.stream("GET", url) as response:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise AnswerTooLarge(f"{url}: answer larger than {limit} bytes; not read further")
    return response.status_code, json.loads(body)
