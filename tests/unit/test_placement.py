"""Placement of LoRA adapters on a ServingPool's pods (tandem.core.placement).

The properties are the ones the operator relies on: every reconcile (in any operator process) computes
the same placement, no pod is asked to hold more than its maxCpuLoras, and a change to the pool moves
only the adapters it has to, because each move is a reload on a serving pod.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.placement import Moves, Placement, PodSlot, place, rank

OPERATOR = Path(__file__).resolve().parents[2] / "operator"

adapter_keys = st.lists(
    st.from_regex(r"team-[a-c]/[a-z]{1,6}@v[0-9]", fullmatch=True), min_size=0, max_size=25, unique=True
)
pod_names = st.lists(st.from_regex(r"pool-[a-z0-9]{3}", fullmatch=True), min_size=1, max_size=7, unique=True)
copies_st = st.one_of(st.none(), st.integers(min_value=1, max_value=9))


def ample(names: list[str], adapters: list[str]) -> list[PodSlot]:
    """Pods that can each hold every adapter: placement is then the hash's choice alone."""
    return [PodSlot(name, max(len(adapters), 1)) for name in names]


def keys(n: int) -> list[str]:
    return [f"team-{i % 3}/adapter-{i}@v{i % 5}" for i in range(n)]


def check_valid(result: Placement, adapters: list[str], pods: list[PodSlot], copies: int | None) -> None:
    """The invariants every placement has, whatever the input."""
    capacity = {p.name: p.capacity for p in pods}
    wanted = len(pods) if copies is None else copies
    assert set(result.by_pod) == set(capacity)
    assert set(result.by_adapter) == set(adapters)
    for pod, held in result.by_pod.items():
        assert len(held) <= capacity[pod], (pod, held)
        assert list(held) == sorted(set(held))
    for adapter, on in result.by_adapter.items():
        assert list(on) == sorted(set(on)), "two copies of one adapter on one pod"
        assert len(on) <= wanted
        assert all(adapter in result.by_pod[pod] for pod in on)
        assert (adapter in result.unplaced) == (len(on) < wanted)
    assert sum(map(len, result.by_pod.values())) == sum(map(len, result.by_adapter.values()))


@settings(max_examples=150, deadline=None)
@given(
    adapters=adapter_keys,
    names=pod_names,
    capacities=st.lists(st.integers(min_value=0, max_value=6), min_size=7, max_size=7),
    copies=copies_st,
)
def test_each_adapter_gets_k_distinct_pods_or_as_many_as_had_room(
    adapters: list[str], names: list[str], capacities: list[int], copies: int | None
) -> None:
    pods = [PodSlot(name, cap) for name, cap in zip(names, capacities, strict=False)]
    result = place(adapters, pods, copies)
    check_valid(result, adapters, pods, copies)
    k = len(pods) if copies is None else min(copies, len(pods))
    for adapter in result.unplaced:
        # Fewer than k copies only when every pod it is not on was full: no room was left unused.
        if len(result.by_adapter[adapter]) < k:
            missing = set(result.by_pod) - set(result.by_adapter[adapter])
            assert all(len(result.by_pod[pod]) == pods[names.index(pod)].capacity for pod in missing)


@settings(max_examples=100, deadline=None)
@given(adapters=adapter_keys, names=pod_names, copies=copies_st, data=st.data())
def test_same_input_same_output_in_any_order(
    adapters: list[str], names: list[str], copies: int | None, data: st.DataObject
) -> None:
    capacities = data.draw(st.lists(st.integers(0, 5), min_size=len(names), max_size=len(names)))
    pods = [PodSlot(n, c) for n, c in zip(names, capacities, strict=True)]
    first = place(adapters, pods, copies)
    assert place(list(adapters), list(pods), copies) == first
    assert place(data.draw(st.permutations(adapters)), data.draw(st.permutations(pods)), copies) == first


@settings(max_examples=100, deadline=None)
@given(adapters=adapter_keys, names=pod_names, copies=copies_st, data=st.data())
def test_placing_again_on_the_result_moves_nothing(
    adapters: list[str], names: list[str], copies: int | None, data: st.DataObject
) -> None:
    """A reconcile that changes nothing must not reload anything, also when capacity is tight."""
    capacities = data.draw(st.lists(st.integers(0, 5), min_size=len(names), max_size=len(names)))
    pods = [PodSlot(n, c) for n, c in zip(names, capacities, strict=True)]
    first = place(adapters, pods, copies)
    again = place(adapters, pods, copies, previous=first)
    assert again == first
    assert again.moves(first) == Moves({}, {})


@settings(max_examples=150, deadline=None)
@given(
    adapters=adapter_keys,
    names=pod_names,
    new=st.from_regex(r"pool-new[0-9]", fullmatch=True),
    copies=st.integers(1, 4),
    with_previous=st.booleans(),
)
def test_adding_a_pod_moves_adapters_only_onto_it(
    adapters: list[str], names: list[str], new: str, copies: int, with_previous: bool
) -> None:
    """Each adapter either keeps its pods or gains the new pod and loses exactly one old one (none while
    the pool had fewer than k pods)."""
    before = place(adapters, ample(names, adapters), copies)
    grown = [*names, new]
    after = place(adapters, ample(grown, adapters), copies, previous=before if with_previous else None)
    for adapter in adapters:
        old, now = set(before.by_adapter[adapter]), set(after.by_adapter[adapter])
        # With room everywhere the placement is the hash's choice whatever came before: the new pod
        # gets exactly the adapters that now rank it in their top k (it does not sit idle).
        assert now == set(rank(adapter, grown)[:copies])
        if old == now:
            continue
        assert new in now, f"{adapter} moved between old pods: {old} -> {now}"
        assert now - old == {new}
        assert len(old - now) == (1 if len(names) >= copies else 0)
    loads, unloads = after.moves(before)
    assert set(loads) <= {new}
    assert sum(map(len, unloads.values())) == (len(loads.get(new, ())) if len(names) >= copies else 0)


def test_scale_out_moves_about_one_new_pods_share() -> None:
    """200 adapters with 2 copies on 5 pods, then 6: the new pod's fair share is 200 * 2 / 6 ~ 67 copies,
    and only those move. A modulo hash would move most of the 400."""
    adapters = keys(200)
    names = [f"pool-{i}" for i in range(5)]
    before = place(adapters, ample(names, adapters), 2)
    after = place(adapters, ample([*names, "pool-5"], adapters), 2, previous=before)
    loads, unloads = after.moves(before)
    moved = sum(map(len, loads.values()))
    assert set(loads) == {"pool-5"}
    assert 40 <= moved <= 95, moved
    assert sum(map(len, unloads.values())) == moved


@settings(max_examples=150, deadline=None)
@given(
    adapters=adapter_keys,
    names=pod_names.filter(lambda n: len(n) >= 2),
    copies=st.integers(1, 4),
    with_previous=st.booleans(),
    data=st.data(),
)
def test_removing_a_pod_moves_only_its_adapters(
    adapters: list[str], names: list[str], copies: int, with_previous: bool, data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(names))
    before = place(adapters, ample(names, adapters), copies)
    rest = [n for n in names if n != gone]
    after = place(adapters, ample(rest, adapters), copies, previous=before if with_previous else None)
    for adapter in adapters:
        old, now = set(before.by_adapter[adapter]), set(after.by_adapter[adapter])
        assert now == set(rank(adapter, rest)[:copies])
        if gone not in old:
            assert now == old, f"{adapter} was not on {gone} but moved: {old} -> {now}"
        else:
            assert old - now == {gone}
            assert len(now - old) == (1 if len(rest) >= copies else 0)


@settings(max_examples=150, deadline=None)
@given(adapters=adapter_keys.filter(bool), names=pod_names, data=st.data())
def test_a_new_adapter_takes_no_loaded_seat_except_on_the_pods_it_prefers(
    adapters: list[str], names: list[str], data: st.DataObject
) -> None:
    """Under tight capacity a newcomer, even one whose key sorts first, does not push loaded adapters out:
    the adapters placed before keep every copy, except at most k stand-in copies on the newcomer's own
    preferred (top-k) pods. Without the previous placement it would take seats in sorted order."""
    capacities = data.draw(st.lists(st.integers(0, 3), min_size=len(names), max_size=len(names)))
    copies = data.draw(st.integers(1, 3))
    pods = [PodSlot(n, c) for n, c in zip(names, capacities, strict=True)]
    newcomer = "aaa/first@v0"  # sorts before every generated key
    before = place(adapters, pods, copies)
    after = place([newcomer, *adapters], pods, copies, previous=before)
    check_valid(after, [newcomer, *adapters], pods, copies)
    newcomer_prefers = set(rank(newcomer, names)[:copies])
    lost = 0
    for adapter in adapters:
        gone = set(before.by_adapter[adapter]) - set(after.by_adapter[adapter])
        assert gone <= newcomer_prefers, (adapter, gone)
        assert not gone & set(rank(adapter, names)[:copies]), "a copy on a pod the adapter prefers was lost"
        lost += len(gone)
    assert lost <= min(copies, len(names))


def test_copies_none_places_every_adapter_on_every_pod() -> None:
    adapters = keys(5)
    names = ["pool-x", "pool-y", "pool-z"]
    result = place(adapters, ample(names, adapters), None)
    assert result.by_adapter == {a: tuple(names) for a in adapters}
    assert result.by_pod == {n: tuple(sorted(adapters)) for n in names}
    assert result.unplaced == {}


def test_more_copies_than_pods_means_all_pods_and_under_placed() -> None:
    result = place(["team-a/support@v3"], [PodSlot("pool-1", 4), PodSlot("pool-0", 4)], 3)
    assert result.by_adapter == {"team-a/support@v3": ("pool-0", "pool-1")}
    assert result.unplaced == {"team-a/support@v3": "needs 3 copies, the pool has 2 pods: raise replicas"}


def test_capacity_exhaustion_reports_the_adapters_left_short_and_why() -> None:
    adapters = keys(5)
    pods = [PodSlot("pool-0", 3), PodSlot("pool-1", 2)]
    result = place(adapters, pods, 2)
    check_valid(result, adapters, pods, 2)
    assert sum(map(len, result.by_pod.values())) == 5  # every seat used
    short = {a: len(result.by_adapter[a]) for a in result.unplaced}
    assert sum(2 - n for n in short.values()) == 5  # 10 copies wanted, 5 seats
    assert sorted(set(result.unplaced.values())) == sorted(
        {
            f"needs 2 copies, {n} pod{'' if n == 1 else 's'} had room: raise maxCpuLoras or replicas"
            for n in short.values()
        }
    )
    assert "needs 2 copies, 0 pods had room: raise maxCpuLoras or replicas" in result.unplaced.values()
    every_pod = "needs a copy on every pod (2), 0 pods had room: raise maxCpuLoras"
    assert every_pod in place(adapters, pods, None).unplaced.values()
    assert place(adapters, [], 1).unplaced == dict.fromkeys(adapters, "the pool has no pods: raise replicas")


def test_a_hundred_adapters_spread_evenly_over_four_pods() -> None:
    adapters = keys(100)
    names = [f"vllm-pool-{i}" for i in range(4)]
    result = place(adapters, ample(names, adapters), 1)
    sizes = sorted(len(held) for held in result.by_pod.values())
    assert sum(sizes) == 100
    assert sizes[-1] <= 40, sizes
    assert sizes[0] >= 12, sizes


def test_moves_lists_loads_and_unloads_per_pod() -> None:
    before = Placement({"p0": ("a", "b"), "p1": ("c",), "gone": ("d",)}, {}, {})
    after = Placement({"p0": ("a",), "p1": ("b", "c"), "new": ("d",)}, {}, {})
    assert after.moves(before) == Moves(loads={"p1": ("b",), "new": ("d",)}, unloads={"p0": ("b",)})
    loads, unloads = after.moves(after)
    assert loads == unloads == {}


@pytest.mark.parametrize(
    ("adapters", "pods", "copies", "message"),
    [
        (["a", "a"], [PodSlot("p", 1)], 1, "adapter keys must be unique"),
        (["a"], [PodSlot("p", 1), PodSlot("p", 2)], 1, "pod names must be unique"),
        (["a"], [PodSlot("p", -1)], 1, "must not be negative"),
        (["a"], [PodSlot("p", 1)], 0, "copies must be at least 1"),
    ],
)
def test_invalid_input_is_refused(
    adapters: list[str], pods: list[PodSlot], copies: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        place(adapters, pods, copies)


_CHILD = """
import json, sys
from tandem.core.placement import PodSlot, place
adapters = [f"team-{i % 3}/adapter-{i}@v{i % 5}" for i in range(60)]
pods = [PodSlot(f"pool-{i}", 60) for i in range(5)]
print(json.dumps(place(adapters, pods, 2).by_adapter, sort_keys=True))
"""


def test_two_processes_with_different_hash_seeds_agree() -> None:
    """The failure this guards against: with Python's `hash()`, which is salted per process, two operator
    replicas (or one after a restart) would compute different placements and reload adapters across the
    whole fleet. The child processes get different PYTHONHASHSEEDs, and so a different `hash("x")`."""
    outputs = []
    salts = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(OPERATOR)}
        run = subprocess.run(
            [sys.executable, "-c", _CHILD + "print(hash('team-a/support@v3'))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        placement, salted = run.stdout.splitlines()
        outputs.append(json.loads(placement))
        salts.append(salted)
    assert salts[0] != salts[1], "the seeds did not change hash(): the test would prove nothing"
    assert outputs[0] == outputs[1]
    in_process = place(keys(60), [PodSlot(f"pool-{i}", 60) for i in range(5)], 2).by_adapter
    assert outputs[0] == {a: list(p) for a, p in in_process.items()}
