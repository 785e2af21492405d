"""The public ``Partition`` handle: get, put, delete, batch, iterator and info on one named partition.

This module owns the user-facing shape of partition operations and the checks done before anything leaves the
caller (key types and sizes, values CBOR can encode), so bad input fails fast, locally, and writes nothing. It
does not know where the partition lives: every operation goes through a ``PartitionBackend`` (the node's
router, a client's router, or a handler's local leader replica).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from borough.errors import NotFound
from borough.kv import decode_value, encode_value
from borough.node.export import read_export
from borough.node.records import (
    CONSISTENCIES,
    Consistency,
    Delete,
    Limits,
    PartitionInfo,
    Put,
    ReplicaInfo,
    ScanPage,
    ScanRange,
    WriteOp,
    check_key,
    check_partition_name,
    check_value,
)

__all__ = [
    "Consistency",
    "Partition",
    "PartitionBackend",
    "PartitionInfo",
    "PartitionIterator",
    "ReplicaInfo",
    "ScanRange",
    "check_partition_name",
]

_MISSING: Any = object()
#: Items fetched per round trip by an iterator (fewer when values are large: the server caps page bytes).
PAGE_ITEMS = 512


class PartitionBackend(Protocol):
    """Where a ``Partition``'s operations go. Values cross this line CBOR-encoded (``encode_value``)."""

    async def kv_get(self, partition: str, key: str | bytes, consistency: Consistency) -> bytes | None: ...

    async def kv_write(self, partition: str, ops: tuple[WriteOp, ...]) -> None: ...

    async def kv_scan(self, partition: str, scan: ScanRange, limit: int, consistency: Consistency) -> ScanPage:
        """Up to ``limit`` items of the range and whether more may follow."""
        ...

    async def partition_info(self, partition: str) -> PartitionInfo: ...

    async def kv_export(self, partition: str) -> tuple[int, trio.abc.ReceiveStream]: ...


class Partition:
    """A named partition. Keys are ``str`` or ``bytes`` (ordered bytewise, str as UTF-8) and come back in the
    type they were written; values are anything CBOR encodes. Reads are linearizable unless
    ``consistency="stale"`` (the local replica, possibly behind)."""

    __slots__ = ("_backend", "_limits", "name")

    def __init__(self, backend: PartitionBackend, name: str, limits: Limits) -> None:
        self._backend = backend
        self.name = name
        self._limits = limits

    def __repr__(self) -> str:
        return f"<Partition {self.name!r}>"

    def _key(self, key: object) -> str | bytes:
        return check_key(key, self._limits)

    def _put(self, key: object, value: object) -> Put:
        return Put(self._key(key), check_value(encode_value(value), self._limits))

    async def get(self, key: str | bytes, default: Any = _MISSING, *, consistency: Consistency = "linearizable") -> Any:
        """The value of ``key``; ``default`` if given and the key is missing, else ``NotFound``."""
        key = self._key(key)
        _check_consistency(consistency)
        raw = await self._backend.kv_get(self.name, key, consistency)
        if raw is None:
            if default is _MISSING:
                raise NotFound(key, partition=self.name)
            return default
        return decode_value(raw)

    async def put(self, key: str | bytes, value: Any) -> None:
        """Write ``value`` under ``key``; returns once it is committed and applied."""
        await self._backend.kv_write(self.name, (self._put(key, value),))

    async def delete(self, key: str | bytes) -> None:
        """Remove ``key`` (deleting a missing key is not an error)."""
        await self._backend.kv_write(self.name, (Delete(self._key(key)),))

    async def batch(self, ops: Iterable[Sequence[Any]]) -> None:
        """Apply ``("put", key, value)`` and ``("del", key)`` operations atomically, in order."""
        checked: list[WriteOp] = []
        for op in ops:
            if not isinstance(op, (tuple, list)) or not op:
                raise TypeError(f"a batch operation must be ('put', key, value) or ('del', key), not {op!r:.80}")
            if op[0] == "put" and len(op) == 3:
                checked.append(self._put(op[1], op[2]))
            elif op[0] in ("del", "delete") and len(op) == 2:
                checked.append(Delete(self._key(op[1])))
            else:
                raise ValueError(f"a batch operation must be ('put', key, value) or ('del', key), not {op!r:.80}")
        if checked:
            await self._backend.kv_write(self.name, tuple(checked))

    def iterator(
        self,
        *,
        gt: str | bytes | None = None,
        gte: str | bytes | None = None,
        lt: str | bytes | None = None,
        lte: str | bytes | None = None,
        reverse: bool = False,
        limit: int | None = None,
        keys: bool = True,
        values: bool = True,
        consistency: Consistency = "linearizable",
    ) -> PartitionIterator:
        """An async iterator over a key range in key order (``reverse`` for descending). Yields ``(key, value)``,
        or only keys (``values=False``) or only values (``keys=False``)."""
        for bound in (gt, gte, lt, lte):
            if bound is not None:
                self._key(bound)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be a non-negative int or None, not {limit!r}")
        if not keys and not values:
            raise ValueError("an iterator needs keys=True or values=True (or both)")
        _check_consistency(consistency)
        scan = ScanRange(gt=gt, gte=gte, lt=lt, lte=lte, reverse=reverse, values=values)
        return PartitionIterator(self._backend, self.name, scan, limit, keys, values, consistency)

    @asynccontextmanager
    async def export(self) -> AsyncIterator[PartitionExport]:
        """Every key and value of the partition as of one applied index, read from its leader after a read
        barrier (so it holds every write acknowledged before the call): ``async with p.export() as e:`` then
        ``e.applied_index`` and ``async for page in e`` (lists of ``(key, value)``, in key order). A stream cut
        short raises ``RemoteProtocolError``."""
        applied, stream = await self._backend.kv_export(self.name)
        async with stream:
            yield PartitionExport(applied, stream)

    async def info(self) -> PartitionInfo:
        """Replicas, leader, term, commit and applied index, as the partition's leader reports them."""
        return await self._backend.partition_info(self.name)


class PartitionExport:
    """One partition's export in progress (see ``Partition.export``)."""

    def __init__(self, applied_index: int, stream: trio.abc.ReceiveStream) -> None:
        self.applied_index = applied_index
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[list[tuple[str | bytes, Any]]]:
        async for page in read_export(self._stream):
            yield [(key, decode_value(value)) for key, value in page]


def _check_consistency(consistency: object) -> None:
    if consistency not in CONSISTENCIES:
        raise ValueError(f"consistency must be 'linearizable' or 'stale', not {consistency!r}")


class PartitionIterator:
    """Pages through a range. Each page is one linearizable (or stale) read that resumes after the last key of
    the previous page, so a long iteration holds no resources between pages; it sees every key that existed
    for the whole iteration, and a key written meanwhile may or may not appear."""

    def __init__(
        self,
        backend: PartitionBackend,
        name: str,
        scan: ScanRange,
        limit: int | None,
        keys: bool,
        values: bool,
        consistency: Consistency,
    ) -> None:
        self._backend = backend
        self._name = name
        self._scan = scan
        self._remaining = limit
        self._keys = keys
        self._values = values
        self._consistency = consistency
        self._page: list[tuple[str | bytes, bytes | None]] = []
        self._pos = 0
        self._more = True

    def __aiter__(self) -> PartitionIterator:
        return self

    async def __anext__(self) -> Any:
        if self._remaining is not None and self._remaining <= 0:
            raise StopAsyncIteration
        if self._pos >= len(self._page):
            if not self._more:
                raise StopAsyncIteration
            want = PAGE_ITEMS if self._remaining is None else min(PAGE_ITEMS, self._remaining)
            result = await self._backend.kv_scan(self._name, self._scan, want, self._consistency)
            page = result.items
            self._page, self._pos, self._more = page, 0, result.more and bool(page)
            if not page:
                raise StopAsyncIteration
            self._scan = self._scan.after(page[-1][0])
        key, raw = self._page[self._pos]
        self._pos += 1
        if self._remaining is not None:
            self._remaining -= 1
        if not self._values:
            return key
        value = decode_value(raw) if raw is not None else None
        return (key, value) if self._keys else value
