"""Filter expressions of a KnowledgeBase collection, without Milvus: string literals read back exactly
by milvus-lite's parser, whatever the text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.workloads.knowledge.store import acl_filter, literal

HOSTILE = [
    'x", "b',
    '"] or public == false or acl_key in ["',
    "a,b",
    "ünïcødé 機密",
    "back\\slash",
    "new\nline\r\ttab",
    "it's",
    "",
]
# Any text a label, group, document id or filter value can hold (UTF-8: no lone surrogates).
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


def parse(expression: str) -> object:
    from milvus_lite.search.filter import parse_expr

    return parse_expr(expression)


@given(texts)
def test_a_literal_reads_back_as_its_value_in_milvus_lite(value: str) -> None:
    from milvus_lite.search.filter.ast import CmpOp, StringLit

    node = parse(f"doc_id == {literal(value)}")
    assert isinstance(node, CmpOp) and isinstance(node.right, StringLit)
    assert node.right.value == value


def test_non_ascii_is_written_as_itself_not_as_a_json_escape() -> None:
    # milvus-lite refuses \uXXXX: json.dumps made every filter or delete naming "café" fail there.
    assert literal("café") == '"café"'
    assert literal('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.parametrize("group", HOSTILE)
def test_hostile_groups_stay_string_literals_in_the_array_filter(group: str) -> None:
    from milvus_lite.search.filter.ast import ArrayContainsOp, ListLit, Or

    node = parse(acl_filter([group, "staff"]))
    assert isinstance(node, Or) and len(node.operands) == 2
    contains = node.operands[1]
    assert isinstance(contains, ArrayContainsOp) and isinstance(contains.values, ListLit)
    assert sorted(v.value for v in contains.values.elements) == sorted([group, "staff"])  # type: ignore[attr-defined]
