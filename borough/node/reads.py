"""Reading a replica's applied data on this node: a value by key, or a page of a range.

This module owns the one way the node layer reads its store for a caller. Both functions return encoded values
exactly as they travel, so nothing is decoded and encoded again. The server, a member's stale read of a
partition it hosts, and a handler's ``request.partition`` all use them. It needs only the store: a client can
import it without loading the Raft core.
"""

from __future__ import annotations

from borough.errors import NotFound
from borough.node.records import ScanPage, ScanRange
from borough.store.base import Store

__all__ = ["PAGE_BYTES", "read_value", "scan_page"]

#: Most bytes of values one scan page carries (at least one item is always sent).
PAGE_BYTES = 1 << 20


def read_value(store: Store, partition: str, key: str | bytes) -> bytes | None:
    """The encoded value of ``key`` in this node's replica of ``partition``, or None when it is missing."""
    try:
        return store.get_encoded(partition, key)
    except NotFound:
        return None


def scan_page(store: Store, partition: str, scan: ScanRange, limit: int) -> ScanPage:
    """Up to ``limit`` items of the range and whether more follow, capped at PAGE_BYTES of values."""
    items: list[tuple[str | bytes, bytes | None]] = []
    size = 0
    more = False
    for key, raw in store.iterate(
        partition,
        encoded=True,
        gt=scan.gt,
        gte=scan.gte,
        lt=scan.lt,
        lte=scan.lte,
        reverse=scan.reverse,
        limit=limit + 1,
    ):
        value_bytes = len(raw) if scan.values else 0
        if len(items) >= limit or (items and size + value_bytes > PAGE_BYTES):
            more = True
            break
        items.append((key, raw if scan.values else None))
        size += value_bytes
    return ScanPage(items, more)
