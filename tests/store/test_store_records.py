"""A partition's internal records (client sessions live there): written with its data, out of users' reach,
carried by snapshots, switched by installs, kept across restarts and collected with their generation."""

from __future__ import annotations

from borough.raft.records import SnapshotMeta
from borough.store import Store, encode_value

from .conftest import Opener


def _write(store: Store, partition: str, applied: int, records: list[tuple[bytes, bytes | None]]) -> None:
    b = store.write_batch()
    b.apply(partition, [("put", f"k{applied}", encode_value(applied))], applied, records)
    store.write(b)


def test_records_are_written_with_the_data_and_hidden_from_users(opener: Opener) -> None:
    store = opener.open()
    _write(store, "p", 1, [(b"s1", b"one"), (b"s2", b"two")])
    _write(store, "p", 2, [(b"s1", None), (b"\x05x", b"looks like a data key")])
    assert list(store.records("p")) == [(b"\x05x", b"looks like a data key"), (b"s2", b"two")]
    assert dict(store.iterate("p")) == {"k1": 1, "k2": 2}  # records never show up as data
    assert list(store.records("missing")) == []
    store = opener.reopen(store)
    assert list(store.records("p")) == [(b"\x05x", b"looks like a data key"), (b"s2", b"two")]


def test_a_snapshot_carries_the_records_and_an_install_switches_them_with_the_data(opener: Opener) -> None:
    store = opener.open()
    for i in range(1, 30):
        _write(store, "src", i, [(b"s%03d" % i, b"r%d" % i)])
    _write(store, "dst", 1, [(b"old", b"replaced by the snapshot")])
    chunks = list(store.snapshot_chunks("src", max_chunk_bytes=64))
    assert len(chunks) > 3
    inst = store.begin_snapshot_install("dst")
    for chunk in chunks:
        inst.add_chunk(chunk)
    b = store.write_batch()
    inst.finish(b, SnapshotMeta(index=29, term=1))
    store.write(b)
    assert list(store.records("dst")) == list(store.records("src"))
    assert dict(store.iterate("dst")) == dict(store.iterate("src"))
    # A batch built before the switch lands its records in the new generation too.
    _write(store, "dst", 30, [(b"new", b"after")])
    assert (b"new", b"after") in list(store.records("dst"))


def test_records_are_garbage_with_their_generation(opener: Opener) -> None:
    store = opener.open()
    _write(store, "p", 1, [(b"s", b"r")])
    b = store.write_batch()
    b.destroy("p")
    store.write(b)
    while store.collect_garbage(max_keys=1):
        pass
    assert not list(store._engine_reader().scan(b"\x05", b"\x09"))  # no data, trash or records key is left
