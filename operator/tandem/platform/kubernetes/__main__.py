"""`python -m tandem.platform.kubernetes`: run the operator (the chart's Deployment runs this)."""

from __future__ import annotations

import argparse
import asyncio

import kopf
from prometheus_client import start_http_server

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import OperatorSettings


def main() -> None:
    parser = argparse.ArgumentParser(description="Tandem operator")
    parser.add_argument("--health", default="http://0.0.0.0:8080/healthz", help="liveness/readiness endpoint")
    parser.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)")
    parser.add_argument("--metrics-host", default="0.0.0.0")
    parser.add_argument("--peering", default="tandem", help="kopf peering name; '' runs standalone")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    settings = OperatorSettings.from_env()
    # Structured logs: one JSON object per line, naming the resource kopf is handling.
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host)
    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=args.health or None,
            peering_name=args.peering or None,
            standalone=not args.peering,
        )
    )


if __name__ == "__main__":
    main()
