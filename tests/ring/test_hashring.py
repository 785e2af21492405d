"""The hash ring: the issue's properties over 10,000 partition names, determinism, caching and rebuilds."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from borough.errors import ConfigError
from borough.raft.records import NodeId
from borough.ring.hashring import DEFAULT_REPLICAS, HashRing, stable_hash
from borough.ring.members import Member, MemberState, MemberTable

from .budget import examples

P = 10_000

node_ids = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=24)
member_sets = st.lists(node_ids, min_size=0, max_size=12, unique=True)
name_prefixes = st.text(min_size=0, max_size=8)


def names_from(prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(P)]


def sets_of(ring: HashRing, names: list[str]) -> list[tuple[NodeId, ...]]:
    return [ring.replica_set_uncached(n) for n in names]


@settings(max_examples=examples(15, soak_divisor=100))
@given(ids=member_sets, prefix=name_prefixes, replicas=st.integers(min_value=1, max_value=5))
def test_replica_sets_hold_min_r_members_distinct_members(ids: list[str], prefix: str, replicas: int) -> None:
    ring = HashRing.from_node_ids(ids, replicas=replicas)
    want = min(replicas, len(ids))
    for rs in sets_of(ring, names_from(prefix)):
        assert len(rs) == want and len(set(rs)) == want and set(rs) <= set(ids)


@settings(max_examples=examples(10, soak_divisor=100))
@given(ids=st.lists(node_ids, min_size=1, max_size=12, unique=True), new=node_ids, prefix=name_prefixes)
def test_adding_a_member_moves_at_most_twice_its_fair_share(ids: list[str], new: str, prefix: str) -> None:
    if new in ids:
        return
    names = names_from(prefix)
    before = sets_of(HashRing.from_node_ids(ids), names)
    after = sets_of(HashRing.from_node_ids([*ids, new]), names)
    changed = sum(len(set(b) - set(a)) for a, b in zip(before, after, strict=True))
    fair = P * DEFAULT_REPLICAS / (len(ids) + 1)
    assert changed <= 2 * fair, (changed, fair)
    # Every replica slot that moved went to the new member, and only to it.
    for a, b in zip(before, after, strict=True):
        assert set(b) - set(a) <= {new}


@settings(max_examples=examples(10, soak_divisor=100))
@given(ids=st.lists(node_ids, min_size=1, max_size=12, unique=True), data=st.data(), prefix=name_prefixes)
def test_removing_a_member_changes_only_the_sets_that_held_it(ids: list[str], data: st.DataObject, prefix: str) -> None:
    gone = data.draw(st.sampled_from(ids), label="removed")
    names = names_from(prefix)
    before = sets_of(HashRing.from_node_ids(ids), names)
    after = sets_of(HashRing.from_node_ids([x for x in ids if x != gone]), names)
    for a, b in zip(before, after, strict=True):
        if gone not in a:
            assert a == b
        else:
            assert gone not in b and set(a) - {gone} <= set(b)


@settings(max_examples=examples(10, soak_divisor=100))
@given(ids=st.lists(node_ids, min_size=5, max_size=5, unique=True), prefix=name_prefixes)
def test_five_members_are_balanced_within_1_3_of_the_mean(ids: list[str], prefix: str) -> None:
    counts = Counter(n for rs in sets_of(HashRing.from_node_ids(ids), names_from(prefix)) for n in rs)
    mean = P * DEFAULT_REPLICAS / 5
    assert max(counts.values()) <= 1.3 * mean, counts


def test_hash_and_replica_sets_are_fixed_forever() -> None:
    """Golden values: changing the hash, the point layout or the walk would move every partition of every
    existing cluster, so it must never happen by accident."""
    assert stable_hash("users") == 0x3AF473B860F34782
    assert stable_hash("") == 0x4FE2FD64EDBACE1A
    ring = HashRing.from_node_ids(["node-a", "node-b", "node-c", "node-d", "node-e"])
    assert ring.vnodes == 128
    assert ring.replica_set("users") == ("node-b", "node-a", "node-d")
    assert ring.replica_set("orders:42") == ("node-c", "node-a", "node-e")
    assert ring.replica_set("日本") == ("node-e", "node-a", "node-b")


def test_replica_sets_are_identical_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from borough.ring.hashring import HashRing;"
        "r = HashRing.from_node_ids([f'n{i}' for i in range(7)]);"
        "print([r.replica_set(f'p{i}') for i in range(200)])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed}
        ).stdout
        for seed in ["1", "2"]
    }
    ring = HashRing.from_node_ids([f"n{i}" for i in range(7)])
    assert outs == {str([ring.replica_set(f"p{i}") for i in range(200)]) + "\n"}


def test_only_active_members_are_ring_targets() -> None:
    table = MemberTable(
        version=4,
        members=[
            Member(node_id=NodeId("a"), address="a:1", state=MemberState.ACTIVE),
            Member(node_id=NodeId("b"), address="b:1", state=MemberState.LEAVING),
            Member(node_id=NodeId("c"), address="c:1", state=MemberState.DEAD),
            Member(node_id=NodeId("d"), address="d:1", state=MemberState.JOINING),
            Member(node_id=NodeId("e"), address="e:1", state=MemberState.ACTIVE),
        ],
    )
    ring = HashRing(table)
    assert ring.members == ("a", "e") and ring.version == 4 and len(ring) == 2
    assert "a" in ring and "b" not in ring
    assert all(set(ring.replica_set(f"p{i}")) == {"a", "e"} for i in range(100))
    assert ring.owner("x") in {"a", "e"}


def test_fewer_members_than_r_gives_all_of_them_and_empty_ring_gives_nothing() -> None:
    assert set(HashRing.from_node_ids(["a", "b"]).replica_set("p")) == {"a", "b"}
    empty = HashRing([])
    assert empty.replica_set("p") == () and empty.owner("p") is None


def test_cache_is_bounded_and_agrees_with_uncached_lookups() -> None:
    ring = HashRing.from_node_ids([f"n{i}" for i in range(9)], cache_size=10)
    for i in range(100):
        assert ring.replica_set(f"p{i}") == ring.replica_set_uncached(f"p{i}")
        assert ring.replica_set(f"p{i}") is ring.replica_set(f"p{i}")
    assert len(ring._cache) == 10
    nocache = HashRing.from_node_ids(["a", "b", "c"], cache_size=0)
    assert nocache.replica_set("p") == HashRing.from_node_ids(["a", "b", "c"]).replica_set("p")
    assert len(nocache._cache) == 0


def test_updated_ring_equals_a_fresh_build() -> None:
    table = MemberTable(version=1, members=[Member(node_id=NodeId(f"n{i}"), address=f"h{i}:1") for i in range(10)])
    ring = HashRing(table)
    new_table = table.with_member(Member(node_id=NodeId("n99"), address="h99:1")).without(NodeId("n3"))
    updated, fresh = ring.updated(new_table), HashRing(new_table)
    assert updated.version == new_table.version == 3
    assert updated.members == fresh.members
    assert all(updated.replica_set(f"p{i}") == fresh.replica_set(f"p{i}") for i in range(2000))
    assert "HashRing(members=10" in repr(updated)


@pytest.mark.parametrize(
    "kwargs", [{"replicas": 0}, {"replicas": True}, {"vnodes": 0}, {"vnodes": 1 << 20}, {"cache_size": -1}]
)
def test_bad_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="HashRing"):
        HashRing.from_node_ids(["a"], **kwargs)
