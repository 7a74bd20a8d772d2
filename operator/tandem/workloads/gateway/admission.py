"""Bounded concurrency, overall and per tenant: a request that finds no room is refused at once (429).

Refusing instead of queueing keeps latency honest under overload and lets clients (the OpenAI SDK
retries 429s) back off; Retry-After tells them how long the typical request holds its slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class Busy(Exception):
    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"{scope} has {limit} requests in flight, its limit; retry shortly")
        self.scope = scope


@dataclass
class Admission:
    """In-flight counters; single event loop, so plain integers are safe (no await between check and add)."""

    limit: int
    tenant_limits: dict[str, int]
    in_flight: int = 0
    per_tenant: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def slot(self, tenant: str) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise Busy("the endpoint", self.limit)
        tenant_limit = self.tenant_limits.get(tenant, self.limit)
        if self.per_tenant.get(tenant, 0) >= tenant_limit:
            raise Busy(f"tenant {tenant}", tenant_limit)
        self.in_flight += 1
        self.per_tenant[tenant] = self.per_tenant.get(tenant, 0) + 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.per_tenant[tenant] -= 1
