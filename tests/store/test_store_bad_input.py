"""Bad input gets a clear error and writes nothing; unusable data dirs give a ConfigError that says what to do."""

from __future__ import annotations

import datetime
import pathlib
import subprocess
import sys
from typing import Any

import cbor2
import plyvel  # type: ignore[import-untyped]
import pytest

from borough.errors import ConfigError, RemoteProtocolError, StorageError
from borough.raft.records import Entry, HardState, SnapshotMeta
from borough.store import LevelDBStore, MemoryStore, Store, decode_value, encode_key, encode_value
from borough.store import encoding as enc
from borough.store import snapshot as snap

from .conftest import Opener

# --------------------------------------------------------------------------------------------- codecs


@pytest.mark.parametrize(
    ("key", "error", "match"),
    [
        (1, TypeError, "must be str or bytes, not int"),
        (None, TypeError, "not NoneType"),
        (["a"], TypeError, "not list"),
        (bytearray(b"a"), TypeError, "not bytearray"),
        ("", ValueError, "must not be empty"),
        (b"", ValueError, "must not be empty"),
        ("a\ud800", ValueError, "not valid Unicode"),
    ],
)
def test_bad_keys(key: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        encode_key(key)


def test_keys_encode_bytewise() -> None:
    assert encode_key("é") == "é".encode()
    assert encode_key(b"\x00") == b"\x00"


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (object(), TypeError, "of type object"),
        ({"a": [1, object()]}, TypeError, "of type dict .or something inside it."),
        (lambda: 1, TypeError, "function"),
    ],
)
def test_values_cbor_cannot_encode(value: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        encode_value(value)


def test_cyclic_value() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="cyclic"):
        encode_value(cyclic)


def test_values_round_trip() -> None:
    for v in [0, -1, 2**100, 1.25, "s", b"b", None, True, [1, [2]], {"a": {1: 2}}, datetime.date(2024, 1, 2)]:
        assert decode_value(encode_value(v)) == v


def test_corrupt_value_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="not valid CBOR"):
        decode_value(b"\xff\x00")


# --------------------------------------------------------------------------------------------- batches


def bad_batch_ops(store: Store) -> list[tuple[str, tuple[Any, ...], type[Exception], str]]:
    ok = encode_value(1)
    return [
        ("apply", ("p", [("put", 1, ok)], 1), TypeError, "must be str or bytes, not int"),
        ("apply", ("p", [("put", "", ok)], 1), ValueError, "must not be empty"),
        ("apply", ("p", [("del", b"")], 1), ValueError, "must not be empty"),
        ("apply", ("p", [("put", "a\udfff", ok)], 1), ValueError, "not valid Unicode"),
        ("apply", ("p", [("put", "k", {"not": "encoded"})], 1), TypeError, "must be bytes from encode_value"),
        ("apply", ("p", [("put", "k", b"")], 1), ValueError, "is not CBOR from encode_value"),
        ("apply", ("p", [("put", b"k", b"\xff\x01")], 1), ValueError, "is not CBOR from encode_value"),
        ("apply", ("p", [("put", "k")], 1), ValueError, "an op must be"),
        ("apply", ("p", [("del", "k", ok)], 1), ValueError, "an op must be"),
        ("apply", ("p", [("upsert", "k", ok)], 1), ValueError, "an op must be"),
        ("apply", ("p", [()], 1), ValueError, "an op must be"),
        ("apply", ("p", [None], 1), ValueError, "an op must be"),
        ("apply", ("p", [("put", "ok", ok), ("put", 2.5, ok)], 1), TypeError, "not float"),
        ("apply", ("p", [], -1), TypeError, "applied_index must be a non-negative int"),
        ("apply", ("p", [], True), TypeError, "applied_index must be a non-negative int"),
        ("apply", ("", [], 1), ValueError, "partition name must not be empty"),
        ("apply", (b"p", [], 1), TypeError, "partition name must be str"),
        ("append", ("p", [Entry(term=1, index=1), Entry(term=1, index=3)]), ValueError, "consecutive"),
        ("append", ("p", [Entry(term=1, index=0)]), ValueError, "index must be an int >= 1"),
        ("append", ("p", [Entry(term=-1, index=1)]), ValueError, "malformed log entry"),
        ("append", ("p", [Entry(term=1, index=1, data="text")]), ValueError, "malformed log entry"),  # type: ignore[arg-type]
        ("append", ("p", [(1, 1)]), TypeError, "must be Entry records"),
        ("set_hard_state", ("p", (1, None, 0)), TypeError, "must be a HardState"),
        ("set_snapshot_meta", ("p", SnapshotMeta(index=-1)), TypeError, "snapshot index"),
        ("set_snapshot_meta", ("p", {"index": 1}), TypeError, "must be a SnapshotMeta"),
        ("truncate_suffix", ("p", "3"), TypeError, "from_index"),
        ("compact", ("p", None), TypeError, "upto_index"),
        ("destroy", (None,), TypeError, "partition name must be str"),
    ]


def as_lists(cases: list[tuple[str, tuple[Any, ...], type[Exception], str]]) -> list[Any]:
    """The apply cases again with every op a list, as a decoded Raft command carries them (WriteBatch.apply
    takes a 3-list put on its hot path too: it must refuse exactly what the tuple form refuses)."""
    return [
        (method, (args[0], [list(op) if isinstance(op, tuple) else op for op in args[1]], *args[2:]), error, match)
        for method, args, error, match in cases
        if method == "apply"
    ]


def test_bad_batch_input_raises_and_adds_nothing(store: Store) -> None:
    cases = bad_batch_ops(store)
    for method, args, error, match in cases + as_lists(cases):
        b = store.write_batch()
        b.apply("p", [("put", "good", encode_value("kept"))], 1)
        before = (len(b), b.nbytes)
        with pytest.raises(error, match=match):
            getattr(b, method)(*args)
        assert (len(b), b.nbytes) == before, f"{method}{args!r} added to the batch although it raised"
        store.write(b)
        assert store.get("p", "good") == "kept"
        assert list(store.iterate("p", values=False)) == ["good"]
        assert store.last_index("p") == 0 and store.hard_state("p") == HardState()


def test_list_ops_store_what_tuple_ops_store(store: Store) -> None:
    ops = [("put", "s", encode_value("text")), ("put", b"b", encode_value(2)), ("put", "gone", encode_value(3))]
    ops += [("del", "gone")]
    b = store.write_batch()
    b.apply("t", ops, 1)
    b.apply("l", [list(op) for op in ops], 1)
    store.write(b)
    assert list(store.iterate("l")) == list(store.iterate("t")) == [(b"b", 2), ("s", "text")]


def test_reads_with_bad_arguments(store: Store) -> None:
    with pytest.raises(TypeError, match="must be str or bytes"):
        store.get("p", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="partition name must be str"):
        store.get(5, "k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partition name must not be empty"):
        store.last_index("")
    with pytest.raises(ValueError, match="at most one lower bound"):
        store.iterate("p", gt="a", gte="b")
    with pytest.raises(ValueError, match="at most one upper bound"):
        store.iterate("p", lt="a", lte="b")
    with pytest.raises(ValueError, match="limit must be None or an int >= 0"):
        store.iterate("p", limit=-1)
    with pytest.raises(ValueError, match="nothing to iterate"):
        store.iterate("p", keys=False, values=False)
    with pytest.raises(TypeError, match="iteration bound must be str or bytes"):
        store.iterate("p", gte=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        store.snapshot_chunks("p", max_chunk_bytes=0)


# --------------------------------------------------------------------------------------------- chunks


def chunk_of(store: Store) -> list[bytes]:
    b = store.write_batch()
    b.apply("src", [("put", f"k{i}", encode_value(i)) for i in range(20)], 3)
    store.write(b)
    return list(store.snapshot_chunks("src", max_chunk_bytes=64))


def body(chunk: bytes) -> list[Any]:
    return list(cbor2.loads(chunk[8:]))


def rebuild(fields: list[Any]) -> bytes:
    return snap.encode_chunk(*fields)


def corruptions(chunks: list[bytes]) -> list[tuple[str, Any]]:
    c0 = chunks[0]
    fields = body(c0)
    flipped = bytearray(c0)
    flipped[-3] ^= 0x40
    out: list[tuple[str, Any]] = [
        ("bad magic", b"XXXX" + c0[4:]),
        ("checksum", bytes(flipped)),
        ("too short", c0[:5]),
        ("not bytes", "text"),
        ("not cbor", snap.MAGIC + (0).to_bytes(4, "big")[:0] + b"\x00\x00\x00\x00"),
        ("header", rebuild([-1, *fields[1:]])),
        ("seq type", rebuild([fields[0], "0", *fields[2:]])),
        ("after type", rebuild([*fields[:2], 5, *fields[3:]])),
        ("odd items", rebuild([*fields[:4], fields[4][:-1]])),
        ("empty key", rebuild([*fields[:4], [b"", b"\x01"]])),
        ("empty value", rebuild([*fields[:4], [b"k", b""]])),
        ("marker only", rebuild([*fields[:4], [b"k", b"\xff"]])),
        ("key order", rebuild([*fields[:4], [b"k2", b"\x01", b"k1", b"\x01"]])),
    ]
    return out


def test_corrupt_chunks_are_remote_protocol_errors_and_write_nothing(store: Store) -> None:
    chunks = chunk_of(store)
    assert len(chunks) >= 3
    for what, bad in corruptions(chunks):
        inst = store.begin_snapshot_install("dst")
        with pytest.raises(RemoteProtocolError):
            inst.add_chunk(bad)
        assert inst.next_seq == 0, what
        inst.abort()
    inst = store.begin_snapshot_install("dst")
    inst.add_chunk(chunks[0])
    with pytest.raises(RemoteProtocolError, match="chunk 2 arrived before chunk 1"):
        inst.add_chunk(chunks[2])
    other = list(MemoryStore().snapshot_chunks("x"))  # a chunk 0 of another snapshot (applied index 0)
    with pytest.raises(RemoteProtocolError, match="applied index 0, earlier ones of 3"):
        inst.add_chunk(rebuild([0, *body(chunks[1])[1:]]))
    with pytest.raises(RemoteProtocolError, match="does not continue"):
        inst.add_chunk(rebuild([3, 1, b"\x05a", *body(chunks[1])[3:]]))
    assert inst.next_seq == 1
    for c in chunks[1:]:
        inst.add_chunk(c)
    with pytest.raises(RemoteProtocolError, match="after the last one"):
        inst.add_chunk(rebuild([3, len(chunks), None, True, []]))
    assert not inst.add_chunk(other[0])  # seq 0 again: a duplicate, ignored
    b = store.write_batch()
    inst.finish(b, SnapshotMeta(index=3, term=1))
    store.write(b)
    assert dict(store.iterate("dst")) == {f"k{i}": i for i in range(20)}


# --------------------------------------------------------------------------------------------- data dirs


def test_open_a_dir_locked_by_another_store(tmp_path: pathlib.Path) -> None:
    first = LevelDBStore.open(tmp_path / "d")
    try:
        with pytest.raises(ConfigError, match=r"data dir .*/d is in use by another running node.*stop that node"):
            LevelDBStore.open(tmp_path / "d")
    finally:
        first.close()
    LevelDBStore.open(tmp_path / "d").close()  # free again once closed


def test_open_a_dir_locked_by_another_process(tmp_path: pathlib.Path) -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    script = (
        f"import sys; sys.path.insert(0, {str(root)!r}); from borough.store import LevelDBStore; "
        f"s = LevelDBStore.open({str(tmp_path / 'd')!r}); print('open', flush=True); sys.stdin.read(); s.close()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        try:
            assert child.stdout.readline() == "open\n"
            with pytest.raises(ConfigError, match="is in use by another running node"):
                LevelDBStore.open(tmp_path / "d")
        finally:
            child.stdin.close()  # the child closes its store and exits by itself
            child.wait(timeout=30)
    LevelDBStore.open(tmp_path / "d").close()


def test_open_a_dir_of_another_cluster(tmp_path: pathlib.Path) -> None:
    s = LevelDBStore.open(tmp_path / "d", cluster_id="c1")
    s.init_node_meta("n1", "c1")
    s.close()
    with pytest.raises(ConfigError, match="belongs to cluster 'c1'.*'c2'.*point --data at another directory"):
        LevelDBStore.open(tmp_path / "d", cluster_id="c2")
    LevelDBStore.open(tmp_path / "d", cluster_id="c1").close()  # the failed open released the lock


def test_open_a_dir_with_a_newer_format(tmp_path: pathlib.Path) -> None:
    LevelDBStore.open(tmp_path / "d").close()
    db = plyvel.DB(str(tmp_path / "d"))
    db.put(enc.META_FORMAT, enc.u64(enc.FORMAT_VERSION + 1))
    db.close()
    with pytest.raises(ConfigError, match="format version 2, newer than this Borough reads .1.: run a newer"):
        LevelDBStore.open(tmp_path / "d")


def test_open_a_leveldb_that_is_not_borough(tmp_path: pathlib.Path) -> None:
    db = plyvel.DB(str(tmp_path / "d"), create_if_missing=True)
    db.put(b"hello", b"world")
    db.close()
    with pytest.raises(ConfigError, match="not a Borough data dir"):
        LevelDBStore.open(tmp_path / "d")


def test_open_missing_dir_without_create(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        LevelDBStore.open(tmp_path / "nope", create=False)
    LevelDBStore.open(tmp_path / "nope").close()
    LevelDBStore.open(tmp_path / "nope", create=False).close()


def test_open_a_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        LevelDBStore.open(tmp_path / "f")


def _cut_short_creation(d: pathlib.Path, *, manifest: bool) -> None:
    """What a power cut while LevelDB creates a database can leave: CURRENT (synced) naming the first manifest,
    whose contents (never synced) are gone, or whose name is gone too."""
    d.mkdir()
    (d / "CURRENT").write_text("MANIFEST-000001\n")
    if manifest:
        (d / "MANIFEST-000001").write_bytes(b"")
    (d / "LOG").write_text("leveldb's info log\n")
    (d / "mine.txt").write_text("not LevelDB's")


@pytest.mark.parametrize("manifest", [True, False], ids=["empty manifest", "no manifest"])
def test_a_data_dir_whose_creation_was_cut_short_is_created_again(
    tmp_path: pathlib.Path, manifest: bool, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "d"
    _cut_short_creation(d, manifest=manifest)
    with pytest.raises(plyvel.CorruptionError):  # (what LevelDB makes of it)
        plyvel.DB(str(d)).close()
    store = LevelDBStore.open(d)
    try:
        b = store.write_batch()
        b.apply("p", [("put", "k", encode_value("v"))], 1)
        store.write(b)
    finally:
        store.close()
    assert "its creation was cut short" in caplog.text and "creating it again" in caplog.text
    assert (d / "mine.txt").read_text() == "not LevelDB's"  # only LevelDB's files were removed
    store = LevelDBStore.open(d, create=False)
    try:
        assert store.applied_index("p") == 1
    finally:
        store.close()


def test_a_data_dir_whose_creation_was_cut_short_is_not_created_again_without_create(tmp_path: pathlib.Path) -> None:
    _cut_short_creation(tmp_path / "d", manifest=True)
    with pytest.raises(StorageError, match="is corrupt .*remove it"):
        LevelDBStore.open(tmp_path / "d", create=False)
    assert (tmp_path / "d" / "CURRENT").exists()


def test_a_corrupt_data_dir_that_holds_data_is_left_alone(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "d"
    store = LevelDBStore.open(d)
    b = store.write_batch()
    b.apply("p", [("put", "k", encode_value("v"))], 1)
    store.write(b)
    store.close()
    current = (d / "CURRENT").read_bytes()
    (d / "CURRENT").write_text("MANIFEST-000099\n")  # names a manifest that is not there
    (d / "MANIFEST-000099").write_bytes(b"")

    def files() -> list[str]:
        return sorted(p.name for p in d.iterdir() if not p.name.startswith("LOG"))  # (LevelDB rotates its LOG)

    before = files()
    with pytest.raises(StorageError, match="is corrupt .*restore it from a backup"):
        LevelDBStore.open(d)
    assert files() == before  # nothing removed
    (d / "CURRENT").write_bytes(current)
    store = LevelDBStore.open(d)
    try:
        assert store.applied_index("p") == 1  # the data was never touched
    finally:
        store.close()


def test_a_corrupt_data_dir_past_its_creation_is_left_alone_even_without_data(tmp_path: pathlib.Path) -> None:
    """Only the first manifest is written unsynced: a database opened since (a later manifest) that LevelDB calls
    corrupt was damaged some other way (its table files deleted, say), and the operator must decide."""
    d = tmp_path / "d"
    for _ in range(2):
        plyvel.DB(str(d), create_if_missing=True).close()
    assert (d / "CURRENT").read_text() != "MANIFEST-000001\n"
    (d / "CURRENT").write_text("MANIFEST-000099\n")
    (d / "MANIFEST-000099").write_bytes(b"")
    with pytest.raises(StorageError, match="is corrupt"):
        LevelDBStore.open(d)
    assert (d / "MANIFEST-000099").exists()


def test_the_directories_a_new_data_dir_needs_are_made_durable(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from borough.store import leveldb

    synced: list[str] = []
    real = leveldb.sync_dir
    monkeypatch.setattr(leveldb, "sync_dir", lambda path: (synced.append(str(path)), real(path))[1])
    LevelDBStore.open(tmp_path / "a" / "b").close()
    # each new directory's entry in its parent, then (at open) the data dir's own entries
    assert synced[:3] == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    synced.clear()
    LevelDBStore.open(tmp_path / "a" / "b").close()  # nothing new to make durable but the data dir's entries
    assert synced == [str(tmp_path / "a" / "b")]


def test_a_failed_write_stops_further_writes(opener: Opener) -> None:
    store = opener.open()
    b = store.write_batch()
    b.apply("p", [("put", "a", encode_value(1))], 1)
    store.write(b)

    def broken(raw: Any) -> None:
        raise StorageError("writing failed: disk full")

    store._engine_commit = broken  # type: ignore[method-assign]
    b = store.write_batch()
    b.apply("p", [("put", "a", encode_value(2))], 2)
    with pytest.raises(StorageError, match="disk full"):
        store.write(b)
    assert store.get("p", "a") == 1 and store.applied_index("p") == 1  # nothing published
    del store._engine_commit  # even with the disk back, the store stays stopped
    with pytest.raises(StorageError, match="refuses writes after an earlier write failed"):
        store.write(b)
