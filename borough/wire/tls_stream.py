"""``TlsStream``: TLS over any ``trio.abc.Stream`` (an ``ssl.SSLObject`` between two memory BIOs), built for a
connection that has one reader task and one writer task, as every multiplexed connection does.

Why not ``trio.SSLStream``: it serves any mix of concurrent callers, so every operation goes through a retry
loop that raises ``SSLWantReadError`` on each read that needs bytes and takes a ``trio`` lock around each
transport call; each lock acquisition is a scheduling round trip. Over a cluster's many small node-to-node
frames that doubled the scheduler passes per frame, which broke the outbox's per-round coalescing and cost a
third of the throughput (issue 14). Here:
- a send encrypts, then takes the send lock without yielding when it is free (it always is, except when the
  reader is flushing a post-handshake message) and hands the records to the transport: one checkpoint;
- a receive decrypts what is buffered, else reads the transport once (one checkpoint; OpenSSL is not asked, and
  does not raise its want-read error, when nothing is buffered) and decrypts; it returns
  every whole record already received, up to ``max_bytes``, each ``SSLObject.read`` asking at most one record
  (16 KiB: a bigger request makes CPython allocate, and the allocator map, the whole buffer per call);
- records leave in the order OpenSSL produced them: whoever holds the send lock drains the outgoing BIO.
It checks no certificates itself: the contexts do (``tls``), and ``getpeercert`` reports the verified one.

Errors: an ``ssl.SSLError`` (a bad record, a refused certificate, the peer hanging up mid-record) breaks the
stream and is raised as ``trio.BrokenResourceError`` from it (``tls.tls_failure`` reads the cause); transport
errors pass through and break it too. A clean close_notify from the peer reads as end of stream (``b""``).
A cancelled ``send_all`` or handshake leaves the stream broken, as with any trio stream.
"""

from __future__ import annotations

import operator
import ssl
from typing import Any

import trio

__all__ = ["TlsStream"]

#: The most plaintext one TLS record carries (RFC 8446 §5.1): what one ``SSLObject.read`` can return.
RECORD_PLAINTEXT = 16384


class TlsStream(trio.abc.Stream):
    """TLS over ``transport_stream``; call ``do_handshake`` before anything else. See the module docstring."""

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._send_lock = trio.StrictFIFOLock()
        self._handshaken = False
        self._broken: BaseException | None = None
        self._closed = False
        self._sending = False
        self._receiving = False

    # ------------------------------------------------------------------ what the handshake settled

    def getpeercert(self) -> dict[str, Any] | None:
        """The peer's verified certificate (``ssl.SSLObject.getpeercert``); None before the handshake."""
        return self._ssl.getpeercert() if self._handshaken else None

    def version(self) -> str | None:
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._ssl.cipher()

    # ------------------------------------------------------------------ internals

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("this TLS stream is broken") from self._broken
        if not self._handshaken:
            raise trio.BrokenResourceError("the TLS handshake is not done (call do_handshake first)")

    def _ssl_failed(self, exc: BaseException) -> trio.BrokenResourceError:
        self._broken = exc
        return trio.BrokenResourceError(f"TLS failed: {exc}")

    async def _flush(self) -> bool:
        """Send every record in the outgoing BIO, in order; True if it reached the transport (a checkpoint)."""
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            data = self._outgoing.read()
            if not data:
                return False
            try:
                await self.transport_stream.send_all(data)
            except BaseException as exc:  # some records may have left: the stream cannot go on
                self._broken = exc
                raise
            return True
        finally:
            lock.release()

    async def _fill(self) -> None:
        """Read once from the transport into the incoming BIO (end of stream marks the BIO's EOF)."""
        try:
            data = await self.transport_stream.receive_some()
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                self._broken = exc
            raise
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    # ------------------------------------------------------------------ trio.abc.Stream

    async def do_handshake(self) -> None:
        """Run the TLS handshake (certificate checks included). Raises ``trio.BrokenResourceError`` from the
        ``ssl.SSLError`` when it fails. Bound it with a cancel scope; a cancelled handshake breaks the stream."""
        if self._handshaken:
            await trio.lowlevel.checkpoint()
            return
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this TLS stream was closed")
            try:
                self._ssl.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except (ssl.SSLError, ssl.CertificateError) as exc:
                try:
                    await self._flush()  # our alert, so the peer learns why (best effort)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                raise self._ssl_failed(exc) from exc
            await self._flush()
            if done:
                self._handshaken = True
                await trio.lowlevel.checkpoint()
                return
            await self._fill()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._check()
        self._sending = True
        try:
            if not data:
                await trio.lowlevel.checkpoint()
                return
            try:
                self._ssl.write(data)
            except ssl.SSLError as exc:
                raise self._ssl_failed(exc) from exc
            await self._flush()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._check()
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLS stream")
        self._check()
        limit = RECORD_PLAINTEXT if max_bytes is None else operator.index(max_bytes)
        if limit < 1:
            raise ValueError("max_bytes must be at least 1")
        self._receiving = True
        try:
            yielded = False
            incoming, tls = self._incoming, self._ssl
            while True:
                if not (incoming.pending or incoming.eof or tls.pending()):
                    # Nothing to decrypt: read the transport first rather than pay for OpenSSL's want-read error.
                    await self._fill()
                    yielded = True
                try:
                    data = tls.read(min(limit, RECORD_PLAINTEXT))
                    break
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    raise self._ssl_failed(exc) from exc
                if self._outgoing.pending:  # a post-handshake reply OpenSSL owes the peer
                    yielded = await self._flush() or yielded
                await self._fill()
                yielded = True
            if data:
                parts = [data]
                got = len(data)
                while got < limit and self._incoming.pending:  # more whole records already here
                    try:
                        more = self._ssl.read(min(limit - got, RECORD_PLAINTEXT))
                    except ssl.SSLError:  # incomplete record, or a failure the next call reports
                        break
                    if not more:
                        break
                    parts.append(more)
                    got += len(more)
                if len(parts) > 1:
                    data = b"".join(parts)
            if self._outgoing.pending:
                yielded = await self._flush() or yielded
            if not yielded:
                await trio.lowlevel.checkpoint()
            return data
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Send close_notify (best effort, if the stream is sound and the send lock free), close the transport."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if self._handshaken and self._broken is None and not self._send_lock.locked():
                try:
                    self._ssl.unwrap()
                except ssl.SSLError:
                    pass  # want-read: the peer's close_notify is not awaited
                data = self._outgoing.read()
                if data:
                    try:
                        await self.transport_stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
        finally:
            await self.transport_stream.aclose()
