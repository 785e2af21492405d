"""Bulk partition registration: the partitions callers create at the same time go into one ``_system`` entry.

This module owns the batching of directory registrations on the node that leads ``_system``: every partition
asked for while a ``register_many`` proposal is in flight waits in the next batch (at most
``MAX_REGISTER_BATCH`` a batch), which is proposed as one Raft entry as soon as the one in flight is applied.
So creating thousands of partitions costs a few entries, not one each (and one apply, one read-back and one
waiter wake-up per batch), while a lone creation is proposed at once. The proposal runs in a task of the
node's nursery, so a caller that gives up never strands the others of its batch. A failed proposal fails its
whole batch (each caller's router retries: registering twice is a no-op). It does not decide voters or rates
(the server does) and knows nothing of the wire.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from borough.errors import Unavailable
from borough.node.statemachine import encode_command
from borough.node.system_state import MAX_REGISTER_BATCH, register_many_command

__all__ = ["Registrar"]

#: Proposes one encoded ``_system`` command and returns its result (``Replica.propose`` of the leader).
Propose = Callable[[bytes], Awaitable[Any]]


class _Batch:
    __slots__ = ("done", "error", "items", "results", "slots")

    def __init__(self) -> None:
        self.items: list[tuple[str, tuple[str, ...], int]] = []
        self.slots: dict[str, int] = {}  # name -> index in items (a name asked twice shares its slot)
        self.results: list[Any] = []
        self.error: BaseException | None = None
        self.done = trio.Event()


class Registrar:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._queue: deque[_Batch] = deque()  # batches not proposed yet; only the last one takes more
        self._in_flight = False
        #: ``register_many`` entries proposed, and the partitions they carried.
        self.entries = 0
        self.registered = 0

    async def register(self, propose: Propose, name: str, voters: tuple[str, ...], table_version: int) -> Any:
        """Register ``name`` with ``voters`` (or get the record it already has) together with every other
        registration asked for meanwhile; returns the directory record (or ``Refused``)."""
        queue = self._queue
        if not queue or len(queue[-1].items) >= MAX_REGISTER_BATCH:
            queue.append(_Batch())
        batch = queue[-1]
        if not self._in_flight:
            self._in_flight = True
            self._nursery.start_soon(self._run, propose)
        slot = batch.slots.get(name)
        if slot is None:
            slot = batch.slots[name] = len(batch.items)
            batch.items.append((name, voters, table_version))
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results[slot]

    async def _run(self, propose: Propose) -> None:
        """Propose queued batches one at a time until none is left."""
        queue = self._queue
        try:
            while queue:
                # Let every caller that is runnable now join this batch before it is proposed.
                await trio.lowlevel.checkpoint()
                batch = queue.popleft()
                try:
                    results = await propose(encode_command(register_many_command(batch.items)))
                    if not isinstance(results, list) or len(results) != len(batch.items):
                        raise Unavailable(f"_system answered a bulk registration with {results!r:.100}")
                    batch.results = results
                    self.entries += 1
                    self.registered += len(results)
                except Exception as exc:  # every caller of the batch learns it; routing retries
                    batch.error = exc
                finally:
                    if not batch.results and batch.error is None:  # cancelled: the outcome is unknown
                        batch.error = Unavailable("the node stopped while registering partitions")
                    batch.done.set()
        finally:
            self._in_flight = False
            while queue:  # cancelled with callers waiting: fail them rather than strand them
                batch = queue.popleft()
                batch.error = Unavailable("the node stopped while registering partitions")
                batch.done.set()
