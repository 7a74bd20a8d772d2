"""Short stable digests of JSON-able data: child names, versions and local fingerprints."""

from __future__ import annotations

import hashlib
import json
from typing import Any

NAME_DIGEST = 10  # in child names (a name has at most 63 characters)
FINGERPRINT_DIGEST = 16  # local mode's record of what a resource was last reconciled from


def digest(value: Any, length: int = NAME_DIGEST) -> str:
    """The first `length` hex digits of the SHA-256 of `value`'s canonical JSON."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
