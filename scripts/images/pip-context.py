#!/usr/bin/env python3
"""Give an image build the host's pip configuration: what pip may reach here, the build reaches too.

    scripts/images/pip-context.py OUTDIR TORCH_VERSION TORCH_VARIANT

Reads `pip config list` (files and PIP_* variables) and prints, one per line, what build-images.sh
passes to a buildah/podman build:

    mount PATH              bind-mount PATH read-only at the same path in every RUN of the build
    build-arg KEY=VALUE     --build-arg

- OUTDIR/pip.conf holds the host's [global] settings (index-url, extra-index-url, find-links, cert,
  constraint, trusted-host, timeout); it is mounted as /etc/pip.conf, and every local path it names
  (a CA bundle, a constraint file, a find-links directory, a file:// index) is mounted too. On a
  machine with no pip configuration nothing is printed and the build uses PyPI as it is.
- When a find-links directory holds the wheel of torch==TORCH_VERSION for TORCH_VARIANT (here: the
  CPU build on this disk), OUTDIR/torch-index is a PEP 503 index of that one file, passed as the
  Dockerfiles' TORCH_INDEX_URL: the build then takes that wheel instead of the PyTorch index.
  Otherwise the Dockerfiles' default (the PyTorch index of TORCH_VARIANT) stands.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

KEYS = ("index-url", "extra-index-url", "find-links", "cert", "constraint", "trusted-host", "timeout")
ALIASES = {"default-timeout": "timeout"}
PYTHON_TAG = "cp311"  # the images' Python (python:3.11 and its stand-in)


def pip_config() -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    settings: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        found = re.fullmatch(r"(global|install|:env:)\.([\w-]+)='(.*)'", line.strip())
        if not found:
            continue
        section, key, value = found.groups()
        key = ALIASES.get(key, key)
        if key in KEYS:
            (env if section == ":env:" else settings)[key] = value
    return settings | env  # PIP_* variables win over files, as in pip


def local_path(entry: str) -> Path | None:
    if entry.startswith("file://"):
        return Path(unquote(urlparse(entry).path))
    if "://" not in entry and entry.startswith("/"):
        return Path(entry)
    return None


def torch_wheel(find_links: list[Path], version: str, variant: str) -> Path | None:
    tag = f"{version}+{variant}"
    py = PYTHON_TAG
    for folder in find_links:
        if not folder.is_dir():
            continue
        for wheel in sorted(folder.glob(f"torch-{version}*.whl")):
            name = wheel.name
            exact = name.startswith((f"torch-{tag}-", f"torch-{quote(tag)}-")) and f"-{py}-" in name
            if exact and ("x86_64" in name or "aarch64" in name):
                return wheel
    return None


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 64
    out, torch_version, torch_variant = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    settings = pip_config()
    mounts: list[Path] = []
    for key in ("cert", "constraint"):
        if key in settings and Path(settings[key]).is_file():
            mounts.append(Path(settings[key]))
        else:
            settings.pop(key, None)
    find_links: list[Path] = []
    for key in ("index-url", "extra-index-url", "find-links"):
        kept = []
        for entry in settings.get(key, "").split():
            path = local_path(entry)
            if path is None:
                kept.append(entry)
            elif path.exists():
                kept.append(entry)
                if key == "find-links":
                    find_links.append(path)
                # a local simple index links to its files beside it (ROOT/simple, ROOT/files)
                mounts.append(path.parent if path.name == "simple" else path)
        if kept:
            settings[key] = " ".join(kept)
        else:
            settings.pop(key, None)

    if settings:
        conf = out / "pip.conf"
        conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
        print(f"mount {conf}:/etc/pip.conf")
    for path in dict.fromkeys(mounts):
        print(f"mount {path}")

    wheel = torch_wheel(find_links, torch_version, torch_variant)
    if wheel is not None and os.environ.get("TORCH_INDEX_URL") is None:
        index = out / "torch-index" / "torch"
        index.mkdir(parents=True, exist_ok=True)
        href = "file://" + quote(str(wheel))
        (index / "index.html").write_text(
            f'<!DOCTYPE html>\n<html><body><a href="{html.escape(href)}">{html.escape(wheel.name)}</a>'
            "</body></html>\n"
        )
        print(f"mount {out / 'torch-index'}")
        print(f"build-arg TORCH_INDEX_URL=file://{out / 'torch-index'}")
        print(
            f"note torch {torch_version}+{torch_variant} from {wheel} (a local index, not the PyTorch index)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
