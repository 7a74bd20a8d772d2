"""Which pods of a shared vLLM fleet (a ServingPool) hold which LoRA adapters.

A pod can hold only `maxCpuLoras` adapters, and loading one costs a download and a warm-up, so the
placement has to be (1) deterministic, because the operator recomputes it on every reconcile and in
every replica, (2) stable, because each adapter that changes pods is a reload, and (3) within each
pod's capacity.

Rendezvous (highest random weight) hashing gives (1) and (2) without any stored state: every adapter
ranks every pod by a hash of the pair and wants its top `k`. Adding a pod changes an adapter's top k
only if the new pod enters it (then exactly one old pod leaves); removing a pod changes only the
adapters that had it. The hash is SHA-256, not `hash()`: Python salts `hash()` of a str per process
(PYTHONHASHSEED), so two operator processes would disagree on the placement and the fleet would churn.

Capacity is where the hash alone is not enough: an adapter takes its top-ranked pods that still have
room, and the previous placement decides who keeps a contested slot, so that a new adapter does not
evict one already loaded. The function is pure (standard library only) so both platforms, and the
tests, can run it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class PodSlot:
    """One pod of the pool: its name and how many adapters it may hold (its vLLM `--max-cpu-loras`)."""

    name: str
    capacity: int


class Moves(NamedTuple):
    """What the pods must do to get from one placement to another, per pod (pods with nothing to do
    are left out); adapters in each tuple are sorted."""

    loads: dict[str, tuple[str, ...]]
    unloads: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Placement:
    """The result of `place`.

    `by_pod` has every given pod (an empty tuple for a pod holding nothing), `by_adapter` every given
    adapter (an empty tuple when no pod had room); all tuples are sorted by name, so two placements of
    the same assignment compare equal. `unplaced` names each adapter with fewer copies than asked for,
    with a reason an operator can act on; an adapter in it may still be served by the copies it got.
    """

    by_pod: dict[str, tuple[str, ...]]
    by_adapter: dict[str, tuple[str, ...]]
    unplaced: dict[str, str]

    def moves(self, previous: Placement) -> Moves:
        """The loads and unloads that turn `previous` into this placement. A pod that left the pool is
        not told to unload (it is gone); a pod that joined loads everything it holds."""
        loads: dict[str, tuple[str, ...]] = {}
        unloads: dict[str, tuple[str, ...]] = {}
        for pod, adapters in self.by_pod.items():
            before = set(previous.by_pod.get(pod, ()))
            if added := tuple(sorted(set(adapters) - before)):
                loads[pod] = added
            if pod in previous.by_pod and (removed := tuple(sorted(before - set(adapters)))):
                unloads[pod] = removed
        return Moves(loads, unloads)


def weight(adapter: str, pod: str) -> int:
    """The rendezvous weight of a pod for an adapter: the same in every process and on every machine.

    The NUL separator keeps ("a/b", "c") and ("a/", "bc") apart; neither Kubernetes names nor adapter
    keys contain NUL.
    """
    return int.from_bytes(hashlib.sha256(adapter.encode() + b"\0" + pod.encode()).digest(), "big")


def rank(adapter: str, pods: Iterable[str]) -> tuple[str, ...]:
    """The pods in the adapter's order of preference (highest weight first; the name breaks a tie, which
    SHA-256 makes practically impossible). A router can send the adapter's requests to the first pod of
    this order that holds it."""
    return tuple(sorted(pods, key=lambda pod: (-weight(adapter, pod), pod)))


def place(
    adapters: Iterable[str],
    pods: Iterable[PodSlot],
    copies: int | None,
    previous: Placement | None = None,
) -> Placement:
    """Assign each adapter to `copies` distinct pods (None: every pod) within the pods' capacities.

    Each adapter's *preferred* pods are the first `k` of its `rank`. Seats are handed out in four rounds,
    each going through the adapters in sorted order (so the input order of adapters and pods does not
    matter), and an adapter stops taking seats once it has `k`:

    1. preferred pods it held in `previous`: what was loaded and still belongs there stays, even when
       a pod's capacity shrank or new adapters arrived (they wait for room rather than evict);
    2. its other preferred pods: with room to spare this is the whole placement, so it equals the hash's
       choice whatever `previous` was, and a pod added to the pool fills up with the adapters that now
       prefer it (the copy on the pod it displaced is dropped);
    3. other pods it held in `previous`: a stand-in copy, placed earlier because its preferred pods were
       full, stays rather than hopping again, but yields to an adapter that prefers that pod;
    4. any pod with room, in its rank order.

    Placing again with the result as `previous` gives the same result, so a reconcile that changes
    nothing moves nothing.
    """
    listed = list(adapters)
    keys = sorted(set(listed))
    if len(keys) != len(listed):
        # Two adapters with one key would share every seat: the caller's keys are not specific enough.
        raise ValueError(f"adapter keys must be unique: {sorted({k for k in listed if listed.count(k) > 1})}")
    slots = sorted(pods, key=lambda p: p.name)
    names = [slot.name for slot in slots]
    if len(set(names)) != len(names):
        raise ValueError(f"pod names must be unique: {names}")
    if bad := [slot.name for slot in slots if slot.capacity < 0]:
        raise ValueError(f"pod capacity must not be negative: {bad}")
    if copies is not None and copies < 1:
        raise ValueError(f"copies must be at least 1 (or None for every pod), not {copies}")

    wanted = len(slots) if copies is None else copies
    k = min(wanted, len(slots))
    room = {slot.name: slot.capacity for slot in slots}
    held: dict[str, list[str]] = {key: [] for key in keys}
    ranks = {key: rank(key, names) for key in keys}
    before: Mapping[str, tuple[str, ...]] = previous.by_adapter if previous else {}

    def seat_round(candidates: Callable[[str], Iterable[str]]) -> None:
        for key in keys:
            for pod in candidates(key):
                if len(held[key]) >= k:
                    break
                if room[pod] > 0 and pod not in held[key]:
                    held[key].append(pod)
                    room[pod] -= 1

    def preferred(key: str) -> tuple[str, ...]:
        return ranks[key][:k]

    seat_round(lambda key: [pod for pod in preferred(key) if pod in before.get(key, ())])
    seat_round(preferred)
    seat_round(lambda key: [pod for pod in ranks[key][k:] if pod in before.get(key, ())])
    seat_round(lambda key: ranks[key])

    by_adapter = {key: tuple(sorted(held[key])) for key in keys}
    by_pod: dict[str, list[str]] = {name: [] for name in names}
    for key in keys:  # sorted, so each pod's list comes out sorted
        for pod in held[key]:
            by_pod[pod].append(key)
    unplaced = {
        key: _shortfall(wanted, len(slots), len(held[key]), every_pod=copies is None)
        for key in keys
        if len(held[key]) < wanted
    }
    return Placement({pod: tuple(a) for pod, a in by_pod.items()}, by_adapter, unplaced)


def _shortfall(wanted: int, pods: int, got: int, *, every_pod: bool) -> str:
    """Why an adapter has fewer copies than asked for, and what to raise."""
    if not pods:
        return "the pool has no pods: raise replicas"
    had = f"{got} pod{'' if got == 1 else 's'} had room"
    if every_pod:
        return f"needs a copy on every pod ({pods}), {had}: raise maxCpuLoras"
    if wanted > pods and got == pods:
        return f"needs {wanted} copies, the pool has {pods} pod{'' if pods == 1 else 's'}: raise replicas"
    return f"needs {wanted} copies, {had}: raise maxCpuLoras or replicas"
