"""A partition's consistent export: every key and value as of one applied index, streamed in pages.

This module owns the stream's format, both ends. The leader confirms its leadership (a read barrier, so the
export reflects every write acknowledged before it began), takes one view of its store (``Store.export``: the
applied index and the items at exactly that index) and streams it as length-prefixed CBOR frames:
``["items", [[key, encoded_value], ...]]`` pages of about ``PAGE_BYTES``, then ``["end", count]``. A reader
checks every frame and the final count, so a cut-off stream is an error, never a silently short export. Values
stay as the encoded bytes they are stored as. It knows nothing of files or backups (``borough.backup``).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cbor2
import trio

from borough.cbor_safe import CborRejected, safe_loads
from borough.errors import RemoteProtocolError

__all__ = ["read_export", "write_export"]

PAGE_BYTES = 256 * 1024
MAX_FRAME = 16 * 1024 * 1024
_LEN = struct.Struct(">I")


async def write_export(items: Iterator[tuple[str | bytes, bytes]], *, offload: bool) -> AsyncIterator[bytes]:
    """The frames of an export of ``items`` (built in a worker thread when ``offload``: a big partition is read
    out without holding the event loop)."""
    count = 0

    def page() -> bytes | None:
        nonlocal count
        batch: list[list[Any]] = []
        size = 0
        for key, value in items:
            batch.append([key, value])
            size += len(value) + 16
            if size >= PAGE_BYTES:
                break
        if not batch:
            return None
        count += len(batch)
        return _frame(["items", batch])

    while True:
        frame = await trio.to_thread.run_sync(page) if offload else page()
        if frame is None:
            break
        yield frame
        await trio.lowlevel.checkpoint()
    yield _frame(["end", count])


def _frame(obj: Any) -> bytes:
    body = cbor2.dumps(obj)
    return _LEN.pack(len(body)) + body


async def read_export(stream: trio.abc.ReceiveStream) -> AsyncIterator[list[tuple[str | bytes, bytes]]]:
    """The pages of items of an export stream; raises RemoteProtocolError if it is malformed or cut short."""
    buffer = bytearray()
    seen = 0
    while True:
        while len(buffer) < 4 or len(buffer) < 4 + _LEN.unpack_from(buffer)[0]:
            if len(buffer) >= 4 and _LEN.unpack_from(buffer)[0] > MAX_FRAME:
                raise RemoteProtocolError("an export frame is over its size limit")
            data = await stream.receive_some(1 << 16)
            if not data:
                raise RemoteProtocolError(f"the export stream ended early, after {seen} items")
            buffer += data
        (size,) = _LEN.unpack_from(buffer)
        body = bytes(buffer[4 : 4 + size])
        del buffer[: 4 + size]
        try:
            frame = safe_loads(body)
        except CborRejected as exc:
            raise RemoteProtocolError(f"an export frame is not valid: {exc}") from None
        if frame == ["end", seen]:
            return
        if not (isinstance(frame, list) and len(frame) == 2 and frame[0] == "items" and isinstance(frame[1], list)):
            raise RemoteProtocolError(f"unexpected export frame after {seen} items: {frame!r:.80}")
        page = []
        for item in frame[1]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str | bytes)
                    and type(item[1]) is bytes):  # fmt: skip
                raise RemoteProtocolError("an export item must be [key, encoded value]")
            page.append((item[0], item[1]))
        seen += len(page)
        yield page
