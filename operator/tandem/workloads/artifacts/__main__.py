"""`python -m tandem.workloads.artifacts publish|fetch ...`: one JSON line on stdout, `{"result": {...}}`
with what was published or fetched, or `{"result": {"error": REASON, "message": ...}}`; exit 0 when done,
2 on bad arguments and on errors retrying cannot fix (a digest mismatch, an unsafe or oversized artifact,
a denied access), 1 when the store could not be reached."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from tandem.workloads.reporting import EXIT_PERMANENT, EXIT_RETRY, emit

from .archive import MAX_ARTIFACT_BYTES
from .credentials import Credentials
from .errors import ArtifactError
from .store import fetch, publish


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tandem.workloads.artifacts",
        description="Publish a LoRA adapter folder to oci:// or s3://, or fetch one back by its digest",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--credentials", type=Path, help="mounted Secret folder (username/password or AWS_* keys)"
    )
    common.add_argument("--endpoint-url", help="S3-compatible endpoint (overrides the Secret's endpoint_url)")
    common.add_argument(
        "--insecure", action="store_true", help="allow plain HTTP to a host other than loopback"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish", parents=[common], help="publish an adapter folder")
    pub.add_argument("folder", type=Path)
    pub.add_argument("uri", help="oci://HOST[:PORT]/REPO:TAG or s3://BUCKET/PREFIX")
    get = commands.add_parser("fetch", parents=[common], help="fetch an adapter into the cache, verified")
    get.add_argument(
        "uri", help="oci://HOST[:PORT]/REPO@sha256:... (or :TAG), s3://BUCKET/PREFIX[@sha256:...]"
    )
    get.add_argument("--adapter-digest", required=True, help="the adapterDigest training recorded")
    get.add_argument("--cache-dir", required=True, type=Path)
    get.add_argument("--max-bytes", type=int, default=MAX_ARTIFACT_BYTES, help="refuse larger artifacts")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 on bad arguments
    try:
        credentials = (
            Credentials.from_folder(args.credentials, insecure=args.insecure)
            if args.credentials
            else Credentials(insecure=args.insecure)
        )
    except (OSError, ValueError) as e:
        parser.error(f"--credentials: {e}")
    if args.endpoint_url:
        credentials = dataclasses.replace(credentials, endpoint_url=args.endpoint_url)
    try:
        if args.command == "publish":
            published = publish(args.folder, args.uri, credentials)
            emit(
                {
                    "result": {
                        "published": str(args.folder),
                        "uri": published.uri_with_digest,
                        "manifestDigest": published.manifest_digest,
                        "adapterDigest": published.adapter_digest,
                    }
                }
            )
        else:
            if args.max_bytes <= 0:
                parser.error("--max-bytes: must be positive")
            folder = fetch(
                args.uri, args.adapter_digest, args.cache_dir, credentials, max_bytes=args.max_bytes
            )
            emit({"result": {"fetched": args.uri, "adapterDigest": folder.name, "folder": str(folder)}})
    except ValueError as e:  # a URI or digest that names nothing
        parser.error(str(e))
    except ArtifactError as e:
        emit({"result": {"error": e.reason, "message": str(e)}})
        print(f"error: {e}", file=sys.stderr)
        return EXIT_RETRY if e.transient else EXIT_PERMANENT
    return 0


if __name__ == "__main__":
    sys.exit(main())
