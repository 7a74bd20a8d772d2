"""`python -m tandem.workloads.gateway --config gateway.json --host H --port P`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from .app import Gateway
from .config import ConfigError, load_api_keys, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.workloads.gateway", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="gateway.json written by the operator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # One short query per request needs one thread. More only fight over the cores with each other and
    # with vLLM's busy-waiting OpenMP workers: benchmarks/gateway_overhead.py measured the embed stage
    # at 483 ms p50 with torch's default threads beside vLLM, 20 ms with one.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        config = load_config(args.config)
        keys = load_api_keys(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    web.run_app(Gateway(config, keys).app(), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
