"""Names shared by both platforms and the workloads, so all derive them the same way."""

from __future__ import annotations

import re

from .digests import digest

MAX_COLLECTION = 255  # Milvus's limit on a collection name
# Marks a name that carries a digest of the exact namespace/name. A readable name never contains three
# underscores in a row (see collection_name), so the two forms cannot meet.
DIGEST_MARK = "___"


def collection_name(namespace: str, name: str) -> str:
    """The Milvus collection of a KnowledgeBase: letters, digits and underscores, starting with a letter,
    and one collection per namespace/name (deleting one KnowledgeBase never drops another's data).

    The readable form `tandem_<namespace>__<name>` (with `-` as `_`) is one to one when neither part
    holds a `.` or `--`: each part then has single underscores only, so the `__` between them is found
    again. A name with `.` (`handbook.v2` would meet `handbook-v2`), `--` (`a--b/c` would meet
    `a/b--c`), or too long for Milvus gets the readable part (cut to fit) plus a digest of the exact
    namespace/name after `___`, which no readable form contains. Existing readable names keep their
    collection.
    """
    readable = f"tandem_{namespace.replace('-', '_')}__{re.sub(r'[^A-Za-z0-9]', '_', name)}"
    ambiguous = (
        "." in name or "--" in name or "--" in namespace or re.search(r"[^a-z0-9.-]", namespace + name)
    )
    if not ambiguous and len(readable) <= MAX_COLLECTION:
        return readable
    suffix = DIGEST_MARK + digest({"namespace": namespace, "name": name}, 16)
    return readable[: MAX_COLLECTION - len(suffix)].rstrip("_") + suffix
