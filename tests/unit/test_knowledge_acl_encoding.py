"""The access-label encoding of a KnowledgeBase collection, without Milvus: string literals read back
exactly by milvus-lite's parser, label-set keys, the filters built from them, the recorded label sets."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.workloads.knowledge.store import (
    ACL_KEY_LENGTH,
    LABEL_SETS_MAX_BYTES,
    array_acl_filter,
    decode_label_sets,
    encode_label_sets,
    key_acl_filter,
    label_set_key,
    literal,
)

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


@given(st.lists(texts, max_size=6))
def test_the_key_is_the_set_of_labels(labels: list[str]) -> None:
    key = label_set_key(labels)
    assert key == label_set_key(reversed(labels + labels))  # order and repeats do not matter
    if labels:
        assert re.fullmatch(f"[0-9a-f]{{{ACL_KEY_LENGTH}}}", key)
    else:
        assert key == ""  # a public chunk


def test_sets_that_look_alike_get_different_keys() -> None:
    sets = [["a", "b"], ["a,b"], ['a", "b'], ["a"], ["b"], ["ab"], ["a", "b", "c"], [""], ["A"]]
    keys = [label_set_key(s) for s in sets]
    assert len(set(keys)) == len(sets)


@given(st.lists(texts, max_size=4), st.lists(st.lists(texts, min_size=1, max_size=4), max_size=6))
def test_the_key_filter_names_exactly_the_sets_sharing_a_group_and_no_label(
    groups: list[str], sets: list[list[str]]
) -> None:
    label_sets = {label_set_key(s): frozenset(s) for s in sets}
    expression = key_acl_filter(groups, label_sets)
    listed = set(re.findall(r'"([0-9a-f]+)"', expression))
    assert listed == {k for k, labels in label_sets.items() if labels & set(groups)}
    if listed:
        quoted = ", ".join(f'"{key}"' for key in sorted(listed))
        assert expression == f"public == true or acl_key in [{quoted}]"
    else:
        assert expression == "public == true"
    parse(expression)  # well formed whatever the labels were


@pytest.mark.parametrize("group", HOSTILE)
def test_hostile_groups_stay_string_literals_in_the_array_filter(group: str) -> None:
    from milvus_lite.search.filter.ast import ArrayContainsOp, ListLit, Or

    node = parse(array_acl_filter([group, "staff"]))
    assert isinstance(node, Or) and len(node.operands) == 2
    contains = node.operands[1]
    assert isinstance(contains, ArrayContainsOp) and isinstance(contains.values, ListLit)
    assert sorted(v.value for v in contains.values.elements) == sorted([group, "staff"])  # type: ignore[attr-defined]


def test_no_groups_means_public_only() -> None:
    assert key_acl_filter([], {label_set_key(["a"]): frozenset({"a"})}) == "public == true"
    assert array_acl_filter(None) == "public == true"


def test_recorded_sets_are_keyed_by_their_own_digest() -> None:
    """A recorded entry cannot name another set's key: keys are recomputed on reading."""
    recorded = encode_label_sets({"forged-key": frozenset({"a"}), label_set_key(HOSTILE): frozenset(HOSTILE)})
    decoded = decode_label_sets(recorded)
    assert decoded == {label_set_key(["a"]): frozenset({"a"}), label_set_key(HOSTILE): frozenset(HOSTILE)}
    assert decode_label_sets(None) == {}  # no labelled chunk was ever written


@pytest.mark.parametrize(
    "value",
    ["not json", "[]", '{"v": 2, "sets": []}', '{"v": 1, "overflow": true}', '{"v": 1, "sets": [[1]]}'],
)
def test_unreadable_or_overflowing_records_mean_the_array_filter(value: str) -> None:
    assert decode_label_sets(value) is None


def test_too_many_sets_are_recorded_as_an_overflow() -> None:
    many = {str(i): frozenset({f"group-{i}-" + "x" * 200}) for i in range(LABEL_SETS_MAX_BYTES // 200)}
    assert json.loads(encode_label_sets(many)) == {"v": 1, "overflow": True}
    assert decode_label_sets(encode_label_sets(many)) is None
