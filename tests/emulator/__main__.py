"""
Run the emulator as a separate process::

    python -m tests.emulator --port 8765 --crds crds/ --crds other/ --kubeconfig /tmp/kubeconfig.yaml

Serves until SIGTERM/SIGINT. Prints ``READY <url>`` to stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from tests.emulator.runner import run_emulator


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description="Kubernetes API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 for a free port (see the READY line)")
    parser.add_argument(
        "--crds", action="append", default=[], help="a CRD YAML file or a directory (repeatable)"
    )
    parser.add_argument("--kubeconfig", default=None, help="write a kubeconfig pointing to the emulator here")
    parser.add_argument("--namespace", default="default", help="the default namespace in the kubeconfig")
    parser.add_argument("--history-size", type=int, default=1000, help="watch events kept per resource")
    parser.add_argument(
        "--no-implicit-namespaces",
        action="store_true",
        help="fail with 404 on objects in nonexistent namespaces (as a real cluster does)",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_emulator(
        crds=args.crds,
        host=args.host,
        port=args.port or None,
        history_size=args.history_size,
        implicit_namespaces=not args.no_implicit_namespaces,
        max_recorded_requests=10_000,
    ) as emulator:
        if args.kubeconfig:
            emulator.write_kubeconfig(args.kubeconfig, namespace=args.namespace)
        print(f"READY {emulator.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
