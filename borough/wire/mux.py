"""A multiplexed connection over any ``trio.abc.Stream``: logical streams, a priority lane, calls.

Owns, for one established connection (handshake done): the one writer task and its three lanes (priority
messages, control frames, data frames, written in that order and batched into one ``send_all``), the reader
task that drives the ``FrameCodec``, per-stream credit flow control, request/response calls with attached user
byte streams, keepalive pings, liveness and idle detection, and the orderly or abrupt end of all of it.

It does not know addresses, dialling, reconnects or which peer is which node beyond the handshake record; the
transport (``transport.py``) owns those. It does not interpret call bodies or messages.

Semantics the layers above rely on:
- ``send_message_frame`` never blocks: a full priority lane drops the frame and returns False.
- ``on_message`` runs synchronously in the reader task; if it raises, the error is logged with its traceback
  and this connection is closed (the peer redials); the node keeps running.
- Nothing the peer sends raises out of the reader or the writer: a bad frame, or a frame whose handling fails,
  closes this connection with a logged ``RemoteProtocolError``. The control lane is bounded
  (``max_control_frames``): PINGs past it go unanswered (counted in ``pongs_dropped``, logged once), and a peer
  that makes us queue refusals faster than it reads them is disconnected.
- A logical stream is a ``trio.abc.HalfCloseableStream``; each direction has a credit window, so a reader that
  stops reading stalls only its own stream. ``aclose`` ends our direction gracefully (END) and tells the peer
  we read no more (STOP), so its ``send_all`` raises ``BrokenResourceError``.
- ``call`` sends a body (plus attached streams), returns the peer's ``Reply`` or raises the peer's error as the
  same type (see ``errors_codec``). An inbound call runs ``on_call`` in a task of its own, unless it attaches no
  streams and ``on_quick_call`` takes it (it answers later through a ``CallAnswer``, with no task; a call slot
  is held until then). Cancelling ``call`` resets the call, which cancels the peer's handler. The
  connection dying mid-call raises ``Unavailable`` naming the peer. ``call(deadline=...)`` bounds the call
  without a cancel scope of its own (one per call costs the caller more than the rest of the call's Python): the
  call is reset and ``trio.TooSlowError`` raised once the deadline passes, as a scope would.
- Streams attached to a call are closed (STOP) when the handler returns; read them inside the handler. Streams
  attached to a reply hold a call slot on the replying side until read to the end or closed: read or close them.
- Sources given as ``streams=`` (async iterables of bytes or ``trio.abc.ReceiveStream``) are consumed and then
  closed (``aclose``) by the wire.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from borough.cbor_safe import safe_str
from borough.errors import BoroughError, LocalProtocolError, NotDelivered, Overloaded, RemoteProtocolError, Unavailable
from borough.runnable import tasks_runnable
from borough.wire import codec as c
from borough.wire.errors_codec import ErrorRegistry, default_registry
from borough.wire.handshake import handshake, make_hello
from borough.wire.records import (
    CallBound,
    CallHandler,
    DispatchHooks,
    IncomingCall,
    MessageHandler,
    PeerInfo,
    QuickCallHandler,
    Reply,
    StreamHandler,
    StreamSource,
)
from borough.wire.settings import WireSettings
from borough.wire.streams import MuxStream

# Re-exported for callers that think of these as part of a connection.
__all__ = [
    "IncomingCall",
    "MuxConnection",
    "MuxStream",
    "PeerInfo",
    "Reply",
    "StreamSource",
    "handshake",
    "make_hello",
    "open_mux",
]

log = logging.getLogger(__name__)


#: The reader lets other tasks run after this many dispatched frames. Without it a burst of calls is read,
#: dispatched, answered and written as one convoy while the peer waits idle, and two processes take turns
#: instead of working at once (measured: 64 callers over loopback, 11k -> 22k round trips/s).
YIELD_EVERY = 16
#: ... and after this many received bytes, so a run of large frames (each up to ``max_frame_items`` of decode
#: work) cannot hold the event loop for more than a few of them.
YIELD_EVERY_BYTES = 256 * 1024


class _Answer:
    """Answers a call a quick handler took (``CallAnswer``): once, and only while the caller still waits."""

    __slots__ = ("_conn", "_sid")

    def __init__(self, conn: MuxConnection, sid: int) -> None:
        self._conn: MuxConnection | None = conn
        self._sid = sid

    def reply(self, body: Any) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn._quick_answered(self._sid, body, None)

    def fail(self, error: BaseException) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn._quick_answered(self._sid, None, error)


class _NoHooks:
    """The hooks of a connection given none: nothing to defer, nothing to run."""

    def enter(self) -> None:
        pass

    def leave(self) -> None:
        pass


_NO_HOOKS = _NoHooks()


class _PendingCall:
    __slots__ = ("error", "event", "expired", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Reply[trio.abc.ReceiveStream] | None = None
        self.error: BaseException | None = None
        self.expired = False  # its deadline passed first (``MuxConnection._watch_deadlines``)


#: Bounded calls remembered before finished ones are swept out of the deadline heap (see ``MuxConnection._watch``).
_SWEEP_AT = 1024

# ---------------------------------------------------------------------------------------------------- connection


def _send_now(stream: trio.abc.Stream, blob: bytes) -> int:
    """Bytes of ``blob`` written to a plain TCP stream's socket at once, without a pass of the event loop (0 for any
    other stream, or when the socket buffer is full). ``SocketStream.send_all`` yields after every successful send
    even when the kernel took it all: for the writer that is a second task step per frame, on every hop of a
    request. The socket is non-blocking, so this never blocks; its file descriptor is read right before the write,
    on the trio thread, so it cannot be one that was closed and reused meanwhile."""
    if type(stream) is not trio.SocketStream:
        return 0
    fd = stream.socket.fileno()
    if fd < 0:
        return 0  # closed: send_all raises the proper error
    try:
        return os.write(fd, blob)
    except (BlockingIOError, InterruptedError):
        return 0


class MuxConnection:
    """One established connection. Create it with ``open_mux``; all its tasks live in ``open_mux``'s nursery."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        codec: c.FrameCodec,
        *,
        settings: WireSettings,
        on_message: MessageHandler | None = None,
        on_call: CallHandler | None = None,
        on_stream: StreamHandler | None = None,
        registry: ErrorRegistry = default_registry,
        description: str | None = None,
        peer: PeerInfo | None = None,
        on_quick_call: QuickCallHandler | None = None,
        hooks: DispatchHooks | None = None,
    ) -> None:
        if codec.peer_hello is None:
            raise LocalProtocolError("a MuxConnection needs a codec whose handshake is complete")
        self.settings = settings
        # ``peer``: the transport's record (role from the TLS certificate); else the handshake's declaration.
        self.peer = peer if peer is not None else PeerInfo.from_hello(codec.peer_hello)
        self.peer_hello = codec.peer_hello
        self.peer_window = codec.peer_hello.window
        self.description = description or str(self.peer)
        self._stream = stream
        self._codec = codec
        codec.max_frame_items = settings.max_frame_items
        self._on_message = on_message
        self._on_call = on_call
        self._on_quick_call = on_quick_call
        self._hooks: DispatchHooks = hooks if hooks is not None else _NO_HOOKS
        self._held = False  # the hooks were told ``enter`` and are owed a ``leave``
        self._on_stream = on_stream
        self._registry = registry
        self._prio: deque[bytes] = deque()
        self._prio_bytes = 0  # bytes of the frames in _prio
        self._ctrl: deque[bytes] = deque()
        # Control frames ever queued, and ever handed to send_all: a call whose frame was still queued when the
        # connection failed certainly never reached the peer (see ``NotDelivered``).
        self._ctrl_queued = 0
        self._ctrl_taken = 0
        self._data: deque[bytes] = deque()
        self._wakeup: trio.Event | None = None
        self._flushed: trio.Event | None = None
        self._streams: dict[int, MuxStream] = {}
        self._calls: dict[int, _PendingCall] = {}
        self._inbound_calls: dict[int, trio.CancelScope] = {}
        self._quick_calls: set[int] = set()  # taken by the quick handler, not answered, not reset
        self._inbound_busy = 0  # handler tasks alive (handler plus reply streams)
        self._open_inbound = 0  # peer-opened plain streams alive
        self._outbound_limit = trio.Semaphore(settings.max_outbound_calls)
        #: Calls bounded by ``call(deadline=...)``: (deadline, stream id, call), a heap; finished calls leave it
        #: when the watcher next wakes, or when it is swept (kept within a few times the calls in flight).
        self._deadlines: list[tuple[float, int, _PendingCall]] = []
        self._deadline_wake: trio.CancelScope | None = None  # the watcher's sleep, when it runs
        self._watching = False
        self._nursery: trio.Nursery | None = None
        self._closed_reason: BaseException | None = None
        self._closed_event = trio.Event()
        self._goaway: str | None = None
        now = trio.current_time()
        self._last_received = now
        self._last_activity = now
        self._last_ping = now
        self._out_active = False
        self._unyielded = 0  # bytes the reader read without a pass of the event loop (``_receive``)
        self._ping_nonce = 0
        # counters, for tests and benchmarks
        self.writes = 0
        self.reads = 0
        self.bytes_written = 0
        self.messages_dropped = 0
        self.pongs_dropped = 0

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    @property
    def usable(self) -> bool:
        """True while new calls and messages may be started here (not closed, no GOAWAY from the peer)."""
        return self._closed_reason is None and self._goaway is None

    @property
    def close_reason(self) -> BaseException | None:
        return self._closed_reason

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def _lost(self, what: str) -> Unavailable:
        return Unavailable(f"{what}: the connection to {self.description} closed ({self._closed_reason}); retry")

    # ------------------------------------------------------------------ writer lanes

    def _kick(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def _queue_ctrl(self, frame: bytes, *, active: bool = True, alone: bool = False) -> None:
        # ``active=False`` for keepalive frames, which must not keep an idle connection open. ``alone``: the
        # caller knows of no other call or reply on this connection that may follow in the same pass.
        self._ctrl_queued += 1  # counted even when dropped on a closed connection: such a frame is never sent
        if self._closed_reason is None:
            if active:
                self._out_active = True
            # A lone frame (the only call or reply in flight here, the writer idle, no other task runnable: one
            # client's call or its reply) is written at once, without waking the writer a task switch later.
            # Otherwise it waits for the writer, so the replies to many callers that finish in one pass (one
            # round's apply answers them all in one step) leave in one write.
            if (
                alone
                and self._wakeup is not None
                and not (self._prio or self._ctrl or self._data)
                and not tasks_runnable()
            ):
                rest = self._send_idle(frame)
                if self._closed_reason is not None:
                    return  # the write failed (nothing of it was written): not taken, so a call is NotDelivered
                if rest is not frame:
                    self._ctrl_taken += 1  # handed to the socket (all of it, or the start of it)
                    if rest:  # a partial write: the rest goes first in line (the priority lane is written first)
                        self._prio.append(rest)
                        self._prio_bytes += len(rest)
                        self._kick()
                    return
            self._ctrl.append(frame)
            self._kick()

    def _answer_peer(self, *frames: bytes) -> None:
        """Queue control frames the peer's own frames made us owe (refusals, STOPs). A peer that keeps asking
        while it reads nothing would grow the lane without bound: past ``max_control_frames`` it is cut off."""
        if len(self._ctrl) + len(frames) > self.settings.max_control_frames:
            raise RemoteProtocolError(
                f"the peer made us queue more than {self.settings.max_control_frames} control frames (refusals of "
                f"its calls or streams) without reading them; it sends faster than it reads"
            )
        for frame in frames:
            self._queue_ctrl(frame)

    def _answer_ping(self, nonce: int) -> None:
        if len(self._ctrl) >= self.settings.max_control_frames:
            self.pongs_dropped += 1
            if self.pongs_dropped == 1:
                log.warning(
                    "%s sends PINGs faster than it reads the PONGs: %d control frames queued; PINGs past that "
                    "go unanswered (logged once per connection)",
                    self.description,
                    len(self._ctrl),
                    extra={"peer": self.description},
                )
            return
        self._queue_ctrl(self._codec.send(c.Pong(nonce=nonce)), active=False)

    def _queue_data_frame(self, frame: bytes) -> None:
        if self._closed_reason is None:
            self._data.append(frame)
            self._out_active = True
            self._kick()

    def send_message_frame(self, frame: bytes) -> bool:
        """Queue an encoded MESSAGE frame on the priority lane. Never blocks; False if it was dropped."""
        if self._closed_reason is not None or self._goaway is not None:
            return False
        if len(frame) - 4 > self._codec.peer_max_frame_size:
            raise LocalProtocolError(
                f"a {len(frame)}-byte message is over {self.description}'s maximum frame size; send it as a stream"
            )
        if (
            len(self._prio) >= self.settings.priority_queue_limit
            or self._prio_bytes + len(frame) > self.settings.priority_queue_bytes
        ):
            # A peer that is not taking what we send (stopped, slow, its disk full): drop, never queue without
            # limit; Raft and SWIM retransmit what still matters once it reads again.
            self.messages_dropped += 1
            if self.messages_dropped == 1:
                log.warning(
                    "%s is not reading: %d messages (%d bytes) queued; more are dropped (logged once per connection)",
                    self.description,
                    len(self._prio),
                    self._prio_bytes,
                    extra={"peer": self.description},
                )
            return False
        self._out_active = True
        # (A round's flush sends each peer its frame before the round's fsync starts, not a task switch later.)
        rest = self._send_idle(frame)
        if rest:
            self._prio.append(rest)
            self._prio_bytes += len(rest)
            self._kick()
        return self._closed_reason is None

    def _send_idle(self, frame: bytes) -> bytes:
        """While the writer is idle (nothing queued, not sending), write ``frame`` to the socket now, in the
        sender's own step rather than the writer's a task switch later; what is left (all of it on a busy
        connection or another kind of stream, the rest of a partial write) the caller queues, first in line."""
        if self._wakeup is None or self._prio or self._ctrl or self._data:
            return frame
        try:
            sent = _send_now(self._stream, frame)
        except OSError as exc:
            self._fail(Unavailable(f"sending to {self.description} failed ({type(exc).__name__}: {safe_str(exc)})"))
            return b""
        if sent:
            self.writes += 1
            self.bytes_written += sent
        return frame[sent:] if sent else frame

    @property
    def queued_message_bytes(self) -> int:
        """Bytes of priority messages queued and not yet handed to the socket (at most ``priority_queue_bytes``)."""
        return self._prio_bytes

    def send_message(self, message: Any) -> bool:
        """Encode and queue a priority message (see ``send_message_frame``)."""
        return self.send_message_frame(c.encode_message_frame(message, self._codec.peer_max_frame_size))

    async def _writer(self) -> None:
        stream, budget = self._stream, self.settings.write_batch_bytes
        prio, ctrl, data = self._prio, self._ctrl, self._data
        while True:
            if not (prio or ctrl or data):
                if self._flushed is not None:
                    self._flushed.set()
                    self._flushed = None
                self._wakeup = ev = trio.Event()
                await ev.wait()
                continue
            parts = list(prio)
            prio.clear()
            self._prio_bytes = 0
            parts.extend(ctrl)
            self._ctrl_taken += len(ctrl)
            ctrl.clear()
            left = budget
            while data and left > 0:
                frame = data.popleft()
                parts.append(frame)
                left -= len(frame)
            blob = b"".join(parts) if len(parts) > 1 else parts[0]
            try:
                sent = _send_now(stream, blob)
                if sent < len(blob):
                    await stream.send_all(memoryview(blob)[sent:])
                elif prio or ctrl or data:
                    await trio.lowlevel.checkpoint()  # (all sent without a pass: let others run before the next)
            except Exception as exc:  # broken, closed, OSError, or whatever a TLS layer raises: this link is done
                self._fail(Unavailable(f"sending to {self.description} failed ({type(exc).__name__}: {safe_str(exc)})"))
                return
            self.writes += 1
            self.bytes_written += len(blob)

    # ------------------------------------------------------------------ reader

    async def _reader(self) -> None:
        try:
            await self._read_frames()
        except RemoteProtocolError as exc:
            await self._close_on_protocol_error(exc)
        except Exception as exc:
            # Handling what the peer sent failed in a way nobody foresaw: a bug here, or input we do not yet
            # validate. Either way it is this connection's problem, never the node's: log it loudly, close.
            log.exception("handling a frame from %s failed", self.description, extra={"peer": self.description})
            await self._close_on_protocol_error(
                RemoteProtocolError(f"handling a frame from the peer failed ({type(exc).__name__}: {safe_str(exc)})")
            )

    async def _read_frames(self) -> None:
        try:
            await self._read_frames_held()
        finally:
            self._leave()

    def _leave(self) -> None:
        """Pay the ``leave`` owed to the hooks, if any (see ``DispatchHooks``): before every wait for the peer,
        every pass of the event loop and the reader's end, so what they deferred never waits on the peer."""
        if self._held:
            self._held = False
            self._hooks.leave()

    async def _read_frames_held(self) -> None:
        codec, stream, read_size = self._codec, self._stream, self.settings.read_size
        dispatched = 0
        yield_at = codec.frame_bytes_received + YIELD_EVERY_BYTES
        while True:
            event = codec.next_event()
            if isinstance(event, c.NeedData):
                self._leave()
                try:
                    chunk = await self._receive(stream, read_size)
                except Exception as exc:  # broken, closed, OSError, or whatever a TLS layer raises
                    self._fail(
                        Unavailable(f"receiving from {self.description} failed ({type(exc).__name__}: {safe_str(exc)})")
                    )
                    return
                self._last_received = trio.current_time()
                self.reads += 1
                codec.receive_data(chunk)
                continue
            if isinstance(event, c.ConnectionClosed):
                reason = f"the peer said: {self._goaway}" if self._goaway else "the peer closed it"
                self._fail(Unavailable(f"the connection to {self.description} was closed ({reason})"))
                return
            if not self._held:
                self._held = True
                self._hooks.enter()
            self._dispatch(event)
            if self._closed_reason is not None:
                return
            dispatched += 1
            if dispatched % YIELD_EVERY == 0 or codec.frame_bytes_received >= yield_at:
                yield_at = codec.frame_bytes_received + YIELD_EVERY_BYTES
                self._leave()
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._unyielded = 0

    async def _receive(self, stream: trio.abc.Stream, read_size: int) -> bytes | bytearray:
        """The next bytes from the peer (``b""`` at EOF). From a plain TCP stream, what its socket holds is read at
        once with ``os.read`` on its non-blocking descriptor; when it holds nothing, the reader waits until it does
        (``wait_readable``). ``SocketStream.receive_some`` makes a pass of the event loop after every read that
        found data at once (frames arriving back to back: a reply to a client and a follower's answer, or a busy
        peer), and goes through a few layers of trio's socket wrapper each time; this does neither. At most
        ``YIELD_EVERY_BYTES`` are read between two passes, so a peer that sends without pause cannot hold the event
        loop. Any other stream (TLS, memory, simulated): its own ``receive_some``."""
        if type(stream) is trio.SocketStream:
            sock = stream.socket
            if self._unyielded >= YIELD_EVERY_BYTES:
                await trio.lowlevel.checkpoint()
                self._unyielded = 0
            while (fd := sock.fileno()) >= 0:  # (closed: receive_some raises the proper error)
                try:
                    chunk = os.read(fd, read_size)  # (non-blocking; the descriptor read right before, on this thread)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    self._unyielded = 0
                    continue
                self._unyielded += len(chunk)
                return chunk
        return await stream.receive_some(read_size)

    async def _close_on_protocol_error(self, exc: RemoteProtocolError) -> None:
        log.warning(
            "closing the connection to %s: protocol error: %s",
            self.description,
            safe_str(exc, 500),
            extra={"peer": self.description},
        )
        with trio.move_on_after(self.settings.close_timeout):
            self._queue_ctrl(self._codec.send(c.GoAway(reason=f"protocol error: {safe_str(exc)}")))
            await self._wait_flushed()
        self._fail(exc)

    def _dispatch(self, ev: c.Event) -> None:
        if type(ev) is c.Message:  # (the most frequent frame between nodes first)
            self._last_activity = self._last_received
            if self._on_message is not None:
                try:
                    self._on_message(ev.body)
                except Exception as exc:
                    # A bug in the node's handler: make it loud, drop this connection (the peer redials and
                    # Raft retransmits), keep the node serving everyone else.
                    log.exception(
                        "the message handler failed on a message from %s",
                        self.description,
                        extra={"peer": self.description},
                    )
                    self._fail(Unavailable(f"the local message handler failed ({type(exc).__name__}: {exc})"))
        elif isinstance(ev, c.Data):
            st = self._streams.get(ev.stream_id)
            if st is not None:
                st._on_data(ev.data)
            self._last_activity_mark()
        elif isinstance(ev, c.Window):
            st = self._streams.get(ev.stream_id)
            if st is not None:
                st._on_window(ev.credit)
        elif isinstance(ev, c.Call):
            self._last_activity_mark()
            self._on_incoming_call(ev)
        elif isinstance(ev, c.Reply):
            self._last_activity_mark()
            self._on_reply(ev)
        elif isinstance(ev, c.End):
            st = self._streams.get(ev.stream_id)
            if st is not None:
                st._on_end()
                self._forget_if_finished(st)
        elif isinstance(ev, c.Reset):
            self._on_reset(ev)
        elif isinstance(ev, c.Stop):
            st = self._streams.get(ev.stream_id)
            if st is not None:
                st._on_stop()
                self._forget_if_finished(st)
        elif isinstance(ev, c.Open):
            self._last_activity_mark()
            self._on_open(ev)
        elif isinstance(ev, c.Ping):
            self._answer_ping(ev.nonce)
        elif isinstance(ev, c.Pong):
            pass  # receiving it refreshed _last_received, which is all a pong is for
        elif isinstance(ev, c.GoAway):
            self._goaway = ev.reason
            log.info("%s is closing the connection: %s", self.description, ev.reason, extra={"peer": self.description})
        else:  # a second Hello is rejected by the codec; nothing else exists
            raise RemoteProtocolError(f"unexpected {type(ev).__name__} on an established connection")

    def _last_activity_mark(self) -> None:
        self._last_activity = self._last_received

    def _forget_if_finished(self, st: MuxStream) -> None:
        if st._finished and self._streams.get(st.stream_id) is st:
            del self._streams[st.stream_id]
            if st._counts_open:
                self._open_inbound -= 1

    def _new_stream(self, sid: int, *, send: bool, receive: bool, header: Any = None) -> MuxStream:
        st = MuxStream(self, sid, send=send, receive=receive, header=header)
        self._streams[sid] = st
        return st

    def _on_open(self, ev: c.Open) -> None:
        if self._on_stream is None or self._open_inbound >= self.settings.max_open_streams or self._nursery is None:
            why = "accepts no streams" if self._on_stream is None else "has too many open streams"
            err = self._registry.encode(Overloaded(f"the peer {why}; retry later"))
            self._answer_peer(self._codec.encode_reset(ev.stream_id, err), self._codec.encode_stop(ev.stream_id))
            return
        st = self._new_stream(ev.stream_id, send=True, receive=True, header=ev.header)
        st._counts_open = True
        self._open_inbound += 1
        self._nursery.start_soon(self._serve_stream, st)

    async def _serve_stream(self, st: MuxStream) -> None:
        assert self._on_stream is not None
        try:
            await self._on_stream(st)
        finally:
            st._close_now()

    def _on_reset(self, ev: c.Reset) -> None:
        sid = ev.stream_id
        error: BaseException = (
            self._registry.decode(ev.error)
            if ev.error is not None
            else trio.BrokenResourceError(f"{self.description} reset stream {sid}")
        )
        pending = self._calls.get(sid)
        if pending is not None:
            if not pending.event.is_set():
                pending.error = (
                    error
                    if ev.error is not None
                    else Unavailable(f"{self.description} reset the call without a reason; retry")
                )
                pending.event.set()
            return
        scope = self._inbound_calls.pop(sid, None)
        if scope is not None:
            scope.cancel()  # the caller gave up: cancel its handler
            return
        if sid in self._quick_calls:
            self._quick_calls.discard(sid)  # the caller gave up: its answer will be dropped
            return
        st = self._streams.get(sid)
        if st is not None:
            st._on_reset(error)
            self._forget_if_finished(st)

    # ------------------------------------------------------------------ calls, outbound

    async def call(
        self,
        body: Any,
        *,
        streams: Mapping[str, StreamSource] | None = None,
        deadline: float | None = None,
    ) -> Reply[trio.abc.ReceiveStream]:
        """Send a call and wait for its reply; see the module docstring for the semantics. With ``deadline``
        (trio time), the call is reset and ``trio.TooSlowError`` raised once it passes."""
        sources = dict(streams or {})
        if len(sources) > self.settings.max_attached_streams:
            raise LocalProtocolError(
                f"a call may attach at most {self.settings.max_attached_streams} streams, got {len(sources)}"
            )
        if deadline is not None and (sources or self._nursery is None):
            # (Rare: a call with streams has tasks of its own; a scope bounds them all.)
            with trio.move_on_at(deadline):
                return await self.call(body, streams=streams)
            raise trio.TooSlowError
        if not self.usable:
            raise NotDelivered(str(self._lost("cannot start a call")))
        limit = self._outbound_limit
        if deadline is None:
            await limit.acquire()
        else:
            try:
                limit.acquire_nowait()  # (the usual case: a slot is free, and taking it needs no pass of the loop)
            except trio.WouldBlock:
                with trio.move_on_at(deadline) as waited:
                    await limit.acquire()
                if waited.cancelled_caught:
                    raise trio.TooSlowError from None
        try:
            return await self._call(body, sources, deadline)
        finally:
            limit.release()

    async def _call(
        self, body: Any, sources: dict[str, StreamSource], deadline: float | None
    ) -> Reply[trio.abc.ReceiveStream]:
        if not self.usable:
            raise NotDelivered(str(self._lost("cannot start a call")))
        sid = self._codec.new_stream_id()
        ids = {name: self._codec.new_stream_id() for name in sources}
        frame = self._codec.encode_call(sid, body, ids)
        pending = _PendingCall()
        self._calls[sid] = pending
        outs = {name: self._new_stream(ids[name], send=True, receive=False) for name in sources}
        self._queue_ctrl(frame, alone=len(self._calls) == 1)
        position = self._ctrl_queued
        if deadline is not None:
            self._watch(deadline, sid, pending)
        try:
            if sources:
                async with trio.open_nursery() as nursery:
                    for name, source in sources.items():
                        nursery.start_soon(self._pump, outs[name], source)
                    await pending.event.wait()
                    nursery.cancel_scope.cancel()
            else:
                await pending.event.wait()
            if pending.expired:
                raise trio.TooSlowError
        except BaseException:
            if not pending.event.is_set() or pending.expired:
                # We gave up (cancelled, or the deadline passed): tell the peer so it cancels the handler.
                self._queue_ctrl(self._codec.encode_reset(sid, None))
            elif pending.reply is not None:
                for st in pending.reply.streams.values():
                    assert isinstance(st, MuxStream)
                    st._close_now()
            raise
        finally:
            self._calls.pop(sid, None)
            for st in outs.values():
                st._abort_send(None)
        if pending.error is not None:
            if self._ctrl_taken < position and isinstance(pending.error, Unavailable):
                raise NotDelivered(f"{pending.error} (the call was never sent)") from pending.error
            raise pending.error
        assert pending.reply is not None
        return pending.reply

    def _watch(self, deadline: float, sid: int, pending: _PendingCall) -> None:
        """Bound ``pending`` by ``deadline``: the watcher task marks it expired and wakes its caller then."""
        heap = self._deadlines
        if len(heap) >= _SWEEP_AT and len(heap) > 4 * len(self._calls):
            heap[:] = [entry for entry in heap if not entry[2].event.is_set()]  # (finished calls leave at once)
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, sid, pending))
        wake = self._deadline_wake
        if not self._watching:
            assert self._nursery is not None
            self._watching = True
            self._nursery.start_soon(self._watch_deadlines)
        elif wake is not None and deadline < wake.deadline:
            wake.deadline = deadline  # (an earlier deadline than the one the watcher sleeps until)

    async def _watch_deadlines(self) -> None:
        """Expire the calls whose deadline passed, sleeping until the earliest one; ends once the last one's
        deadline has passed (a connection keeps no timer for calls made longer ago than their bound)."""
        heap = self._deadlines
        try:
            while heap:
                now = trio.current_time()
                while heap and (heap[0][0] <= now or heap[0][2].event.is_set()):
                    _, _, pending = heapq.heappop(heap)
                    if not pending.event.is_set():
                        pending.expired = True
                        pending.event.set()
                if not heap:
                    break
                with trio.CancelScope(deadline=heap[0][0]) as wake:
                    self._deadline_wake = wake
                    await trio.sleep_forever()
                self._deadline_wake = None
        finally:
            self._deadline_wake = None
            self._watching = False

    def _on_reply(self, ev: c.Reply) -> None:
        pending = self._calls.get(ev.stream_id)
        if pending is None or pending.event.is_set():
            # The call was cancelled meanwhile: refuse the reply's streams so the peer stops sending them.
            self._answer_peer(*(self._codec.encode_stop(sid) for sid in ev.streams.values()))
            return
        streams = {name: self._new_stream(sid, send=False, receive=True) for name, sid in ev.streams.items()}
        pending.reply = Reply(ev.body, streams)
        pending.event.set()

    async def _pump(self, st: MuxStream, source: StreamSource) -> None:
        await st.pump_from(source, error_map=self._registry.encode)

    # ------------------------------------------------------------------ calls, inbound

    def _on_incoming_call(self, ev: c.Call) -> None:
        if self._on_call is None or self._nursery is None or self._inbound_busy >= self.settings.max_inbound_calls:
            why = (
                "does not accept calls"
                if self._on_call is None
                else f"has {self._inbound_busy} calls from this connection running, its limit"
            )
            err = self._registry.encode(Overloaded(f"the peer {why}; back off and retry"))
            stops = (self._codec.encode_stop(sid) for sid in ev.streams.values())
            self._answer_peer(self._codec.encode_reset(ev.stream_id, err), *stops)
            return
        if self._on_quick_call is not None and not ev.streams:
            sid = ev.stream_id
            self._quick_calls.add(sid)
            self._inbound_busy += 1
            answer = _Answer(self, sid)
            try:
                taken = self._on_quick_call(IncomingCall(peer=self.peer, body=ev.body, streams={}), answer)
            except Exception as exc:  # (it must not raise; if it does, the call fails and the connection lives)
                log.exception("a quick call handler for %s raised", self.description, extra={"peer": self.description})
                taken = True
                answer.fail(exc)
            if taken:
                return
            self._quick_calls.discard(sid)
            self._inbound_busy -= 1
        streams = {name: self._new_stream(sid, send=False, receive=True) for name, sid in ev.streams.items()}
        scope = trio.CancelScope()
        self._inbound_calls[ev.stream_id] = scope
        self._inbound_busy += 1
        self._nursery.start_soon(self._serve_call, ev.stream_id, ev.body, streams, scope)

    async def _serve_call(self, sid: int, body: Any, streams: dict[str, MuxStream], scope: trio.CancelScope) -> None:
        assert self._on_call is not None
        sources: dict[str, StreamSource] = {}
        outs: dict[str, MuxStream] = {}
        bound = CallBound(scope)
        try:
            with scope:
                try:
                    result = await self._on_call(IncomingCall(peer=self.peer, body=body, streams=streams, bound=bound))
                except Exception as exc:
                    if not isinstance(exc, BoroughError):
                        log.info(
                            "a call handler for %s raised %r", self.description, exc, extra={"peer": self.description}
                        )
                    self._reply_error(sid, exc)
                    return
                finally:
                    for st in streams.values():
                        st._close_now()
                reply = result if isinstance(result, Reply) else Reply(result)
                sources = dict(reply.streams)
                if len(sources) > self.settings.max_attached_streams:
                    self._reply_error(
                        sid,
                        LocalProtocolError(
                            f"the handler's reply attaches {len(sources)} streams, over the limit of "
                            f"{self.settings.max_attached_streams}"
                        ),
                    )
                    return
                ids = {name: self._codec.new_stream_id() for name in sources}
                try:
                    frame = self._codec.encode_reply(sid, reply.body, ids)
                except LocalProtocolError as exc:
                    log.info(
                        "a call handler's reply for %s cannot be sent: %s",
                        self.description,
                        exc,
                        extra={"peer": self.description},
                    )
                    self._reply_error(sid, exc)
                    return
                outs = {name: self._new_stream(ids[name], send=True, receive=False) for name in sources}
                self._queue_ctrl(frame, alone=self._inbound_busy == 1)  # (this call's own, released below)
                # The call is answered: a late RESET from the caller must no longer cancel the reply streams.
                self._inbound_calls.pop(sid, None)
            if scope.cancelled_caught and bound.expired is not None and sid in self._inbound_calls:
                # The handler's own deadline passed (a RESET from the caller unregistered the call: no answer).
                self._reply_error(sid, bound.expired())
                return
            if outs and not self.closed:
                async with trio.open_nursery() as nursery:
                    for name, source in sources.items():
                        nursery.start_soon(self._pump, outs[name], source)
        finally:
            self._inbound_calls.pop(sid, None)
            self._inbound_busy -= 1

    def _quick_answered(self, sid: int, body: Any, error: BaseException | None) -> None:
        self._inbound_busy -= 1
        if sid not in self._quick_calls:
            return  # reset by the caller, or the connection closed
        self._quick_calls.discard(sid)
        if error is None:
            try:
                self._queue_ctrl(self._codec.encode_reply(sid, body, {}), alone=self._inbound_busy == 0)
                return
            except LocalProtocolError as exc:
                log.info("a reply for %s cannot be sent: %s", self.description, exc, extra={"peer": self.description})
                error = exc
        self._queue_ctrl(self._codec.encode_reset(sid, self._registry.encode(error)))

    def _reply_error(self, sid: int, exc: BaseException) -> None:
        if self._inbound_calls.pop(sid, None) is not None:
            self._queue_ctrl(self._codec.encode_reset(sid, self._registry.encode(exc)))

    # ------------------------------------------------------------------ plain streams

    async def open_stream(self, header: Any = None) -> MuxStream:
        """Open a two-way byte stream; the peer's ``on_stream`` handler receives it with ``header``."""
        if not self.usable:
            raise self._lost("cannot open a stream")
        sid = self._codec.new_stream_id()
        frame = self._codec.send(c.Open(stream_id=sid, header=header))
        st = self._new_stream(sid, send=True, receive=True, header=header)
        self._queue_ctrl(frame)
        await trio.lowlevel.checkpoint()
        return st

    # ------------------------------------------------------------------ liveness

    async def _keepalive(self) -> None:
        s = self.settings
        while True:
            now = trio.current_time()
            if self._out_active:
                self._out_active = False
                self._last_activity = now
            if self._streams or self._calls or self._inbound_busy:
                self._last_activity = max(self._last_activity, now)
            silent = now - self._last_received
            if silent >= s.liveness_timeout:
                log.warning(
                    "closing the connection to %s: nothing received for %.1f s",
                    self.description,
                    silent,
                    extra={"peer": self.description},
                )
                self._fail(Unavailable(f"{self.description} sent nothing for {silent:.1f} s (liveness timeout)"))
                return
            if now - self._last_activity >= s.idle_timeout:
                log.debug("closing the idle connection to %s", self.description, extra={"peer": self.description})
                await self.aclose("idle")
                return
            if silent >= s.keepalive_interval and now - self._last_ping >= s.keepalive_interval:
                self._last_ping = now
                self._ping_nonce += 1
                self._queue_ctrl(self._codec.send(c.Ping(nonce=self._ping_nonce)), active=False)
            wake = [self._last_received + s.liveness_timeout, self._last_activity + s.idle_timeout]
            if silent < s.keepalive_interval:
                wake.append(self._last_received + s.keepalive_interval)
            else:
                wake.append(self._last_ping + s.keepalive_interval)
            await trio.sleep_until(max(min(wake), now + 1e-3))

    # ------------------------------------------------------------------ closing

    async def _wait_flushed(self) -> None:
        while self._prio or self._ctrl or self._data:
            if self._closed_reason is not None:
                return
            self._flushed = ev = trio.Event()
            await ev.wait()

    def _fail(self, reason: BaseException) -> None:
        """End the connection now: every stream and call fails, every task is cancelled."""
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        lost = self._lost("the call failed")
        for pending in self._calls.values():
            if not pending.event.is_set():
                pending.error = lost
                pending.event.set()
        for st in list(self._streams.values()):
            st._on_connection_lost(reason)
        self._streams.clear()
        self._quick_calls.clear()
        self._prio.clear()
        self._prio_bytes = 0
        self._ctrl.clear()
        self._data.clear()
        self._kick()
        if self._flushed is not None:
            self._flushed.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._closed_event.set()

    async def aclose(self, reason: str = "closing") -> None:
        """Close gracefully: tell the peer why (GOAWAY), flush what is queued (bounded), then end everything."""
        if self._closed_reason is None:
            # When we are being cancelled from outside, the writer task is cancelled too: nothing would flush.
            if trio.current_effective_deadline() != float("-inf"):
                with trio.CancelScope(shield=True), trio.move_on_after(self.settings.close_timeout):
                    self._queue_ctrl(self._codec.send(c.GoAway(reason=reason)))
                    await self._wait_flushed()
            self._fail(Unavailable(f"the connection to {self.description} was closed locally ({reason})"))
        await trio.lowlevel.checkpoint()

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader)
                nursery.start_soon(self._keepalive)
                task_status.started()
        finally:
            self._fail(Unavailable(f"the connection to {self.description} was closed"))
            with trio.CancelScope(shield=True), trio.move_on_after(self.settings.close_timeout):
                await trio.aclose_forcefully(self._stream)


@asynccontextmanager
async def open_mux(
    stream: trio.abc.Stream,
    codec: c.FrameCodec,
    *,
    settings: WireSettings | None = None,
    on_message: MessageHandler | None = None,
    on_call: CallHandler | None = None,
    on_stream: StreamHandler | None = None,
    registry: ErrorRegistry = default_registry,
    description: str | None = None,
    peer: PeerInfo | None = None,
    on_quick_call: QuickCallHandler | None = None,
    hooks: DispatchHooks | None = None,
) -> AsyncIterator[MuxConnection]:
    """Run a multiplexed connection over ``stream`` (handshake already done, see ``handshake``) until the
    block exits (graceful close, bounded) or the connection fails (``conn.closed`` turns True; the block is
    not interrupted, so watch ``wait_closed``). The stream is closed on exit."""
    conn = MuxConnection(
        stream,
        codec,
        settings=settings or WireSettings(),
        on_message=on_message,
        on_call=on_call,
        on_stream=on_stream,
        registry=registry,
        description=description,
        peer=peer,
        on_quick_call=on_quick_call,
        hooks=hooks,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(conn._run)
        try:
            yield conn
        finally:
            await conn.aclose()
