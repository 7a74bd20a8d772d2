"""Names shared by both platforms and the workloads, so all derive them the same way."""

from __future__ import annotations

import re


def collection_name(namespace: str, name: str) -> str:
    """The Milvus collection of a KnowledgeBase: letters, digits and underscores, starting with a letter.

    Namespace and name are both part of it, so two tenants' KnowledgeBases never share a collection.
    Kubernetes names cannot contain '_', so `a-b/c` and `a/b-c` stay distinct through the separator.
    """
    safe = re.sub(r"[^A-Za-z0-9]", "_", f"{namespace}__{name}")
    return f"tandem_{safe}"[:255]
