"""One Milvus collection per KnowledgeBase: no two namespace/name pairs share one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tandem.core.naming import MAX_COLLECTION, collection_name

LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
SUBDOMAIN = st.lists(LABEL, min_size=1, max_size=3).map(".".join)


def test_names_that_differ_only_in_dot_and_dash_get_their_own_collections() -> None:
    """Bug: `handbook.v2` and `handbook-v2` shared `..._handbook_v2`, and deleting one dropped the other's
    data. So did `a--b/c` and `a/b--c` (a namespace may hold `--`)."""
    assert collection_name("team", "handbook.v2") != collection_name("team", "handbook-v2")
    assert collection_name("a--b", "c") != collection_name("a", "b--c")


def test_readable_names_keep_their_collection() -> None:
    """Existing KnowledgeBases (names without `.` or `--`) keep the collection their data is in."""
    assert collection_name("team", "handbook") == "tandem_team__handbook"
    assert collection_name("a-b", "c") == "tandem_a_b__c"
    assert collection_name("a", "b-c") == "tandem_a__b_c"


def test_long_names_fit_milvus_and_stay_apart() -> None:
    long = "x" * 240
    a, b = collection_name("team", long + "a"), collection_name("team", long + "b")
    assert a != b and len(a) <= MAX_COLLECTION and len(b) <= MAX_COLLECTION


@given(LABEL, SUBDOMAIN, LABEL, SUBDOMAIN)
def test_collection_names_are_one_to_one(ns1: str, name1: str, ns2: str, name2: str) -> None:
    a, b = collection_name(ns1, name1), collection_name(ns2, name2)
    assert (a == b) == ((ns1, name1) == (ns2, name2))
    assert a[0].isalpha() and len(a) <= MAX_COLLECTION and a.replace("_", "").isalnum()
