"""Simulated clients: run register operations against a ``SimCluster`` and record them in a ``History``.

Owns how one client operation is carried out and how its outcome is recorded (the mapping is the point of this
module: an operation is FAILED only when it certainly had no effect, UNKNOWN whenever it may have reached a
leader; ``NotFound`` on a get is an ok get of NOT_FOUND; stale reads are never recorded), and ``cas_handler``,
the request handler that gives the workload an atomic compare-and-set on a partition's leader. Keys in the
history are ``(partition, key)`` pairs. Must not know fault schedules or what the checks conclude.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Final

import trio

import borough
from borough.errors import BoroughError, NotFound
from borough.partition import Partition
from borough.testing.history import NOT_FOUND, History, Kind, Operation, Status

__all__ = ["CAS_OP", "ClientOps", "cas_handler"]

CAS_OP: Final = "borough.testing.cas"


async def cas_handler(request: borough.Request) -> Any:
    """The workload's request handler: ``{"op": CAS_OP, "key": k, "expected": e, "value": v}`` sets ``k`` to
    ``v`` if it holds ``e`` (None: if it is absent) and returns whether it did; ``{"op": CAS_OP, "key": k,
    "value": v}`` puts (``v`` None: deletes) and returns True.

    Read-then-write is atomic because the handler is a transaction (docs/transactions.md): its read is validated
    when its entry applies, against any write of the partition, through this handler or not; no lock needed."""
    body = request.body
    if not isinstance(body, dict) or body.get("op") != CAS_OP:
        raise ValueError(f"cas_handler only knows {CAS_OP!r} requests, got {body!r:.80}")
    key, value = body["key"], body["value"]
    partition = request.partition
    if "expected" in body:
        current = await partition.get(key, default=None)
        if current != body["expected"]:
            return False
    if value is None:
        await partition.delete(key)
    else:
        await partition.put(key, value)
    return True


class ClientOps:
    """One simulated client's operations, each recorded in ``history`` under ``client_id`` and in the trace.

    ``timeout`` bounds each operation (virtual seconds) on top of the client's request timeout. Values written
    must be unique across the history for the checks to name the write a read saw; ``record`` is called with
    a line for the trace of each outcome (``SimCluster.record`` fits)."""

    def __init__(
        self,
        client: Any,
        history: History,
        client_id: Hashable,
        *,
        timeout: float = 5.0,
        record: Any = None,
    ) -> None:
        self.client = client
        self.history = history
        self.client_id = client_id
        self.timeout = timeout
        self._record = record
        #: The last value this client saw for each key (NOT_FOUND when it saw none), for choosing cas arguments.
        self.seen: dict[tuple[str, str], object] = {}

    def _partition(self, name: str) -> Partition:
        partition: Partition = self.client.partition(name)
        return partition

    def _done(self, op: Operation) -> None:
        if self._record is not None:
            self._record("op", self.client_id, op.call(), op.outcome())

    async def get(self, partition: str, key: str) -> Operation:
        op = self.history.invoke(self.client_id, Kind.GET, (partition, key), time=trio.current_time())
        try:
            with trio.fail_after(self.timeout):
                value = await self._partition(partition).get(key)
        except NotFound:
            op = self.history.ok(op, NOT_FOUND, time=trio.current_time())
        except (BoroughError, trio.TooSlowError, OSError) as exc:
            # A read that did not answer observed nothing; the checker drops it.
            op = self.history.unknown(op, exc, time=trio.current_time())
        else:
            op = self.history.ok(op, value, time=trio.current_time())
        if op.status is Status.OK:
            self.seen[(partition, key)] = op.result
        self._done(op)
        return op

    async def put(self, partition: str, key: str, value: object, *, via_handler: bool = False) -> Operation:
        """Put through the partition API, or (``via_handler``) through ``cas_handler``'s lock."""
        op = self.history.invoke(self.client_id, Kind.PUT, (partition, key), value, time=trio.current_time())
        if via_handler:
            return await self._write(op, self.client.request(partition, {"op": CAS_OP, "key": key, "value": value}))
        return await self._write(op, self._partition(partition).put(key, value))

    async def delete(self, partition: str, key: str, *, via_handler: bool = False) -> Operation:
        """Delete through the partition API, or (``via_handler``) through ``cas_handler``'s lock."""
        op = self.history.invoke(self.client_id, Kind.DELETE, (partition, key), time=trio.current_time())
        if via_handler:
            return await self._write(op, self.client.request(partition, {"op": CAS_OP, "key": key, "value": None}))
        return await self._write(op, self._partition(partition).delete(key))

    async def cas(self, partition: str, key: str, expected: object, value: object) -> Operation:
        """Compare-and-set through ``cas_handler`` (the cluster must run it, and every write of the key must go
        through it for the cas to be atomic)."""
        op = self.history.invoke(
            self.client_id, Kind.CAS, (partition, key), value, expected=expected, time=trio.current_time()
        )
        body = {"op": CAS_OP, "key": key, "expected": None if expected is NOT_FOUND else expected, "value": value}
        return await self._write(op, self.client.request(partition, body))

    async def _write(self, op: Operation, call: Any) -> Operation:
        try:
            with trio.fail_after(self.timeout):
                result = await call
        except (BoroughError, trio.TooSlowError, OSError) as exc:
            # Routing may have reached a leader that proposed it before the error: it may yet take effect. A
            # write is FAILED only when it certainly had no effect, which a client of a routed call never knows.
            op = self.history.unknown(op, exc, time=trio.current_time())
        else:
            if op.kind is Kind.CAS or result is not None:
                if not isinstance(result, bool) or (op.kind is not Kind.CAS and result is not True):
                    op = self.history.unknown(op, f"cas_handler returned {result!r}", time=trio.current_time())
                else:
                    op = self.history.ok(op, result if op.kind is Kind.CAS else None, time=trio.current_time())
            else:
                op = self.history.ok(op, time=trio.current_time())
        if op.status is Status.OK and (op.kind is not Kind.CAS or op.result is True):
            self.seen[op.key] = NOT_FOUND if op.kind is Kind.DELETE else op.value  # type: ignore[index]
        self._done(op)
        return op
