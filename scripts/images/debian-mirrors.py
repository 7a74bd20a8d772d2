#!/usr/bin/env python3
"""Print the Debian mirrors this machine's apt uses, as `SUITE URI` lines (one per suite).

    scripts/images/debian-mirrors.py bookworm
    bookworm http://deb.debian.org/debian
    bookworm-updates http://deb.debian.org/debian
    bookworm-security http://deb.debian.org/debian-security

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/*.list (one-line format) and *.sources (deb822),
keeps `deb` entries of the given release's suites (RELEASE, RELEASE-updates, RELEASE-security) and
their main component; the stand-in base image (build-base-image.sh) bootstraps from the first and
configures all of them, so that it reaches Debian exactly as the host does.
"""

from __future__ import annotations

import sys
from pathlib import Path

APT = Path("/etc/apt")


def entries() -> list[tuple[str, str, list[str]]]:
    """(uri, suite, components) of every enabled `deb` source."""
    found: list[tuple[str, str, list[str]]] = []
    lists = [APT / "sources.list", *sorted((APT / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                if words[1].startswith("["):  # options: deb [signed-by=...] URI suite comps
                    while words and not words[1].endswith("]"):
                        words.pop(1)
                    words.pop(1)
                found.append((words[1], words[2], words[3:]))
    for path in sorted((APT / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    found.append((uri, suite, fields.get("components", "").split()))
    return found


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} RELEASE", file=sys.stderr)
        return 64
    release = sys.argv[1]
    wanted = [release, f"{release}-updates", f"{release}-security"]
    chosen: dict[str, str] = {}
    for uri, suite, components in entries():
        if suite in wanted and "main" in components and suite not in chosen:
            chosen[suite] = uri.rstrip("/")
    if release not in chosen:
        print(f"no apt source for Debian {release} (main) in {APT}", file=sys.stderr)
        return 1
    for suite in wanted:
        if suite in chosen:
            print(suite, chosen[suite])
    return 0


if __name__ == "__main__":
    sys.exit(main())
