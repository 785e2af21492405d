"""One logical byte stream of a multiplexed connection, with credit-based flow control in each direction.

Owns a stream's two halves: the send half spends the peer's credit and queues DATA/END frames through its
connection; the receive half buffers at most one window of the peer's bytes and grants credit back as the
reader consumes. It never blocks the connection: every method the connection calls on it is synchronous. It
knows nothing of calls, tasks or sockets; ``mux.MuxConnection`` routes frames to it.
"""

from __future__ import annotations

import logging
import operator
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from borough.errors import RemoteProtocolError

if TYPE_CHECKING:
    from borough.wire.mux import MuxConnection

__all__ = ["MuxStream"]

log = logging.getLogger(__name__)


class MuxStream(trio.abc.HalfCloseableStream):
    """One logical stream of a ``MuxConnection``. Plain streams are two-way; streams attached to calls and
    replies are one-way (the other half starts finished). ``header`` is what the opener sent with OPEN."""

    def __init__(self, conn: MuxConnection, sid: int, *, send: bool, receive: bool, header: Any = None) -> None:
        self._conn = conn
        self.stream_id = sid
        self.header = header
        self._counts_open = False  # a peer-opened plain stream, counted against max_open_streams
        self._closed = False
        # send half
        self._send_done = not send  # END/RESET sent, or STOP received, or no send half
        self._eof_called = not send
        self._send_broken: BaseException | None = None
        self._credit = conn.peer_window if send else 0
        self._credit_event: trio.Event | None = None
        self._sending = False
        # receive half
        self._chunks: deque[bytes] = deque()
        self._recv_eof = not receive
        self._recv_error: BaseException | None = None
        self._recv_stopped = not receive  # STOP sent or no receive half: late DATA is ignored
        self._allowed = conn.settings.window if receive else 0
        self._unacked = 0
        self._recv_event: trio.Event | None = None
        self._receiving = False
        self.buffered = 0
        self.max_buffered = 0  # the high-water mark of unread bytes, for tests of the memory bound

    # ----- internal, called by the connection (never block)

    @property
    def _finished(self) -> bool:
        return self._send_done and (self._recv_stopped or self._recv_eof or self._recv_error is not None)

    def _wake_recv(self) -> None:
        if self._recv_event is not None:
            self._recv_event.set()
            self._recv_event = None

    def _wake_send(self) -> None:
        if self._credit_event is not None:
            self._credit_event.set()
            self._credit_event = None

    def _on_data(self, data: bytes) -> None:
        if self._recv_stopped:
            return  # we closed our side; the peer had these bytes in flight
        if self._recv_eof or self._recv_error is not None:
            raise RemoteProtocolError(f"DATA on stream {self.stream_id} after the peer ended or reset it")
        n = len(data)
        if n > self._allowed:
            raise RemoteProtocolError(
                f"the peer sent {n} bytes on stream {self.stream_id} with only {self._allowed} bytes of credit"
            )
        self._allowed -= n
        if n:
            self._chunks.append(data)
            self.buffered += n
            if self.buffered > self.max_buffered:
                self.max_buffered = self.buffered
            self._wake_recv()

    def _on_end(self) -> None:
        if self._recv_stopped:
            return
        if self._recv_eof or self._recv_error is not None:
            raise RemoteProtocolError(f"END on stream {self.stream_id} after the peer already ended or reset it")
        self._recv_eof = True
        self._wake_recv()

    def _on_reset(self, error: BaseException) -> None:
        if not self._recv_stopped and not self._recv_eof and self._recv_error is None:
            self._recv_error = error
            self._wake_recv()

    def _on_stop(self) -> None:
        if not self._send_done:
            self._send_done = True
            self._send_broken = trio.BrokenResourceError(
                f"{self._conn.description} stopped reading stream {self.stream_id}"
            )
        self._wake_send()

    def _on_window(self, credit: int) -> None:
        if self._send_done:
            return
        self._credit += credit
        if self._credit >= 2**31:
            raise RemoteProtocolError(f"the peer's credit on stream {self.stream_id} overflowed 2**31 bytes")
        self._wake_send()

    def _on_connection_lost(self, reason: BaseException) -> None:
        if self._send_broken is None and not self._send_done:
            self._send_broken = trio.BrokenResourceError(
                f"the connection to {self._conn.description} was lost: {reason}"
            )
        self._send_done = True
        if not self._recv_eof and self._recv_error is None:
            self._recv_error = reason
        self._wake_send()
        self._wake_recv()

    def _abort_send(self, error: dict[str, Any] | None) -> None:
        """Abort our direction with RESET (a cancelled or failed producer)."""
        if not self._send_done:
            self._send_done = True
            self._eof_called = True
            self._conn._queue_ctrl(self._conn._codec.encode_reset(self.stream_id, error))
        self._conn._forget_if_finished(self)

    def _stop_receiving(self) -> None:
        """We will read no more: tell the peer (STOP) unless it already finished its direction."""
        if not self._recv_stopped:
            self._recv_stopped = True
            if not self._recv_eof and self._recv_error is None and not self._conn.closed:
                self._conn._queue_ctrl(self._conn._codec.encode_stop(self.stream_id))
            self._chunks.clear()
            self.buffered = 0
        self._conn._forget_if_finished(self)

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._send_done:
            self._send_done = True
            if not self._conn.closed:
                self._conn._queue_data_frame(self._conn._codec.encode_end(self.stream_id))
        self._stop_receiving()
        self._wake_send()
        self._wake_recv()

    # ----- trio.abc.SendStream

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._eof_called:
            raise trio.ClosedResourceError("send_eof was already called on this stream")
        if self._send_broken is not None:
            raise trio.BrokenResourceError(str(self._send_broken)) from self._send_broken

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check_send()
            view = memoryview(data)
            if view.itemsize != 1:
                view = view.cast("B")
            total, pos = len(view), 0
            frame_size = self._conn.settings.data_frame_size
            blocked = False
            while pos < total:
                while self._credit <= 0:
                    self._credit_event = ev = trio.Event()
                    blocked = True
                    await ev.wait()
                    self._check_send()
                self._check_send()
                n = min(total - pos, self._credit, frame_size)
                self._conn._queue_data_frame(self._conn._codec.encode_data(self.stream_id, view[pos : pos + n]))
                self._credit -= n
                pos += n
            if not blocked:
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
            if self._credit <= 0 and self._send_broken is None and not self._send_done:
                self._credit_event = ev = trio.Event()
                await ev.wait()
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if not self._eof_called:
            self._eof_called = True
            if not self._send_done:
                self._send_done = True
                self._conn._queue_data_frame(self._conn._codec.encode_end(self.stream_id))
            self._conn._forget_if_finished(self)
        await trio.lowlevel.checkpoint()

    # ----- trio.abc.ReceiveStream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if self._chunks:
                    chunk = self._chunks[0]
                    if max_bytes is None or len(chunk) <= max_bytes:
                        self._chunks.popleft()
                    else:
                        self._chunks[0] = chunk[max_bytes:]
                        chunk = chunk[:max_bytes]
                    self._consumed(len(chunk))
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return chunk
                if self._recv_eof:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return b""
                if self._recv_error is not None:
                    err = self._recv_error
                    raise trio.BrokenResourceError(
                        f"stream {self.stream_id} from {self._conn.peer} failed: {err}"
                    ) from err
                self._recv_event = ev = trio.Event()
                await ev.wait()
        finally:
            self._receiving = False

    def _consumed(self, n: int) -> None:
        self.buffered -= n
        self._unacked += n
        window = self._conn.settings.window
        if self._unacked >= max(1, window // 4) and not self._recv_eof and not self._conn.closed:
            self._allowed += self._unacked
            self._conn._queue_ctrl(self._conn._codec.encode_window(self.stream_id, self._unacked))
            self._unacked = 0

    async def aclose(self) -> None:
        self._close_now()
        await trio.lowlevel.checkpoint()

    # ----- producing from a source (calls and replies)

    async def pump_from(self, source: Any, *, error_map: Callable[[BaseException], dict[str, Any]]) -> None:
        """Copy ``source`` (a ReceiveStream or an async iterable of bytes) into this stream, then END; if the
        source fails, RESET with ``error_map(exc)`` so the reader learns why. The source is closed afterwards."""
        conn = self._conn
        size = conn.settings.data_frame_size
        try:
            if isinstance(source, trio.abc.ReceiveStream):
                while chunk := await source.receive_some(size):
                    await self.send_all(chunk)
            else:
                async for chunk in source:
                    await self.send_all(chunk)
            await self.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._abort_send(None)  # the reader stopped or the connection died: nothing to report
        except Exception as exc:
            log.info("a stream source for %s failed: %r", conn.description, exc, extra={"peer": conn.description})
            self._abort_send(error_map(exc))
        finally:
            self._abort_send(None)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(conn.settings.close_timeout):
                    try:
                        await aclose()
                    except Exception as exc:  # closing a user's source must not take the connection down
                        log.debug("closing a stream source for %s failed: %r", conn.description, exc)
