"""Group commit: many committers, one synced write; nobody woken before the write; failures propagate."""

from __future__ import annotations

import pathlib
import threading
from typing import Any

import pytest
import trio
import trio.testing

from borough.errors import StorageError
from borough.raft.records import Entry
from borough.store import InvalidLogOperation, LevelDBStore, MemoryStore, WriteBatch, encode_value, open_group_commit


class CountingStore(MemoryStore):
    """A MemoryStore that counts its synced writes and records what was durable when each one returned."""

    def __init__(self) -> None:
        super().__init__()
        self.synced_writes: list[int] = []  # ops per synced write
        self.log: list[tuple[bool, list[str]]] = []  # (synced?, partitions) per write, in order

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None:
        super().write(batch, sync=sync)
        self.log.append((sync, sorted({op[1] for op in batch._ops})))
        if sync:
            self.synced_writes.append(len(batch))


class GatedStore(CountingStore):
    """Writes block (in the worker thread) until the test opens the gate: a slow disk under our control."""

    blocking_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        super().write(batch, sync=sync)


async def write_in_flight(store: GatedStore) -> None:
    """Wait (in a thread, so without polling) until a write has entered the gated store."""
    assert await trio.to_thread.run_sync(store.entered.wait, 10)


def put_batch(store: MemoryStore, p: str, key: str, applied: int) -> WriteBatch:
    b = store.write_batch()
    b.apply(p, [("put", key, encode_value(key))], applied)
    return b


async def test_concurrent_committers_share_one_synced_write(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    woken: list[int] = []

    async def replica(i: int) -> None:
        await gc.commit(put_batch(store, f"p{i}", "k", 1))
        assert store.unsynced_writes == 0  # durable before we were woken
        woken.append(i)

    async with open_group_commit(store, offload=False) as gc, trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(replica, i)
    assert sorted(woken) == list(range(50))
    assert store.synced_writes == [50]
    assert (gc.writes, gc.batches_committed) == (1, 50)
    assert sorted(store.replicas()) == sorted(f"p{i}" for i in range(50))


async def test_batches_gather_while_a_write_is_in_flight() -> None:
    store = GatedStore()
    done: list[str] = []

    async def commit(name: str) -> None:
        await gc.commit(put_batch(store, name, "k", 1))
        done.append(name)

    async with open_group_commit(store, offload=True) as gc, trio.open_nursery() as nursery:
        nursery.start_soon(commit, "first")
        await write_in_flight(store)  # the first write is now in flight (blocked in its thread)
        for i in range(20):
            nursery.start_soon(commit, f"later{i}")
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # nobody is woken before the write returns
        assert len(gc._open.batches) == 20
        assert store.replicas() == []
        store.gate.set()
    assert store.synced_writes == [1, 20]
    assert sorted(done) == sorted(["first"] + [f"later{i}" for i in range(20)])
    assert done[0] == "first"


async def test_backpressure_bounds_the_pending_batches() -> None:
    store = GatedStore()
    async with open_group_commit(store, offload=True, max_pending_batches=3) as gc, trio.open_nursery() as nursery:
        nursery.start_soon(gc.commit, put_batch(store, "a", "k", 1))
        await write_in_flight(store)
        for i in range(5):
            nursery.start_soon(gc.commit, put_batch(store, f"b{i}", "k", 1))
        await trio.testing.wait_all_tasks_blocked()
        assert len(gc._open.batches) == 3  # the other two wait for room
        store.gate.set()
    assert sum(store.synced_writes) == 6 and len(store.synced_writes) == 3
    assert len(store.replicas()) == 6


async def test_byte_cap_lets_a_single_big_batch_through(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    async with open_group_commit(store, offload=False, max_pending_bytes=10) as gc:
        big = store.write_batch()
        big.apply("p", [("put", "k", encode_value("x" * 1000))], 1)
        await gc.commit(big)
    assert store.get("p", "k") == "x" * 1000


async def test_a_failed_write_fails_its_waiters_and_every_later_commit(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    errors: list[BaseException] = []

    async def commit(i: int) -> None:
        try:
            await gc.commit(put_batch(store, f"p{i}", "k", 1))
        except StorageError as exc:
            errors.append(exc)

    async with open_group_commit(store, offload=False) as gc:
        await gc.commit(put_batch(store, "ok", "k", 1))
        store.fail_writes(OSError(28, "No space left on device"))
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(commit, i)
        assert len(errors) == 5
        assert all("could not be made durable" in str(e) for e in errors)
        assert isinstance(gc.error, StorageError)
        store.fail_writes(None)  # the disk comes back, but we never pretend: the committer stays stopped
        with pytest.raises(StorageError, match="stopped after a failed write"):
            await gc.commit(put_batch(store, "late", "k", 1))
    assert store.replicas() == ["ok"]


async def test_an_invalid_batch_fails_alone(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    outcome: dict[str, Any] = {}

    async def commit(name: str, b: WriteBatch) -> None:
        try:
            await gc.commit(b)
            outcome[name] = "ok"
        except InvalidLogOperation as exc:
            outcome[name] = exc

    gap = store.write_batch()
    gap.append("p", [Entry(term=1, index=5)])  # the log is empty: index 5 would leave a gap
    async with open_group_commit(store, offload=False) as gc:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit, "good1", put_batch(store, "a", "k", 1))
            nursery.start_soon(commit, "bad", gap)
            nursery.start_soon(commit, "good2", put_batch(store, "b", "k", 1))
        assert outcome["good1"] == outcome["good2"] == "ok"
        assert isinstance(outcome["bad"], InvalidLogOperation)
        assert gc.error is None
        await gc.commit(put_batch(store, "c", "k", 1))  # and the committer goes on
    assert store.replicas() == ["a", "b", "c"]
    store.crash()
    assert store.replicas() == ["a", "b", "c"]  # the survivors of the invalid cycle were made durable


async def test_a_cancelled_committer_does_not_stop_its_batch(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    async with open_group_commit(store, offload=False) as gc:
        with trio.move_on_after(0) as scope:
            scope.cancel()
            await gc.commit(put_batch(store, "never", "k", 1))  # cancelled before it was submitted
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gc.commit, put_batch(store, "p", "k", 1))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        await gc.commit(put_batch(store, "q", "k", 1))
    assert "never" not in store.replicas()
    assert "q" in store.replicas()


async def test_leaving_the_block_writes_what_is_pending(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    results: list[str] = []

    async def late(gc: Any) -> None:
        await gc.commit(put_batch(store, "late", "k", 1))
        results.append("late")

    async with trio.open_nursery() as outer, open_group_commit(store, offload=False) as gc:
        outer.start_soon(late, gc)
        await trio.testing.wait_all_tasks_blocked()
    assert results == ["late"] and store.replicas() == ["late"]
    with pytest.raises(StorageError, match="closed"):
        await gc.commit(put_batch(store, "after", "k", 1))


async def test_leaving_by_an_error_fails_pending_waiters() -> None:
    store = GatedStore()
    errors: list[BaseException] = []

    async def waiter(gc: Any, name: str) -> None:
        try:
            await gc.commit(put_batch(store, name, "k", 1))
        except StorageError as exc:
            errors.append(exc)

    class Boom(Exception):
        pass

    with pytest.RaisesGroup(Boom):  # the outer nursery wraps it; open_group_commit itself does not
        async with trio.open_nursery() as outer, open_group_commit(store, offload=True) as gc:
            outer.start_soon(waiter, gc, "in-flight")
            await write_in_flight(store)
            outer.start_soon(waiter, gc, "pending")
            await trio.testing.wait_all_tasks_blocked()
            store.gate.set()  # the in-flight write finishes even though we are leaving
            raise Boom
    assert [str(e) for e in errors] == [
        "this batch could not be made durable: the group committer was closed before this batch was written: "
        "it is not durable"
    ]
    assert "in-flight" in store.replicas()
    assert "pending" not in store.replicas()


async def test_an_error_in_the_block_comes_out_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    with pytest.raises(KeyError, match="mine"):
        async with open_group_commit(store, offload=False):
            raise KeyError("mine")


async def test_idle_committer_collects_garbage(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    b = store.write_batch()
    b.apply("p", [("put", f"k{i}", encode_value(i)) for i in range(100)], 1)
    store.write(b)
    async with open_group_commit(store, offload=False, garbage_step=7) as gc:
        d = store.write_batch()
        d.destroy("p")
        await gc.commit(d)
        assert store.has_garbage
        await trio.testing.wait_all_tasks_blocked()
        assert not store.has_garbage
    assert not any(k.startswith(b"\x05") for k in store._engine.data)


async def test_group_commit_on_leveldb_in_a_thread(tmp_path: pathlib.Path) -> None:
    store = LevelDBStore.open(tmp_path / "db")
    try:
        async with open_group_commit(store) as gc, trio.open_nursery() as nursery:

            async def replica(i: int) -> None:
                for n in range(1, 21):
                    b = store.write_batch()
                    b.append(f"p{i}", [Entry(term=1, index=n, data=b"x")])
                    await gc.commit(b)

            for i in range(10):
                nursery.start_soon(replica, i)
        assert gc.batches_committed == 200
        assert gc.writes < 200  # some cycles carried several batches
        assert all(store.last_index(f"p{i}") == 20 for i in range(10))
    finally:
        store.close()


async def test_unsynced_batches_skip_fsync_and_wait_behind_a_synced_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = GatedStore()
    store.gate.set()
    async with open_group_commit(store) as gc:
        # Nothing in flight: written at once, without sync (a crash loses it).
        await gc.commit(put_batch(store, "p", "a", 1), sync=False)
        assert store.get("p", "a") == "a" and store.synced_writes == []
        # Behind a synced write in flight, it is written as soon as that write ends, without an fsync of its own
        # (it never waits for the next synced write), and before the batches waiting for that one.
        store.gate.clear()
        store.entered.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gc.commit, put_batch(store, "p", "b", 2))
            await write_in_flight(store)
            done = trio.Event()

            async def unsynced() -> None:
                await gc.commit(put_batch(store, "p", "c", 3), sync=False)
                done.set()

            nursery.start_soon(unsynced)
            nursery.start_soon(gc.commit, put_batch(store, "q", "d", 1))  # synced: waits for the next write
            await trio.sleep(1)
            assert not done.is_set()
            store.gate.set()
        # b's synced write, then c alone and unsynced, then d's synced write.
        assert [(sync, parts) for sync, parts in store.log[1:]] == [(True, ["p"]), (False, ["p"]), (True, ["q"])]
        assert store.get("p", "c") == "c" and store.get("q", "d") == "d"
    store.crash()
    assert store.get("p", "b") == "b"  # the synced write made the earlier unsynced one durable too
    assert store.get("p", "a") == "a"


# --- submit: the callback form the node's rounds use -----------------------------------------------------------


async def test_submitted_batches_share_one_synced_write_and_are_told_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = CountingStore()
    told: list[tuple[str, list[BaseException | None], bool]] = []

    def done(name: str) -> Any:
        # What was durable when the submitter was told: the write must be over by then.
        return lambda errors: told.append((name, errors, store.get(name, "k") == "k"))

    async with open_group_commit(store, offload=False) as gc:
        gc.submit([put_batch(store, "a", "k", 1), put_batch(store, "b", "k", 1)], sync=True, done=done("a"))
        gc.submit([put_batch(store, "c", "k", 1)], sync=True, done=done("c"))
        assert told == []  # nothing is written before the writer runs
        await trio.testing.wait_all_tasks_blocked()
        assert told == [("a", [None, None], True), ("c", [None], True)]
        assert store.synced_writes == [3] and gc.writes == 1
    store.crash()
    assert store.replicas() == ["a", "b", "c"]


async def test_an_unsynced_submission_is_written_and_told_before_submit_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = CountingStore()
    told: list[list[BaseException | None]] = []
    async with open_group_commit(store, offload=False) as gc:
        gc.submit([put_batch(store, "p", "k", 1)], sync=False, done=told.append)
        assert told == [[None]] and store.get("p", "k") == "k" and store.synced_writes == []


async def test_an_unsynced_submission_behind_a_synced_write_is_told_when_that_write_ends() -> None:
    store = GatedStore()
    told: list[str] = []
    both = trio.Event()

    def unsynced(errors: list[BaseException | None]) -> None:
        told.append(f"unsynced {errors}")
        both.set()

    async with open_group_commit(store) as gc:
        gc.submit([put_batch(store, "p", "a", 1)], sync=True, done=lambda errors: told.append("synced"))
        await write_in_flight(store)
        gc.submit([put_batch(store, "q", "b", 1)], sync=False, done=unsynced)
        assert told == []
        store.gate.set()
        await both.wait()
    assert told == ["synced", "unsynced [None]"]
    assert [sync for sync, _ in store.log] == [True, False]


async def test_a_submission_is_told_which_of_its_batches_were_invalid(autojump_clock: trio.testing.MockClock) -> None:
    store = CountingStore()
    told: list[list[BaseException | None]] = []
    gap = store.write_batch()
    gap.append("p", [Entry(term=1, index=5)])  # the log is empty: index 5 would leave a gap
    async with open_group_commit(store, offload=False) as gc:
        gc.submit([put_batch(store, "a", "k", 1), gap, put_batch(store, "b", "k", 1)], sync=True, done=told.append)
        await trio.testing.wait_all_tasks_blocked()
        assert gc.error is None
    [(first, bad, last)] = told
    assert first is None and last is None and isinstance(bad, InvalidLogOperation)
    store.crash()
    assert store.replicas() == ["a", "b"]


async def test_a_failing_callback_stops_neither_the_writer_nor_the_others(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = CountingStore()
    told: list[list[BaseException | None]] = []

    def broken(errors: list[BaseException | None]) -> None:
        raise RuntimeError("a submitter's bug")

    async with open_group_commit(store, offload=False) as gc:
        gc.submit([put_batch(store, "a", "k", 1)], sync=True, done=broken)
        gc.submit([put_batch(store, "b", "k", 1)], sync=True, done=told.append)
        await trio.testing.wait_all_tasks_blocked()
        await gc.commit(put_batch(store, "c", "k", 1))  # the writer goes on
    assert told == [[None]] and "a submitter's callback failed" in caplog.text
    assert store.replicas() == ["a", "b", "c"]


async def test_submit_refuses_once_closed_and_closing_tells_what_was_pending() -> None:
    store = GatedStore()
    told: list[list[BaseException | None]] = []
    with pytest.raises(RuntimeError, match="stop"):
        async with open_group_commit(store) as gc:
            gc.submit([put_batch(store, "p", "a", 1)], sync=True, done=lambda errors: None)
            await write_in_flight(store)
            gc.submit([put_batch(store, "p", "b", 2)], sync=True, done=told.append)  # waits for the next write
            store.gate.set()
            raise RuntimeError("stop")  # leaving by an error: what is pending is not written
    [[error]] = told
    assert isinstance(error, StorageError) and "not durable" in str(error)
    with pytest.raises(StorageError, match="closed"):
        gc.submit([put_batch(store, "p", "c", 3)], sync=True, done=told.append)
    assert len(told) == 1


async def test_submissions_and_commits_mixed_on_leveldb_in_threads_each_end_once(tmp_path: pathlib.Path) -> None:
    """The threaded path (``submit`` starting writes itself, the thread's return landing them): submitters of
    synced and unsynced batches and ``commit`` callers, all at once; each is told exactly once, a synced
    submitter only once its batch is on disk, and everything told written is there after a reopen."""
    store = LevelDBStore.open(tmp_path / "db")
    told: dict[str, int] = {}
    try:
        async with open_group_commit(store) as gc, trio.open_nursery() as nursery:

            async def submitter(i: int) -> None:
                for n in range(1, 41):
                    b = store.write_batch()
                    b.append(f"s{i}", [Entry(term=1, index=n, data=b"x")])
                    landed = trio.Event()

                    def done(
                        errors: list[BaseException | None], name: str = f"s{i}-{n}", ev: trio.Event = landed
                    ) -> None:
                        assert errors == [None] and name not in told
                        told[name] = store.last_index(name.split("-")[0])
                        ev.set()

                    await gc.room()
                    gc.submit([b], sync=n % 3 != 0, done=done)
                    await landed.wait()

            async def committer(i: int) -> None:
                for n in range(1, 21):
                    b = store.write_batch()
                    b.append(f"c{i}", [Entry(term=1, index=n, data=b"y")])
                    await gc.commit(b, sync=n % 4 != 0)

            for i in range(6):
                nursery.start_soon(submitter, i)
                nursery.start_soon(committer, i)
        assert len(told) == 6 * 40
        assert all(told[f"s{i}-{n}"] == n for i in range(6) for n in range(1, 41))  # written when told
    finally:
        store.close()
    store = LevelDBStore.open(tmp_path / "db")
    try:
        assert all(store.last_index(f"s{i}") == 40 and store.last_index(f"c{i}") == 20 for i in range(6))
    finally:
        store.close()


class BlockingCountingStore(CountingStore):
    """A CountingStore whose writes count as blocking (so the committer offloads them); ``slow`` makes each synced
    write take that many (mock clock) seconds."""

    blocking_writes = True

    def __init__(self, clock: trio.testing.MockClock | None = None, slow: float = 0.0) -> None:
        super().__init__()
        self.clock, self.slow = clock, slow

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None:
        if sync and self.clock is not None and self.slow:
            self.clock.jump(self.slow)
        super().write(batch, sync=sync)


async def test_a_synced_submission_is_written_at_once_when_nothing_else_is_ready() -> None:
    store = BlockingCountingStore()
    told: list[list[BaseException | None]] = []
    async with open_group_commit(store) as gc:
        await trio.testing.wait_all_tasks_blocked()  # (the writer task parked: nothing is ready to run)
        gc.submit([put_batch(store, "p", "k", 1)], sync=True, done=told.append)
        assert told == [[None]] and store.synced_writes == [1] and gc.inline_writes == 1


async def test_a_synced_submission_goes_to_a_thread_while_other_tasks_are_ready() -> None:
    store = BlockingCountingStore()
    told: list[list[BaseException | None]] = []
    landed = trio.Event()

    def done(errors: list[BaseException | None]) -> None:
        told.append(errors)
        landed.set()

    async with open_group_commit(store) as gc, trio.open_nursery() as nursery:
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(trio.sleep, 0)  # another task ready to run: the event loop has other work
        gc.submit([put_batch(store, "p", "k", 1)], sync=True, done=done)
        assert told == [] and gc.inline_writes == 0
        await landed.wait()
    assert told == [[None]] and store.synced_writes == [1]


async def test_a_slow_write_on_the_trio_thread_sends_the_next_ones_to_a_thread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from borough.store.group_commit import INLINE_LIMIT

    store = BlockingCountingStore(autojump_clock, slow=INLINE_LIMIT * 5)
    told: list[list[BaseException | None]] = []
    async with open_group_commit(store) as gc:
        await trio.testing.wait_all_tasks_blocked()
        gc.submit([put_batch(store, "p", "a", 1)], sync=True, done=told.append)
        assert told == [[None]] and gc.inline_writes == 1  # written at once, and found slow
        store.slow = 0.0
        await trio.testing.wait_all_tasks_blocked()
        landed = trio.Event()
        gc.submit([put_batch(store, "p", "b", 2)], sync=True, done=lambda errors: (told.append(errors), landed.set()))
        assert len(told) == 1 and gc.inline_writes == 1  # the disk was slow: this one goes to a thread
        await landed.wait()
    assert told == [[None], [None]]
