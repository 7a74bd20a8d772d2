"""Prometheus metrics of the operator: reconciles, errors, durations and API writes per kind."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "tandem_reconciles_total", "Reconciliations by kind and outcome state", ["kind", "outcome"]
)
RECONCILE_ERRORS = Counter(
    "tandem_reconcile_errors_total", "Reconciliations that raised, by kind and error", ["kind", "error"]
)
RECONCILE_SECONDS = Histogram(
    "tandem_reconcile_duration_seconds",
    "Time spent in one reconciliation",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter(
    "tandem_api_writes_total", "Writes the operator sent to the API server", ["kind", "verb"]
)
