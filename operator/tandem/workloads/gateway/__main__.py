"""`python -m tandem.workloads.gateway --config gateway.json --host H --port P [--metrics-port M]`.

Clients are served on --port; Prometheus's /metrics and the operator's /healthz/dependencies on
--metrics-port only, a port the clients' Service does not expose (0: no /metrics, and
/healthz/dependencies on --port, as local mode runs it on loopback)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from .app import Gateway
from .config import METRICS_PORT, ConfigError, KeyRing, load_api_keys, load_config, load_vllm_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.workloads.gateway", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="gateway.json written by the operator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--metrics-port", type=int, default=METRICS_PORT, help="0: no /metrics")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # One short query per request needs one thread. More only fight over the cores with each other and
    # with vLLM's busy-waiting OpenMP workers: benchmarks/gateway_overhead.py measured the embed stage
    # at 483 ms p50 with torch's default threads beside vLLM, 20 ms with one.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        config = load_config(args.config)
        load_api_keys(config)  # a broken key file at start is a configuration error, said at once
        vllm_key = load_vllm_key(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Read again while serving: a rotated or revoked key takes effect within KEY_RELOAD_SECONDS.
    keys = KeyRing(config.tenants)
    # vLLM's key too (a rotated <endpoint>-vllm-key Secret), with the same period as vLLM's guard.
    key_file = Path(config.vllm_api_key_file) if config.vllm_api_key_file else None
    gateway = Gateway(config, keys, vllm_key=vllm_key, vllm_key_file=key_file)
    asyncio.run(serve(gateway, args.host, args.port, args.metrics_port))
    return 0


async def serve(gateway: Gateway, host: str, port: int, metrics_port: int) -> None:
    """The clients' application on `port`, /metrics and /healthz/dependencies on `metrics_port`, until the
    process is stopped."""
    runners = [web.AppRunner(gateway.app(dependencies=not metrics_port), access_log=None)]
    if metrics_port:
        runners.append(web.AppRunner(gateway.metrics_app(), access_log=None))
    stop = asyncio.Event()
    # kubelet and local mode stop the gateway with SIGTERM: close the connections and the vLLM client.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        for runner, listen in zip(runners, (port, metrics_port), strict=False):
            await runner.setup()
            await web.TCPSite(runner, host, listen).start()
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
