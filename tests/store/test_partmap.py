"""``PartMap`` (``borough.store.state``): the store's partition states, immutable, updated by sharing every
bucket a change does not touch, so publishing a write costs in proportion to the partitions it touched."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from borough.raft.records import ConfState, SnapshotMeta
from borough.store import MemoryStore
from borough.store.state import PartitionState, PartMap

names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)


@given(
    st.dictionaries(names, st.integers(1, 100)),
    st.lists(st.tuples(names, st.one_of(st.none(), st.integers(1, 100))), max_size=30),
)
def test_updated_is_a_dict_update_that_leaves_the_old_map_alone(start: dict[str, int], changes: list[Any]) -> None:
    states = {n: PartitionState(n, pid, pid) for n, pid in start.items()}
    old = PartMap(states)
    change = {n: (None if pid is None else PartitionState(n, pid, pid)) for n, pid in changes}
    new = old.updated(change)
    expected = dict(states)
    for n, s in change.items():
        if s is None:
            expected.pop(n, None)
        else:
            expected[n] = s
    assert {n: new.get(n) for n in new} == expected and len(new) == len(expected)
    assert all((n in new) == (n in expected) for n in [*start, *change])
    assert {n: old.get(n) for n in old} == states and len(old) == len(states)  # untouched


def test_an_update_copies_only_the_buckets_it_touches() -> None:
    old = PartMap({f"p{i}": PartitionState(f"p{i}", i + 1, i + 1) for i in range(10_000)})
    new = old.updated({"p5": PartitionState("p5", 99, 99), "q": PartitionState("q", 100, 100)})
    shared = sum(a is b for a, b in zip(old._buckets, new._buckets, strict=True))
    assert shared >= PartMap.BUCKETS - 2


def test_the_store_publishes_writes_through_the_map_and_answers_has_replica() -> None:
    store = MemoryStore()
    for i in range(300):
        b = store.write_batch()
        b.set_snapshot_meta(f"p{i}", SnapshotMeta(index=0, term=0, conf_state=ConfState(voters=("n1",))))
        store.write(b)
    assert store.replicas() == sorted(f"p{i}" for i in range(300))
    assert store.has_replica("p7") and not store.has_replica("p300")
    b = store.write_batch()
    b.destroy("p7", None)
    store.write(b)
    assert not store.has_replica("p7") and len(store.replicas()) == 299


def test_a_state_copy_carries_every_slot_and_is_independent() -> None:
    # PartitionState.copy spells its slots out: a slot added to __slots__ but not to copy() fails here.
    st_ = PartitionState("p", 3, 4)
    for i, slot in enumerate(PartitionState.__slots__):
        setattr(st_, slot, ("value", i))
    new = st_.copy()
    assert new is not st_ and type(new) is PartitionState
    slots = PartitionState.__slots__
    assert {s: getattr(new, s) for s in slots} == {s: getattr(st_, s) for s in slots}
    new.applied = 99
    assert st_.applied == ("value", PartitionState.__slots__.index("applied"))
