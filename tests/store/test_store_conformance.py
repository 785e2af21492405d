"""The store's contract, run against both implementations (``MemoryStore`` and ``LevelDBStore``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from borough.errors import ConfigError, NotFound, StorageError
from borough.raft.records import ConfState, Entry, EntryKind, HardState, NodeId, SnapshotMeta, Tombstone
from borough.raft.storage import LogCompacted, LogStorage, LogUnavailable
from borough.store import InvalidLogOperation, LevelDBStore, MemoryStore, NodeMeta, Store, decode_value, encode_value

from .conftest import Opener


def ents(lo: int, hi: int, term: int = 1, size: int = 0) -> list[Entry]:
    return [Entry(term=term, index=i, data=bytes([i % 256]) * size) for i in range(lo, hi + 1)]


def key_bytes(k: str | bytes) -> bytes:
    return k.encode() if isinstance(k, str) else k


def write(store: Store, **ops: Any) -> None:
    """Shorthand: ``write(store, append=("p", entries), ...)`` for single-op batches."""
    b = store.write_batch()
    for name, args in ops.items():
        getattr(b, name)(*args)
    store.write(b)


def put(store: Store, p: str, items: dict[Any, Any], applied: int | None = None) -> None:
    b = store.write_batch()
    index = store.applied_index(p) + 1 if applied is None else applied
    b.apply(p, [("put", k, encode_value(v)) for k, v in items.items()], index)
    store.write(b)


# --------------------------------------------------------------------------------------------- node meta


def test_node_meta_is_set_once_and_survives_reopen(opener: Opener) -> None:
    store = opener.open()
    assert store.node_meta() is None
    store.check_cluster("any")  # an unclaimed dir fits any cluster
    store.init_node_meta("n1", "c1")
    store.init_node_meta("n1", "c1")  # the same again is fine
    with pytest.raises(ConfigError, match="already belongs to node 'n1' of cluster 'c1'"):
        store.init_node_meta("n2", "c1")
    store = opener.reopen(store)
    assert store.node_meta() == NodeMeta(node_id="n1", cluster_id="c1", format_version=1)
    store.check_cluster("c1")
    with pytest.raises(ConfigError, match="belongs to cluster 'c1'.*'c2'.*point --data at another directory"):
        store.check_cluster("c2")


def test_a_joining_node_claims_its_id_before_it_knows_its_cluster(opener: Opener) -> None:
    """A node records its id before it asks to join, and its cluster once it has joined: restarted in between, it
    joins again under the same id (fuzz seed 2833: a node whose join committed but whose answer was lost came back
    under a new id, and the old one stayed in the member table, where the ring placed a new partition on it)."""
    store = opener.open()
    store.init_node_meta("n1", None)
    store.init_node_meta("n1", None)  # the same claim again is fine
    store = opener.reopen(store)
    assert store.node_meta() == NodeMeta(node_id="n1", cluster_id=None, format_version=1)
    store.check_cluster("c1")  # not in a cluster yet: it fits any
    with pytest.raises(ConfigError, match="already belongs to node 'n1'"):
        store.init_node_meta("n2", "c1")
    store.init_node_meta("n1", "c1")  # joined
    store = opener.reopen(store)
    assert store.node_meta() == NodeMeta(node_id="n1", cluster_id="c1", format_version=1)
    with pytest.raises(ConfigError, match="already belongs to node 'n1' of cluster 'c1'"):
        store.init_node_meta("n1", None)  # a member never goes back to joining
    with pytest.raises(ConfigError, match="already belongs to node 'n1' of cluster 'c1'"):
        store.init_node_meta("n1", "c2")
    with pytest.raises(ValueError):
        store.init_node_meta("n1", "")


def test_a_fresh_store_has_no_replicas(store: Store) -> None:
    assert store.replicas() == []
    assert store.hard_state("p") == HardState()
    assert store.snapshot_meta("p") == SnapshotMeta()
    assert (store.first_index("p"), store.last_index("p"), store.applied_index("p")) == (1, 0, 0)
    assert store.term("p", 0) == 0
    with pytest.raises(NotFound):
        store.get("p", "k")
    assert list(store.iterate("p")) == []


# --------------------------------------------------------------------------------------------- log


def test_append_read_and_term(store: Store) -> None:
    write(store, append=("p", ents(1, 5, term=1) + ents(6, 8, term=2)))
    assert store.replicas() == ["p"]
    assert (store.first_index("p"), store.last_index("p")) == (1, 8)
    assert [store.term("p", i) for i in range(9)] == [0, 1, 1, 1, 1, 1, 2, 2, 2]
    assert store.entries("p", 1, 9, 1 << 20) == ents(1, 5, term=1) + ents(6, 8, term=2)
    assert store.entries("p", 3, 3, 0) == []
    with pytest.raises(LogUnavailable):
        store.term("p", 9)
    with pytest.raises(LogUnavailable):
        store.entries("p", 1, 10, 1 << 20)
    with pytest.raises(ValueError, match="lo 5 is greater than hi 4"):
        store.entries("p", 5, 4, 100)


def test_entries_respect_max_bytes_but_return_at_least_one(store: Store) -> None:
    write(store, append=("p", ents(1, 10, size=76)))  # 100 bytes each by Entry.size()
    assert len(store.entries("p", 1, 11, 0)) == 1
    assert len(store.entries("p", 1, 11, 99)) == 1
    assert len(store.entries("p", 1, 11, 100)) == 1
    assert len(store.entries("p", 1, 11, 299)) == 2
    assert len(store.entries("p", 1, 11, 300)) == 3
    assert [e.index for e in store.entries("p", 4, 11, 250)] == [4, 5]


def test_append_replaces_the_conflicting_tail(store: Store) -> None:
    write(store, append=("p", ents(1, 10, term=1)))
    write(store, append=("p", ents(4, 5, term=2)))  # §5.3: entries from 4 on are replaced, 6..10 dropped
    assert store.last_index("p") == 5
    assert store.entries("p", 1, 6, 1 << 20) == ents(1, 3, term=1) + ents(4, 5, term=2)
    assert store.term("p", 5) == 2
    write(store, append=("p", ents(6, 7, term=3)))  # plain append after it
    assert [store.term("p", i) for i in range(1, 8)] == [1, 1, 1, 2, 2, 3, 3]


def test_append_with_a_gap_or_into_the_snapshot_writes_nothing(store: Store) -> None:
    write(store, append=("p", ents(1, 3)))
    b = store.write_batch()
    b.set_hard_state("p", HardState(term=9))
    b.append("p", ents(5, 6))
    with pytest.raises(InvalidLogOperation, match="gap"):
        store.write(b)
    assert store.hard_state("p") == HardState() and store.last_index("p") == 3
    write(store, set_snapshot_meta=("p", SnapshotMeta(index=2, term=1)))
    with pytest.raises(InvalidLogOperation, match="in the snapshot"):
        write(store, append=("p", ents(2, 4)))
    assert store.last_index("p") == 3


def test_truncate_suffix(store: Store) -> None:
    write(store, append=("p", ents(1, 10)))
    write(store, truncate_suffix=("p", 20))  # beyond the end: nothing to do
    assert store.last_index("p") == 10
    write(store, truncate_suffix=("p", 6))
    assert store.last_index("p") == 5
    assert store.term("p", 5) == 1
    with pytest.raises(LogUnavailable):
        store.term("p", 6)
    write(store, truncate_suffix=("p", 1))
    assert (store.first_index("p"), store.last_index("p")) == (1, 0)
    write(store, append=("p", ents(1, 2, term=4)))
    assert store.entries("p", 1, 3, 100) == ents(1, 2, term=4)


def test_compaction_and_snapshot_meta(store: Store) -> None:
    write(store, append=("p", ents(1, 10)))
    with pytest.raises(InvalidLogOperation, match="set the snapshot meta first"):
        write(store, compact=("p", 4))
    meta = SnapshotMeta(index=4, term=1, conf_state=ConfState(voters=[NodeId("a"), NodeId("b")]))
    b = store.write_batch()
    b.set_snapshot_meta("p", meta)
    b.compact("p", 4)
    store.write(b)
    assert store.snapshot_meta("p") == meta
    assert (store.first_index("p"), store.last_index("p")) == (5, 10)
    assert store.term("p", 4) == 1
    with pytest.raises(LogCompacted):
        store.term("p", 3)
    with pytest.raises(LogCompacted):
        store.entries("p", 4, 6, 100)
    assert [e.index for e in store.entries("p", 5, 11, 1 << 20)] == list(range(5, 11))
    with pytest.raises(InvalidLogOperation, match="cannot go back"):
        write(store, set_snapshot_meta=("p", SnapshotMeta(index=3, term=1)))
    with pytest.raises(InvalidLogOperation, match="in the snapshot"):
        write(store, truncate_suffix=("p", 4))


def test_snapshot_meta_beyond_the_log_drops_it(store: Store) -> None:
    write(store, append=("p", ents(1, 5)))
    write(store, set_snapshot_meta=("p", SnapshotMeta(index=100, term=7)))
    assert (store.first_index("p"), store.last_index("p")) == (101, 100)
    assert store.term("p", 100) == 7
    write(store, append=("p", ents(101, 102, term=7)))
    assert store.entries("p", 101, 103, 100) == ents(101, 102, term=7)


def test_snapshot_meta_within_the_log_keeps_what_follows(store: Store) -> None:
    write(store, append=("p", ents(1, 8)))
    write(store, set_snapshot_meta=("p", SnapshotMeta(index=5, term=1)))
    assert (store.first_index("p"), store.last_index("p")) == (6, 8)
    write(store, compact=("p", 5))
    assert store.entries("p", 6, 9, 1000) == ents(6, 8)


def test_log_ops_in_one_batch_apply_in_order(store: Store) -> None:
    b = store.write_batch()
    b.append("p", ents(1, 10))
    b.truncate_suffix("p", 8)
    b.append("p", ents(8, 9, term=2))
    b.set_snapshot_meta("p", SnapshotMeta(index=3, term=1))
    b.compact("p", 3)
    b.set_hard_state("p", HardState(term=2, vote=NodeId("x"), commit=3))
    store.write(b)
    assert (store.first_index("p"), store.last_index("p")) == (4, 9)
    assert store.entries("p", 4, 10, 1 << 20) == ents(4, 7) + ents(8, 9, term=2)
    assert store.hard_state("p") == HardState(term=2, vote=NodeId("x"), commit=3)


def test_entries_keep_kind_and_data(store: Store) -> None:
    e = [
        Entry(term=3, index=1, kind=EntryKind.CONF_CHANGE, data=b"\x00conf"),
        Entry(term=3, index=2, data=b""),
        Entry(term=3, index=3, data=bytes(range(256))),
    ]
    write(store, append=("p", e))
    assert store.entries("p", 1, 4, 1 << 20) == e


def test_log_storage_implements_the_raft_contract(opener: Opener) -> None:
    store = opener.open()
    conf = ConfState(voters=[NodeId("n1"), NodeId("n2"), NodeId("n3")])
    b = store.write_batch()
    b.set_snapshot_meta("p", SnapshotMeta(index=0, term=0, conf_state=conf))  # bootstrap
    b.set_hard_state("p", HardState(term=1, vote=NodeId("n1"), commit=2))
    b.append("p", ents(1, 3))
    store.write(b)
    log: LogStorage = store.log_storage("p")
    assert log.initial_state() == (HardState(term=1, vote=NodeId("n1"), commit=2), conf)
    assert (log.first_index(), log.last_index(), log.term(0), log.term(3)) == (1, 3, 0, 1)
    assert log.entries(1, 4, 0) == ents(1, 1)
    assert log.snapshot_meta().conf_state == conf
    # The adapter reads the latest state, also after a reopen.
    store = opener.reopen(store)
    log = store.log_storage("p")
    assert (log.first_index(), log.last_index()) == (1, 3)
    assert log.initial_state()[1] == conf


def test_log_state_survives_reopen(opener: Opener) -> None:
    store = opener.open()
    write(store, append=("p", ents(1, 10, term=2)))
    b = store.write_batch()
    b.set_snapshot_meta("p", SnapshotMeta(index=4, term=2))
    b.compact("p", 3)
    b.truncate_suffix("p", 9)
    store.write(b)
    store = opener.reopen(store)
    assert (store.first_index("p"), store.last_index("p"), store.term("p", 8)) == (5, 8, 2)
    assert store.entries("p", 5, 9, 1 << 20) == ents(5, 8, term=2)
    write(store, compact=("p", 4))
    write(store, append=("p", ents(9, 9, term=3)))
    store = opener.reopen(store)
    assert store.term("p", 9) == 3 and store.last_index("p") == 9


# --------------------------------------------------------------------------------------------- key/value


def test_put_get_delete_and_applied_index(store: Store) -> None:
    values: dict[Any, Any] = {
        "str": "text",
        b"bytes": b"\x00\xff",
        "int": -(2**70),
        "float": 1.5,
        "none": None,
        "list": [1, "a", [b"x"]],
        "map": {"a": {"b": [True, False]}},
    }
    put(store, "p", values, applied=7)
    assert store.applied_index("p") == 7
    for k, v in values.items():
        assert store.get("p", k) == v
    b = store.write_batch()
    b.apply("p", [("del", "str"), ("del", "never-there")], 8)
    store.write(b)
    with pytest.raises(NotFound) as info:
        store.get("p", "str")
    assert info.value.partition == "p" and info.value.key == "str"
    assert store.applied_index("p") == 8
    assert store.get_encoded("p", "int") == encode_value(-(2**70))


def test_applied_index_cannot_go_back(store: Store) -> None:
    put(store, "p", {"a": 1}, applied=5)
    with pytest.raises(InvalidLogOperation, match="applied index 4 is below the stored 5"):
        put(store, "p", {"a": 2}, applied=4)
    assert store.get("p", "a") == 1
    put(store, "p", {"a": 3}, applied=5)  # equal is allowed (an entry with nothing to apply)
    assert store.get("p", "a") == 3


def test_str_and_bytes_are_the_same_key_and_the_last_write_decides_the_type(store: Store) -> None:
    put(store, "p", {"k": 1})
    assert store.get("p", b"k") == 1
    assert list(store.iterate("p")) == [("k", 1)]
    put(store, "p", {b"k": 2})
    assert store.get("p", "k") == 2
    assert list(store.iterate("p")) == [(b"k", 2)]
    put(store, "p", {"é": 3})
    assert store.get("p", "é".encode()) == 3
    assert list(store.iterate("p", keys=True, values=False)) == [b"k", "é"]


def test_keys_are_ordered_bytewise(store: Store) -> None:
    keys: list[str | bytes] = ["b", "a", "ab", "a\x00", b"\xff", "\U0001f600", "é", "z", b"\x00", "A"]
    put(store, "p", {k: i for i, k in enumerate(keys)})
    expected = sorted(keys, key=key_bytes)
    assert list(store.iterate("p", values=False)) == expected
    assert list(store.iterate("p", values=False, reverse=True)) == expected[::-1]


@pytest.mark.parametrize("reverse", [False, True])
def test_iteration_bounds_and_options(store: Store, reverse: bool) -> None:
    put(store, "p", {k: k.upper() for k in ["a", "b", "c", "d", "e"]})

    def keys(**kw: Any) -> list[Any]:
        return list(store.iterate("p", values=False, reverse=reverse, **kw))

    def order(ks: str) -> list[str]:
        return list(ks[::-1] if reverse else ks)

    assert keys() == order("abcde")
    assert keys(gt="b") == order("cde")
    assert keys(gte="b") == order("bcde")
    assert keys(lt="d") == order("abc")
    assert keys(lte="d") == order("abcd")
    assert keys(gt="a", lt="e") == order("bcd")
    assert keys(gte="b", lte="b") == ["b"]
    assert keys(gt="b", lt="c") == []
    assert keys(gt="e") == [] and keys(lt="a") == []
    assert keys(gte="bb", lte="dd") == order("cd")
    assert keys(gte=b"b", lt="d") == order("bc")
    assert keys(gt="", lt="") == [] and keys(gte="") == order("abcde")
    assert keys(limit=2) == order("abcde")[:2]
    assert keys(limit=0) == []
    assert keys(gt="a", limit=1) == order("bcde")[:1]
    both = list(store.iterate("p", gte="c", reverse=reverse, limit=2))
    assert both == [(k, k.upper()) for k in order("cde")[:2]]
    assert list(store.iterate("p", gte="c", reverse=reverse, keys=False)) == [k.upper() for k in order("cde")]


def test_iteration_can_give_values_still_encoded(store: Store) -> None:
    put(store, "p", {"a": {"x": 1}, b"b": [2]})
    assert list(store.iterate("p", encoded=True)) == [
        ("a", store.get_encoded("p", "a")),
        (b"b", store.get_encoded("p", b"b")),
    ]
    assert [decode_value(v) for v in store.iterate("p", keys=False, encoded=True)] == [{"x": 1}, [2]]


def test_iteration_sees_the_items_as_of_the_call(store: Store) -> None:
    put(store, "p", {f"k{i}": i for i in range(10)})
    it = store.iterate("p")
    b = store.write_batch()
    b.apply("p", [("del", "k5"), ("put", "k55", encode_value("new"))], 2)
    store.write(b)
    assert [k for k, _ in it] == [f"k{i}" for i in range(10)]
    assert "k55" in list(store.iterate("p", values=False))


TRICKY_NAMES = ["a", "ab", "a\x00", "a\x00b", "a\xff", "\x00", "é", "\U0001f600", "a/b", "_system", " "]


def test_partitions_never_see_each_others_keys(store: Store) -> None:
    for n, name in enumerate(TRICKY_NAMES):
        put(store, name, {"k": name, b"\x00": n, "zzz": [name]}, applied=n + 1)
        write(store, append=(name, ents(1, n + 1, term=n + 1)))
    assert store.replicas() == sorted(TRICKY_NAMES)
    for n, name in enumerate(TRICKY_NAMES):
        assert list(store.iterate(name)) == [(b"\x00", n), ("k", name), ("zzz", [name])]
        assert store.applied_index(name) == n + 1
        assert store.last_index(name) == n + 1 and store.term(name, n + 1) == n + 1
    write(store, destroy=("a",))
    assert list(store.iterate("ab")) == [(b"\x00", 1), ("k", "ab"), ("zzz", ["ab"])]
    assert list(store.iterate("a")) == []
    assert "a" not in store.replicas()


def test_destroy_then_recreate_in_one_batch(opener: Opener) -> None:
    store = opener.open()
    put(store, "p", {"old": 1}, applied=3)
    write(store, append=("p", ents(1, 3)), set_hard_state=("p", HardState(term=3)))
    b = store.write_batch()
    b.destroy("p")
    b.apply("p", [("put", "new", encode_value(2))], 1)
    store.write(b)
    assert list(store.iterate("p")) == [("new", 2)]
    assert (store.applied_index("p"), store.last_index("p"), store.hard_state("p")) == (1, 0, HardState())
    assert store.has_garbage
    while store.collect_garbage(1):
        pass
    assert not store.has_garbage
    store = opener.reopen(store)
    assert list(store.iterate("p")) == [("new", 2)] and store.last_index("p") == 0


def test_a_destroyed_replica_leaves_its_tombstone_for_good(opener: Opener) -> None:
    store = opener.open()
    write(store, append=("p", ents(1, 3)), set_hard_state=("p", HardState(term=3, vote=NodeId("n2"))))
    assert store.tombstone("p") is None
    first = Tombstone(term=3, vote=NodeId("n2"), last_index=3, last_term=1)
    b = store.write_batch()
    b.destroy("p", first)
    store.write(b)
    assert store.replicas() == [] and store.tombstone("p") == first and store.tombstone("q") is None
    while store.collect_garbage(1):
        pass
    store = opener.reopen(store)
    assert store.tombstone("p") == first
    write(store, append=("p", ents(1, 2)), destroy=("p",))  # no new tombstone: the old one stays
    assert store.tombstone("p") == first
    second = Tombstone(term=7, vote=None, last_index=9, last_term=6)
    b = store.write_batch()
    b.destroy("p", second)
    store.write(b)
    assert opener.reopen(store).tombstone("p") == second


def test_a_tombstone_counts_only_once_its_batch_is_written(store: Store) -> None:
    # The store keeps an index of the partitions that have a tombstone: a batch that is refused writes nothing,
    # so its tombstone must not count, and a later one must.
    write(store, append=("p", ents(1, 3)))
    tomb = Tombstone(term=2, vote=None, last_index=3, last_term=1)
    b = store.write_batch()
    b.destroy("p", tomb)
    b.append("q", ents(5, 6))  # a gap: the whole batch is refused
    with pytest.raises(InvalidLogOperation, match="gap"):
        store.write(b)
    assert store.tombstone("p") is None and store.replicas() == ["p"]
    b = store.write_batch()
    b.destroy("p", tomb)
    store.write(b)
    assert store.tombstone("p") == tomb
    with pytest.raises(ValueError):
        store.tombstone("")  # no partition has that name: refused, tombstone or not


def test_a_crash_forgets_an_unsynced_tombstone() -> None:
    store = MemoryStore()
    write(store, append=("p", ents(1, 3)))
    store.sync()
    tomb = Tombstone(term=2, vote=None, last_index=3, last_term=1)
    b = store.write_batch()
    b.destroy("p", tomb)
    store.write(b, sync=False)
    assert store.tombstone("p") == tomb
    store.crash()
    assert store.tombstone("p") is None and store.replicas() == ["p"]


def test_destroying_a_missing_partition_does_nothing(store: Store) -> None:
    write(store, destroy=("nope",))
    assert store.replicas() == []


def test_data_survives_reopen(opener: Opener) -> None:
    store = opener.open()
    put(store, "p", {"a": 1, b"b": [2]}, applied=4)
    store = opener.reopen(store)
    assert list(store.iterate("p")) == [("a", 1), (b"b", [2])]
    assert store.applied_index("p") == 4


def test_closed_store_refuses_use(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    assert store.closed
    with pytest.raises(StorageError, match="closed"):
        store.get("p", "k")
    with pytest.raises(StorageError, match="closed"):
        store.write(store.write_batch())


def test_write_batch_of_another_store_is_refused(store: Store) -> None:
    other = MemoryStore()
    with pytest.raises(ValueError, match="another store"):
        store.write(other.write_batch())


# --------------------------------------------------------------------------------------------- snapshots


def fill(store: Store, p: str, n: int, applied: int) -> dict[Any, Any]:
    items: dict[Any, Any] = {}
    for i in range(n):
        key: str | bytes = f"key{i:05d}" if i % 3 else f"key{i:05d}".encode()
        items[key] = {"i": i, "pad": "x" * (i % 50)}
    put(store, p, items, applied=applied)
    return items


def install(store: Store, p: str, chunks: list[bytes], meta: SnapshotMeta) -> None:
    inst = store.begin_snapshot_install(p)
    for c in chunks:
        assert inst.add_chunk(c)
    b = store.write_batch()
    inst.finish(b, meta)
    store.write(b)


def test_snapshot_round_trip_replaces_data_atomically(opener: Opener) -> None:
    store = opener.open()
    items = fill(store, "src", 300, applied=42)
    with store.snapshot_chunks("src", max_chunk_bytes=1000) as reader:
        assert reader.applied_index == 42
        chunks = list(reader)
    assert len(chunks) > 5
    put(store, "dst", {"stale": 1, "key00001": "old"}, applied=3)
    write(store, append=("dst", ents(1, 5)))
    inst = store.begin_snapshot_install("dst")
    for c in chunks:
        inst.add_chunk(c)
        assert store.get("dst", "stale") == 1  # nothing of the snapshot shows before the switch
    assert inst.done and inst.applied_index == 42
    meta = SnapshotMeta(index=42, term=3, conf_state=ConfState(voters=[NodeId("n1")]))
    b = store.write_batch()
    b.set_hard_state("dst", HardState(term=3, commit=42))
    inst.finish(b, meta)
    b.apply("dst", [("put", "after", encode_value("switch"))], 43)  # later ops see the new data
    assert store.get("dst", "stale") == 1
    store.write(b)
    got = dict(store.iterate("dst"))
    assert got == {**items, "after": "switch"}
    assert list(store.iterate("dst", values=False)) == sorted({**items, "after": 0}, key=key_bytes)
    assert store.applied_index("dst") == 43 and store.snapshot_meta("dst") == meta
    assert (store.first_index("dst"), store.last_index("dst")) == (43, 42)
    assert store.hard_state("dst") == HardState(term=3, commit=42)
    while store.collect_garbage():
        pass
    store = opener.reopen(store)
    assert dict(store.iterate("dst")) == {**items, "after": "switch"}
    assert dict(store.iterate("src")) == items


def test_snapshot_is_a_point_in_time(store: Store) -> None:
    items = fill(store, "p", 50, applied=1)
    reader = store.snapshot_chunks("p", max_chunk_bytes=200)
    first = next(reader)
    b = store.write_batch()
    b.apply("p", [("del", k) for k in items] + [("put", "new", encode_value(1))], 2)
    store.write(b)
    chunks = [first, *reader]
    install(store, "copy", chunks, SnapshotMeta(index=1, term=1))
    assert dict(store.iterate("copy")) == items
    assert list(store.iterate("p")) == [("new", 1)]


def test_snapshot_of_an_empty_partition(store: Store) -> None:
    chunks = list(store.snapshot_chunks("missing"))
    assert len(chunks) == 1
    put(store, "dst", {"a": 1}, applied=1)
    install(store, "dst", chunks, SnapshotMeta(index=0, term=0))
    assert list(store.iterate("dst")) == [] and store.applied_index("dst") == 0


def test_snapshot_install_creates_a_new_replica_and_resumes(store: Store) -> None:
    items = fill(store, "src", 100, applied=9)
    chunks = list(store.snapshot_chunks("src", max_chunk_bytes=300))
    inst = store.begin_snapshot_install("fresh")
    assert inst.applied_index is None
    inst.add_chunk(chunks[0])
    inst.add_chunk(chunks[1])
    assert not inst.add_chunk(chunks[0])  # a resent chunk is ignored
    assert inst.next_seq == 2
    for c in chunks[2:]:
        inst.add_chunk(c)
    b = store.write_batch()
    inst.finish(b, SnapshotMeta(index=9, term=2))
    store.write(b)
    assert dict(store.iterate("fresh")) == items and "fresh" in store.replicas()


def test_snapshot_install_misuse(store: Store) -> None:
    fill(store, "src", 20, applied=5)
    chunks = list(store.snapshot_chunks("src", max_chunk_bytes=100))
    inst = store.begin_snapshot_install("dst")
    inst.add_chunk(chunks[0])
    with pytest.raises(ValueError, match="incomplete"):
        inst.finish(store.write_batch(), SnapshotMeta(index=5))
    for c in chunks[1:]:
        inst.add_chunk(c)
    with pytest.raises(ValueError, match="differs from the data's applied index 5"):
        inst.finish(store.write_batch(), SnapshotMeta(index=6))
    b = store.write_batch()
    inst.finish(b, SnapshotMeta(index=5, term=1))
    with pytest.raises(StorageError, match="finished"):
        inst.finish(store.write_batch(), SnapshotMeta(index=5, term=1))
    inst.abort()
    with pytest.raises(InvalidLogOperation, match="aborted"):
        store.write(b)
    assert "dst" not in store.replicas()
    while store.collect_garbage():
        pass
    assert not store.has_garbage


def test_snapshot_install_that_would_move_the_snapshot_back_writes_nothing(store: Store) -> None:
    fill(store, "src", 5, applied=5)
    chunks = list(store.snapshot_chunks("src"))
    write(store, set_snapshot_meta=("dst", SnapshotMeta(index=10, term=2)))
    inst = store.begin_snapshot_install("dst")
    for c in chunks:
        inst.add_chunk(c)
    b = store.write_batch()
    inst.finish(b, SnapshotMeta(index=5, term=1))
    with pytest.raises(InvalidLogOperation, match="cannot go back"):
        store.write(b)
    assert store.snapshot_meta("dst").index == 10 and list(store.iterate("dst")) == []


def test_aborted_or_unfinished_installs_leave_no_garbage(opener: Opener) -> None:
    store = opener.open()
    fill(store, "src", 30, applied=1)
    chunks = list(store.snapshot_chunks("src", max_chunk_bytes=100))
    inst = store.begin_snapshot_install("dst")
    inst.add_chunk(chunks[0])
    assert store.collect_garbage() == 0  # an install in progress is not garbage
    inst.abort()
    assert store.collect_garbage() > 0
    inst2 = store.begin_snapshot_install("dst")
    inst2.add_chunk(chunks[0])
    store = opener.reopen(store)  # a restart in the middle: the staged chunks are collected at open
    while store.collect_garbage():
        pass
    assert store.replicas() == ["src"]
    assert _count_keys(store) == _count_keys_after_fresh_fill(opener)


def _count_keys(store: Store) -> int:
    reader = store._engine_reader()
    return sum(1 for _ in reader.scan(b"", b"\xff" * 16))


def _count_keys_after_fresh_fill(opener: Opener) -> int:
    fresh = MemoryStore()
    fill(fresh, "src", 30, applied=1)
    return _count_keys(fresh)


def test_store_kinds_share_one_layout(tmp_path: Any) -> None:
    """Both implementations put exactly the same bytes on 'disk' for the same history."""
    stores: list[Store] = [MemoryStore(), LevelDBStore.open(tmp_path / "db")]
    try:
        for s in stores:
            fill(s, "p", 20, applied=3)
            write(s, append=("p", ents(1, 4)))
            write(s, destroy=("p",))
            fill(s, "q", 5, applied=1)
            while s.collect_garbage():
                pass
        dumps = [list(s._engine_reader().scan(b"", b"\xff" * 16)) for s in stores]
        assert dumps[0] == dumps[1]
    finally:
        for s in stores:
            s.close()


class WindowStore(LevelDBStore):
    """Holds a write between LevelDB making it visible and the store publishing it: the window a read in the
    trio thread can hit while the group committer writes in a worker thread."""

    hold = False
    entered: threading.Event
    gate: threading.Event

    def _engine_commit(self, raw: Any) -> None:
        super()._engine_commit(raw)
        if self.hold:
            self.entered.set()
            assert self.gate.wait(10)


def test_reads_during_a_write_see_the_state_before_it(tmp_path: Any) -> None:
    store = WindowStore.open(tmp_path / "db")
    store.entered, store.gate = threading.Event(), threading.Event()
    try:
        write(store, append=("p", ents(1, 10, term=1)))
        put(store, "p", {"a": 1, "b": 2}, applied=1)
        b = store.write_batch()
        b.append("p", ents(5, 6, term=2))  # replaces 5.., drops 7..10
        b.apply("p", [("del", "a"), ("put", "b", encode_value(3))], 2)
        b.set_snapshot_meta("p", SnapshotMeta(index=3, term=1))
        b.compact("p", 3)
        store.hold = True
        writer = threading.Thread(target=store.write, args=(b,))
        writer.start()
        assert store.entered.wait(10)
        # LevelDB already has the new keys; the store still serves the old state, consistently.
        assert (store.first_index("p"), store.last_index("p"), store.applied_index("p")) == (1, 10, 1)
        assert store.entries("p", 1, 11, 1 << 20) == ents(1, 10, term=1)
        assert [store.term("p", i) for i in range(1, 11)] == [1] * 10
        assert list(store.iterate("p")) == [("a", 1), ("b", 2)] and store.get("p", "a") == 1
        store.gate.set()
        writer.join(10)
        assert (store.first_index("p"), store.last_index("p"), store.applied_index("p")) == (4, 6, 2)
        assert store.entries("p", 4, 7, 1 << 20) == ents(4, 4, term=1) + ents(5, 6, term=2)
        assert list(store.iterate("p")) == [("b", 3)]
    finally:
        store.hold = False
        store.close()
