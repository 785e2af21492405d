"""Crashes: on MemoryStore synced writes survive ``crash()`` and unsynced ones are gone; a LevelDB store written
by a process killed with SIGKILL reads back every write that was reported synced, and nothing half-written."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

from borough.errors import NotFound, StorageError
from borough.raft.records import Entry, HardState, SnapshotMeta
from borough.store import LevelDBStore, MemoryStore, encode_value

ROOT = pathlib.Path(__file__).resolve().parents[2]


def batch_of(store: MemoryStore, n: int) -> None:
    """Write 'round n': one log entry, one key, the applied index n, in one batch (unsynced)."""
    b = store.write_batch()
    b.append("p", [Entry(term=1, index=n, data=b"cmd%d" % n)])
    b.apply("p", [("put", f"k{n}", encode_value(n))], n)
    b.set_hard_state("p", HardState(term=1, commit=n))
    store.write(b, sync=False)


def test_memory_crash_loses_exactly_the_unsynced_writes() -> None:
    store = MemoryStore()
    for n in range(1, 4):
        batch_of(store, n)
    store.sync()
    for n in range(4, 7):
        batch_of(store, n)
    assert store.unsynced_writes > 0
    assert store.get("p", "k6") == 6  # unsynced writes are visible at once
    store.crash()
    assert store.unsynced_writes == 0
    assert (store.last_index("p"), store.applied_index("p"), store.hard_state("p").commit) == (3, 3, 3)
    assert list(store.iterate("p", values=False)) == ["k1", "k2", "k3"]
    with pytest.raises(NotFound):
        store.get("p", "k4")
    # The store goes on from the durable state: the log continues at 4.
    batch_of(store, 4)
    assert store.term("p", 4) == 1


def test_memory_a_synced_write_makes_every_earlier_write_durable() -> None:
    store = MemoryStore()
    batch_of(store, 1)
    b = store.write_batch()
    b.apply("other", [("put", "x", encode_value("y"))], 1)
    store.write(b, sync=True)
    store.crash()
    assert store.get("p", "k1") == 1 and store.get("other", "x") == "y"


def test_memory_crash_with_nothing_synced_is_a_fresh_store() -> None:
    store = MemoryStore()
    store.init_node_meta("n1", "c1")  # synced
    batch_of(store, 1)
    store.crash()
    assert store.replicas() == [] and store.node_meta() is not None


def test_memory_crash_voids_snapshot_installs_and_collects_their_chunks() -> None:
    store = MemoryStore()
    b = store.write_batch()
    b.apply("src", [("put", f"k{i}", encode_value(i)) for i in range(50)], 1)
    store.write(b)
    keys_before = len(store._engine.data)
    chunks = list(store.snapshot_chunks("src", max_chunk_bytes=100))
    inst = store.begin_snapshot_install("dst")
    inst.add_chunk(chunks[0])
    store.sync()  # even synced staging data is garbage until the switch is written
    store.crash()
    with pytest.raises(StorageError, match="interrupted"):
        inst.add_chunk(chunks[1])
    b = store.write_batch()
    with pytest.raises(StorageError, match="interrupted"):
        inst.finish(b, SnapshotMeta(index=1))
    assert len(store._engine.data) == keys_before  # the staged chunk and its garbage marker are gone
    assert not store.has_garbage
    assert store.replicas() == ["src"]


def test_memory_crash_after_a_destroy_that_was_not_synced() -> None:
    store = MemoryStore()
    batch_of(store, 1)
    store.sync()
    b = store.write_batch()
    b.destroy("p")
    store.write(b, sync=False)
    store.collect_garbage()
    assert store.replicas() == []
    store.crash()
    assert store.replicas() == ["p"] and store.get("p", "k1") == 1 and store.last_index("p") == 1


def test_memory_close_and_reopen_keeps_unsynced_writes_until_a_crash() -> None:
    store = MemoryStore()
    batch_of(store, 1)
    store.close()
    assert store.reopen() is store
    assert store.get("p", "k1") == 1  # a clean restart loses nothing...
    store.crash()
    assert store.replicas() == []  # ...but only synced writes survive a power cut


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from borough.raft.records import Entry, HardState
    from borough.store import LevelDBStore, encode_value

    store = LevelDBStore.open({path!r})
    for n in range(1, 100_000):  # the parent kills us long before; the bound makes sure we stop anyway
        b = store.write_batch()
        b.append("p", [Entry(term=1, index=n, data=b"cmd%d" % n)])
        b.apply("p", [("put", "k%d" % n, encode_value(n)), ("del", "k%d" % (n - 5))], n)
        b.set_hard_state("p", HardState(term=1, commit=n))
        for q in range(n % 3):
            b.apply("q%d" % q, [("put", "n", encode_value(n))], n)
        sync = n % 4 == 0
        store.write(b, sync=sync)
        if sync:
            print(n, flush=True)
    """
)


@pytest.mark.parametrize("kill_after", [1, 40])
def test_leveldb_sigkilled_writer_leaves_every_synced_write(tmp_path: pathlib.Path, kill_after: int) -> None:
    path = str(tmp_path / "data")
    script = CHILD.format(root=str(ROOT), path=path)
    acked = 0
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            for line in child.stdout:
                acked = int(line)
                if acked >= kill_after * 4:
                    os.kill(child.pid, signal.SIGKILL)  # somewhere in the middle of later writes
                    break
        finally:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the child stopped by itself before being killed"
    assert acked >= kill_after * 4

    store = LevelDBStore.open(path)
    try:
        n = store.applied_index("p")
        assert n >= acked, f"write {acked} was reported synced but only {n} survived"
        # Each round was one atomic batch: everything up to n is there, nothing of a later round.
        assert store.last_index("p") == n and store.hard_state("p").commit == n
        assert store.entries("p", 1, n + 1, 1 << 30) == [
            Entry(term=1, index=i, data=b"cmd%d" % i) for i in range(1, n + 1)
        ]
        assert dict(store.iterate("p")) == {f"k{i}": i for i in range(max(1, n - 4), n + 1)}
        for q in range(2):
            last_q = max((i for i in range(1, n + 1) if i % 3 > q), default=None)
            if last_q is not None:
                assert store.get(f"q{q}", "n") == last_q
        # And the store works on: the log continues.
        b = store.write_batch()
        b.append("p", [Entry(term=2, index=n + 1)])
        store.write(b)
        assert store.term("p", n + 1) == 2
    finally:
        store.close()
