"""Group commit: the writes of every replica of a node go to disk together, one synced write per cycle.

This module owns the trio side of writing: every batch handed in since the last write is merged into one
``WriteBatch`` and written with ``sync=True``, and only then are the committers of that cycle woken (or, for
``submit``, called back). While one write is in flight, new batches gather for the next one; that is what makes
synced throughput scale with the number of concurrent committers. When the store's writes block, a write runs
in a worker thread, so the event loop goes on while the disk syncs; except that a submission finding the disk
free and the event loop with nothing else ready to run is written at once on the trio thread (no thread to wake,
no callback to land: on a lone write's path that saves more than it costs), unless such writes have lately
been slow (``INLINE_LIMIT``). It knows nothing of the store's layout or engine.

Failures: a batch whose log ops do not fit its partition's state (``InvalidLogOperation``, a caller bug)
fails only its own committer. Any other failure of a write fails every committer of that cycle with
``StorageError`` and the committer refuses every later batch: we never pretend something is durable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import outcome
import trio

from borough.errors import StorageError
from borough.runnable import tasks_runnable
from borough.store.base import InvalidLogOperation, Store
from borough.store.batch import WriteBatch

__all__ = ["Done", "GroupCommit", "open_group_commit"]

logger = logging.getLogger(__name__)

#: Seconds a synced write made on the trio thread may take before the next ``INLINE_BACKOFF`` writes go to a
#: worker thread whatever the event loop is doing: a slow disk must not hold the event loop.
INLINE_LIMIT = 0.002
INLINE_BACKOFF = 256


def _closed_error() -> StorageError:
    return StorageError("the group committer was closed before this batch was written: it is not durable")


#: Told what became of the batches handed to ``GroupCommit.submit``: each one's error, or None once written.
Done = Callable[[list[BaseException | None]], None]


class _Cycle:
    """The batches that go to disk in one synced write, and what became of each."""

    __slots__ = ("batches", "callbacks", "done", "nbytes", "results", "sync", "waiters")

    def __init__(self) -> None:
        self.batches: list[WriteBatch] = []
        self.nbytes = 0
        self.sync = False  # whether any batch of the cycle must be durable
        self.results: list[BaseException | None] = []
        self.done = trio.Event()
        #: The submitters' callbacks (``submit``), each with the slice of ``batches`` it handed in.
        self.callbacks: list[tuple[int, int, Done]] = []
        self.waiters = 0  # batches of committers waiting in ``commit`` (the rest were submitted)

    def add(self, batches: list[WriteBatch], done: Done) -> None:
        start = len(self.batches)
        self.batches.extend(batches)
        self.nbytes += sum(batch.nbytes for batch in batches)
        self.callbacks.append((start, len(self.batches), done))

    def end(self) -> None:
        """The cycle's write is over (``results`` filled): wake the committers and tell the submitters."""
        self.done.set()
        results = self.results
        for start, stop, done in self.callbacks:
            try:
                done(results[start:stop])
            except Exception:  # a submitter's bug must not stop the writer of every replica
                logger.exception("group commit: a submitter's callback failed")


class GroupCommit:
    """Made by ``open_group_commit``; ``await commit(batch)`` returns once the batch is durable."""

    def __init__(
        self,
        store: Store,
        *,
        offload: bool,
        max_pending_batches: int,
        max_pending_bytes: int,
        collect_garbage: bool,
        garbage_step: int,
    ) -> None:
        if max_pending_batches < 1 or max_pending_bytes < 1:
            raise ValueError("max_pending_batches and max_pending_bytes must be at least 1")
        self.store = store
        self._offload = offload and store.blocking_writes
        self._max_batches = max_pending_batches
        self._max_bytes = max_pending_bytes
        self._collect_garbage = collect_garbage
        self._garbage_step = garbage_step
        self._open = _Cycle()
        #: Unsynced batches that arrived while a synced write was in flight: written (without fsync) as soon
        #: as it ends, before the next synced write, so they never wait for an fsync of their own.
        self._unsynced = _Cycle()
        self._in_flight = False
        self._landing: trio.Event | None = None  # set once the write in a worker thread has been ended
        self._stopping = False  # the writer task is ending: no write is started any more
        self._inline_skip = 0  # synced writes still to send to a worker thread after a slow one on the trio thread
        self._work = trio.lowlevel.ParkingLot()  # the writer waits here for batches
        self._space = trio.lowlevel.ParkingLot()  # committers wait here for room in the open cycle
        self._idle = trio.lowlevel.ParkingLot()  # the drain at close waits here
        self._error: BaseException | None = None
        self._closed = False
        self._draining = False
        #: Synced writes made (each carries one or more batches), and batches committed in them.
        self.writes = 0
        #: Synced writes made on the trio thread (``submit`` found nothing else ready to run).
        self.inline_writes = 0
        self.batches_committed = 0
        #: Told of every write cycle: how many batches it carried, whether it synced, and the seconds it took.
        self.observe: Callable[[int, bool, float], None] | None = None

    @property
    def offloads(self) -> bool:
        """Whether blocking store work runs in worker threads (production) rather than on the trio thread
        (simulation, in-memory stores): other big store reads, such as snapshot chunks, follow the same rule."""
        return self._offload

    @property
    def error(self) -> BaseException | None:
        """The failure that stopped this committer, or None."""
        return self._error

    def _check(self) -> None:
        if self._error is not None:
            raise StorageError(
                f"the group committer stopped after a failed write ({self._error}); nothing more is written: "
                "restart the node once the disk is fixed"
            ) from self._error
        if self._closed:
            raise StorageError("the group committer is closed; batches can no longer be committed")

    async def commit(self, batch: WriteBatch, *, sync: bool = True) -> None:
        """Write ``batch`` in the next synced write and return once it is durable.

        With ``sync=False`` the batch only has to be written, not synced (Raft's commit index and applied
        state, which are recovered from the synced log after a crash): it is written without fsync on the trio
        thread, which takes microseconds, at once or, while a synced write is in flight, as soon as that write
        ends (never behind an fsync of its own). It is durable once any later synced write is. Batches of one
        committer are written in the order it commits them (a committer waits for each before the next); batches
        of different committers, which touch different partitions, may be reordered.

        Waits first while the pending batches or bytes are at their cap (backpressure). If cancelled while
        waiting for room, the batch is not written; if cancelled later, it may or may not have been written.
        Raises ``InvalidLogOperation`` (this batch only; nothing of it written) or ``StorageError``.
        """
        if batch._store is not self.store:
            raise ValueError("this write batch belongs to another store")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check()
        if not sync:
            # Nothing to sync: write it now, on this thread (microseconds), or, while a synced write holds the
            # store, right after that write, but never behind an fsync it does not need. Batches still waiting in
            # the open cycle may go after it: each committer has one batch at a time and batches of different
            # committers touch different partitions, so their order does not matter (see ``commit``).
            if not self._in_flight:
                error = self._write_batches([batch], False)[0]
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                cycle = self._unsynced
                slot = len(cycle.batches)
                cycle.batches.append(batch)
                await cycle.done.wait()
                error = cycle.results[slot]
            if error is None:
                return
            if isinstance(error, InvalidLogOperation):
                raise error
            raise StorageError(f"this batch could not be written: {error}") from error
        while self._open.batches and (
            len(self._open.batches) >= self._max_batches or self._open.nbytes + batch.nbytes > self._max_bytes
        ):
            await self._space.park()
            self._check()
        cycle = self._open
        slot = len(cycle.batches)
        cycle.batches.append(batch)
        cycle.nbytes += batch.nbytes
        cycle.sync = cycle.sync or sync
        cycle.waiters += 1
        self._work.unpark_all()
        await cycle.done.wait()
        error = cycle.results[slot]
        if error is None:
            return
        if isinstance(error, InvalidLogOperation):
            raise error
        raise StorageError(f"this batch could not be made durable: {error}") from error

    def submit(self, batches: list[WriteBatch], *, sync: bool, done: Done) -> None:
        """Hand ``batches`` to the writer without waiting: ``done(errors)`` is called on the trio thread with
        each batch's error (or None) once they are written, and with ``sync`` durable, exactly as ``commit``
        would return or raise for each (an error is ``InvalidLogOperation`` or ``StorageError``).

        An unsynced submission made while no synced write is in flight is written at once, and ``done`` is
        called before ``submit`` returns; so is a synced one that finds the disk free and the event loop with
        nothing else ready to run (see the module docstring). Otherwise ``done`` is called after the write that
        carries the batches (the next synced one, or the unsynced write right after the one in flight), when it
        lands. Never blocks and never refuses for lack of room: a submitter bounds what it has in flight itself
        and waits for ``room()`` before it adds more. Raises ``StorageError`` (and calls nothing) if the committer
        has stopped or is closed."""
        self._check()
        for batch in batches:
            if batch._store is not self.store:
                raise ValueError("this write batch belongs to another store")
        if not sync:
            if not self._in_flight:
                done(self._write_batches(batches, False))
                return
            self._unsynced.add(batches, done)
            return
        cycle = self._open
        cycle.add(batches, done)
        cycle.sync = True
        if self._offload and not self._in_flight and not self._stopping and not cycle.waiters:
            # The disk is free: the fsync starts now, not a pass later in the writer task.
            if self._inline_skip:
                self._inline_skip -= 1
            elif not tasks_runnable():
                # (Nothing else was ready to run: see the module docstring.)
                self.inline_writes += 1
                if self._write_now(self._begin()) > INLINE_LIMIT:
                    self._inline_skip = INLINE_BACKOFF
                return
            self._launch(self._begin())
        else:
            self._work.unpark_all()

    @property
    def writes_at_once(self) -> bool:
        """Whether an unsynced submission made now is written before ``submit`` returns: no synced write is in
        flight in a worker thread, and the committer is open."""
        return not self._in_flight and self._error is None and not self._closed

    @property
    def has_room(self) -> bool:
        """Whether ``room()`` would return at once: the batches waiting for the next synced write are under their
        cap."""
        open_ = self._open
        return not open_.batches or (len(open_.batches) < self._max_batches and open_.nbytes < self._max_bytes)

    async def room(self) -> None:
        """Wait while the batches waiting for the next synced write are at their cap (see ``submit``)."""
        while not self.has_room:
            await self._space.park()
            self._check()

    # ------------------------------------------------------------------------------------ the writer task

    async def _run(self) -> None:
        try:
            while True:
                if self._in_flight or not self._open.batches or self._closed:
                    if self._in_flight or self._closed:  # a write in a thread (``_landed`` starts the next one, or
                        # wakes us), or the block was left: what is pending is not written (we are cancelled)
                        await self._work.park()
                        continue
                    if self._collect_garbage and not self._draining and self.store.has_garbage and not self._error:
                        await self._collect_step()
                        await trio.lowlevel.checkpoint()
                        continue
                    self._idle.unpark_all()
                    await self._work.park()
                    continue
                if self._open.waiters:
                    # Let every task that is runnable right now add its batch to this cycle first. (Not for a cycle
                    # of submissions alone: the node's rounds hand in a whole round at once, and ``submit`` starts
                    # the write itself when the disk is free.)
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    if self._in_flight or not self._open.batches:
                        continue  # (a submission started it meanwhile)
                cycle = self._begin()
                if self._offload and cycle.sync:
                    self._launch(cycle)
                    continue
                self._write_now(cycle)
        finally:
            self._stopping = True  # ``_landed`` starts nothing more
            if self._in_flight and self._landing is not None:
                # The thread is never abandoned: it writes to a store that is closed once we return.
                with trio.CancelScope(shield=True):
                    await self._landing.wait()
            self._closed = True
            for left in (self._open, self._unsynced):
                left.results = [_closed_error()] * len(left.batches)
                left.end()
            self._space.unpark_all()
            self._idle.unpark_all()

    def _begin(self) -> _Cycle:
        """Take the open cycle for a write; new batches gather in a fresh one."""
        cycle, self._open = self._open, _Cycle()
        self._space.unpark_all()
        self._in_flight = True
        return cycle

    def _launch(self, cycle: _Cycle) -> None:
        """Start the synced write of ``cycle`` in a worker thread; ``_landed`` ends it on the trio thread, in the
        callback the thread's return schedules (no task of ours is woken for it). ``trio.to_thread.run_sync``
        without what a synced write per cycle need not pay for: naming the OS thread twice, copying the context,
        a capacity limiter, and a task switch."""
        started = trio.current_time()
        token = trio.lowlevel.current_trio_token()
        self._landing = landing = trio.Event()

        def deliver(result: outcome.Outcome[None]) -> None:  # in the worker thread
            token.run_sync_soon(self._landed, cycle, started, landing)

        try:
            trio.lowlevel.start_thread_soon(partial(self._write, cycle), deliver)
        except BaseException as exc:  # no thread could be started: the write is not made
            self._error = self._error or exc
            logger.error("group commit: could not start a writer thread; no further writes will be made", exc_info=True)
            cycle.results = [exc] * len(cycle.batches)
            self._landed(cycle, started, landing)

    def _write_now(self, cycle: _Cycle) -> float:
        """Write ``cycle`` on the trio thread and end it; returns the seconds the write itself took."""
        started = trio.current_time()
        try:
            self._write(cycle)
        finally:
            took = trio.current_time() - started
            self._end(cycle, started)
        return took

    def _landed(self, cycle: _Cycle, started: float, landing: trio.Event) -> None:
        """The worker thread wrote ``cycle`` (``_write`` filled its results): end it, then start the next write
        or let the writer task see to what is left. Runs as a ``run_sync_soon`` callback: it raises nothing."""
        try:
            self._end(cycle, started)
            landing.set()
            following = self._open
            if following.batches and not following.waiters and not (self._stopping or self._closed or self._error):
                self._launch(self._begin())
            elif (
                following.batches
                or self._stopping
                or self._closed
                or (self._collect_garbage and self.store.has_garbage)
            ):
                self._work.unpark_all()
            else:
                self._idle.unpark_all()
        except BaseException:  # a bug of ours: never out of a run_sync_soon callback (it would crash the loop)
            logger.exception("group commit: ending a write failed")
            landing.set()
            self._work.unpark_all()

    def _end(self, cycle: _Cycle, started: float) -> None:
        """The synced write of ``cycle`` is over (or will never be made): tell its committers, then write the
        unsynced batches that waited for it. Once per cycle; it raises nothing."""
        if cycle.done.is_set():
            return
        self._in_flight = False
        took = trio.current_time() - started
        written = bool(cycle.results)
        if not written:  # cancelled before the write started (a started one always ends)
            cycle.results = [_closed_error()] * len(cycle.batches)
        cycle.end()  # (first: the committers' callbacks send what waited for the write; the metrics can wait)
        if written:
            self._observe(cycle, took)
        if self._unsynced.batches:
            self._write_unsynced()

    def _write_unsynced(self) -> None:
        """The unsynced batches that waited for the synced write that just ended: one write, no fsync."""
        cycle, self._unsynced = self._unsynced, _Cycle()
        started = trio.current_time()
        cycle.results = self._write_batches(cycle.batches, False)
        took = trio.current_time() - started
        cycle.end()
        self._observe(cycle, took)

    def _observe(self, cycle: _Cycle, took: float) -> None:
        """Report a finished write to ``observe`` (the metrics); never raises (``_end`` raises nothing)."""
        if self.observe is not None:
            try:
                self.observe(len(cycle.batches), cycle.sync, took)
            except Exception:
                logger.exception("group commit: observing a write failed")

    def _write(self, cycle: _Cycle) -> None:
        """One cycle (in a worker thread when offloading): the merged batch as one synced write."""
        cycle.results = self._write_batches(cycle.batches, cycle.sync)

    def _write_batches(self, batches: list[WriteBatch], sync: bool = True) -> list[BaseException | None]:
        store = self.store
        if self._error is not None:
            return [self._error] * len(batches)
        try:
            if len(batches) == 1:
                merged = batches[0]
            else:
                merged = store.write_batch()
                for b in batches:
                    merged.extend(b)
            try:
                store.write(merged, sync=sync)
                results: list[BaseException | None] = [None] * len(batches)
            except InvalidLogOperation as exc:
                if len(batches) == 1:
                    return [exc]
                # Nothing was written. Find the culprits and write the rest, then make it all durable at once.
                results = []
                for b in batches:
                    try:
                        store.write(b, sync=False)
                        results.append(None)
                    except InvalidLogOperation as bad:
                        results.append(bad)
                if sync:
                    store.sync()
        except BaseException as exc:
            self._error = exc
            logger.error("group commit: a synced write failed; no further writes will be made", exc_info=True)
            return [exc] * len(batches)
        self.writes += 1
        self.batches_committed += sum(1 for r in results if r is None)
        return results

    async def _collect_step(self) -> None:
        def step() -> None:
            try:
                self.store.collect_garbage(self._garbage_step)
            except BaseException as exc:
                self._error = exc
                logger.error("group commit: garbage collection failed; no further writes will be made", exc_info=True)

        if self._offload:
            await trio.to_thread.run_sync(step)
        else:
            step()

    async def _drain(self) -> None:
        self._draining = True
        while self._open.batches or self._in_flight or self._unsynced.batches:
            await self._idle.park()


@asynccontextmanager
async def open_group_commit(
    store: Store,
    *,
    offload: bool = True,
    max_pending_batches: int = 4096,
    max_pending_bytes: int = 64 << 20,
    collect_garbage: bool = True,
    garbage_step: int = 4096,
) -> AsyncIterator[GroupCommit]:
    """Run a group committer for ``store`` while the block runs.

    ``offload=True`` runs each write in a worker thread (for LevelDB; a ``MemoryStore`` always writes inline);
    ``offload=False`` writes inline, which the simulator needs for virtual time and determinism. While idle,
    the writer also deletes garbage (destroyed replicas, replaced data) ``garbage_step`` keys at a time.
    Leaving the block normally first writes what is pending; leaving it by an exception does not.
    """
    gc = GroupCommit(
        store,
        offload=offload,
        max_pending_batches=max_pending_batches,
        max_pending_bytes=max_pending_bytes,
        collect_garbage=collect_garbage,
        garbage_step=garbage_step,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gc._run)
            try:
                yield gc
                await gc._drain()
            finally:
                gc._closed = True
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The writer task raises nothing of its own (it reports failures to the committers), so a group with
        # one exception holds what the caller's block raised: give it back as raised, not wrapped.
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        context, suppress = exc.__context__, exc.__suppress_context__
        try:
            raise exc  # noqa: B904 - re-raising the caller's own exception, its context restored below
        finally:
            exc.__context__, exc.__suppress_context__ = context, suppress
