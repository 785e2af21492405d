"""The frame codec: bytes in, events out; events in, bytes out. Sans-IO, in the shape of h11.

Rules of this file:
- Everything about how a frame looks on the wire, and every check a received frame must pass, lives here:
  the length prefix, the CBOR ``[stream id, kind, payload]`` array, the payload type of each kind, the
  handshake record, which side may open which stream ids, and the maximum frame size.
- It does not know about trio, sockets, clocks, tasks, flow-control accounting or what a call means; the
  multiplexed connection (``mux.py``) drives it. It imports no I/O (``tests/test_sans_io.py`` checks).
- Every malformed input becomes a ``RemoteProtocolError`` saying what was wrong; misuse by our own code
  (sending before the handshake, a frame over the peer's limit, an unencodable object) is a
  ``LocalProtocolError``. After a ``RemoteProtocolError`` the codec stays broken and raises it again.

Wire format. A connection is a sequence of frames; a frame is a 4-byte big-endian unsigned length N
(1 <= N <= max frame size) followed by N bytes holding exactly one CBOR array ``[stream_id, kind, payload]``.
Stream 0 is the connection itself. The dialer opens odd stream ids, the acceptor even ones, each side in
strictly increasing order (so a frame for a stream id that was opened and since forgotten is told apart from
one for a stream id never opened). Kinds and payloads:

  ===  =======  ========  =====================================================================
  0    HELLO    0         handshake map (see ``Hello``); the first frame each way, exactly once
  1    OPEN     new       header (any CBOR): opens a two-way byte stream
  2    DATA     stream    bytes, counted against the receiver's credit window
  3    END      stream    null: the sender finished its direction gracefully
  4    RESET    stream    null or an error map: the sender aborts its direction / the call
  5    STOP     stream    null: the receiver will read no more; the sender must stop sending
  6    WINDOW   stream    int > 0: credit, more bytes the sender may send on that stream
  7    CALL     new       ``[body, {name: new stream id}]``: a request, with attached one-way streams
  8    REPLY    ours      ``[body, {name: new stream id}]``: the answer to our CALL on that stream id
  9    MESSAGE  0         any CBOR: a priority (Raft, gossip) message
  10   PING     0         int nonce
  11   PONG     0         int nonce, echoed
  12   GOAWAY   0         text: why the sender is closing the connection
  ===  =======  ========  =====================================================================
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import cbor2

from borough.cbor_safe import CborLimits, CborRejected, SafeDecoder
from borough.errors import LocalProtocolError, RemoteProtocolError
from borough.wire.events import (
    MIN_PROTOCOL_VERSION,
    NEED_DATA,
    PROTOCOL_VERSION,
    Call,
    ConnectionClosed,
    Data,
    End,
    Event,
    GoAway,
    Hello,
    Kind,
    Message,
    NeedData,
    Open,
    Ping,
    Pong,
    Reply,
    Reset,
    Role,
    Stop,
    Window,
)

__all__ = [
    "MAGIC",
    "MAX_STREAM_ID",
    "MIN_PROTOCOL_VERSION",
    "NEED_DATA",
    "NeedData",
    "PROTOCOL_VERSION",
    "Call",
    "ConnectionClosed",
    "Data",
    "End",
    "Event",
    "FrameCodec",
    "GoAway",
    "Hello",
    "Kind",
    "Message",
    "Open",
    "Ping",
    "Pong",
    "Reply",
    "Reset",
    "Role",
    "Stop",
    "Window",
    "encode_message_frame",
    "encode_payload",
    "handshake_refusal",
]

MAGIC: Final = "borough"
MAX_STREAM_ID: Final = 2**62
_PREFIX: Final = 4
_MAX_WINDOW: Final = 2**31
_MAX_NONCE: Final = 2**64
#: The longest cluster id, node id or address a handshake may carry (they end up in log lines and errors).
MAX_HELLO_TEXT: Final = 1024
#: A GOAWAY's reason is cut to this many characters (at most 800 bytes of UTF-8), so it fits any peer's frame
#: limit (at least 1024 bytes).
MAX_GOAWAY_REASON: Final = 200


_END, _RESET, _STOP, _WINDOW, _CALL, _REPLY, _MESSAGE = 3, 4, 5, 6, 7, 8, 9
_KINDS: Final[dict[int, Kind]] = {int(k): k for k in Kind}
# The envelope of a call or reply without streams, around its body: ``[sid, kind, [body, {}]]``.
_ARRAY3: Final = b"\x83"
_CALL_HEAD: Final = bytes((_CALL, 0x82))  # (the kind, then the two-item array holding the body and the streams)
_REPLY_HEAD: Final = bytes((_REPLY, 0x82))
_EMPTY_MAP: Final = b"\xa0"


# ---------------------------------------------------------------------------------------------------- helpers


def encode_payload(obj: Any, what: str) -> bytes:
    """CBOR-encode ``obj``; a ``LocalProtocolError`` naming ``what`` if it cannot be encoded."""
    try:
        return cbor2.dumps(obj)
    except Exception as exc:  # cbor2 raises several types (CBOREncodeError, TypeError, ValueError, RecursionError)
        raise LocalProtocolError(
            f"{what} cannot be encoded as CBOR ({type(exc).__name__}: {exc}); send only CBOR-encodable values "
            f"(None, bool, int, float, str, bytes, lists, dicts, ...)"
        ) from exc


def _uint_header(major: int, n: int) -> bytes:
    # Minimal CBOR head for an unsigned argument, as RFC 8949 §3 lays it out.
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


def _read_uint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int, int] | None:
    """Parse a CBOR head at ``pos``: (major type, argument, next position), or None if it is not a plain head."""
    if pos >= end:
        return None
    ib = buf[pos]
    major, info = ib >> 5, ib & 0x1F
    if info < 24:
        return major, info, pos + 1
    size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if size is None or pos + 1 + size > end:
        return None
    return major, int.from_bytes(buf[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def handshake_refusal(local: Hello, remote: Hello) -> str | None:
    """Why a connection between ``local`` and ``remote`` must be refused, or None if it may proceed.

    Versions are compatible when the ranges ``[min_version, version]`` overlap. Cluster ids must match when both
    sides know theirs; a side that has none yet (a node joining with an empty data dir, or a client) accepts.
    """
    if max(local.min_version, remote.min_version) > min(local.version, remote.version):
        return (
            f"incompatible wire protocol versions: we speak {local.min_version}..{local.version}, the peer "
            f"{remote.min_version}..{remote.version}; upgrade the older node"
        )
    if local.cluster_id is not None and remote.cluster_id is not None and local.cluster_id != remote.cluster_id:
        who = f"node {remote.node_id!r}" if remote.node_id is not None else "a client"
        return (
            f"{who} at {remote.address or 'an unknown address'} belongs to cluster {remote.cluster_id!r}, "
            f"we belong to cluster {local.cluster_id!r}; check the join addresses and data directories"
        )
    return None


def _hello_to_wire(h: Hello) -> dict[str, Any]:
    return {
        "magic": MAGIC,
        "version": h.version,
        "min_version": h.min_version,
        "cluster": h.cluster_id,
        "node": h.node_id,
        "address": h.address,
        "window": h.window,
        "max_frame": h.max_frame_size,
    }


def _is_int(x: object) -> bool:
    return type(x) is int


def _opt_str(x: object) -> bool:
    return x is None or type(x) is str


# ---------------------------------------------------------------------------------------------------- codec


class FrameCodec:
    """One connection's framing state. Feed bytes with ``receive_data`` (``b""`` means EOF), pull events with
    ``next_event`` until it returns ``NEED_DATA``; turn events into bytes with ``send`` (or the fast encoders).

    The first event each way must be a ``Hello``. ``peer_hello`` is set once the peer's has arrived.
    """

    def __init__(
        self, role: Role, *, max_frame_size: int, max_attached_streams: int = 16, max_frame_items: int = 65536
    ) -> None:
        self.role = role
        self.max_frame_size = max_frame_size
        self.max_attached_streams = max_attached_streams
        #: The most CBOR data items one frame may hold (``cbor_budget``); settable until the next frame.
        self.max_frame_items = max_frame_items
        self.peer_hello: Hello | None = None
        self._hello_sent = False
        self._buf = bytearray()
        self._start = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._closed_reported = False
        # Our stream ids: the next one to hand out. Peer's: the highest it has opened so far.
        self._next_local = 1 if role is Role.DIALER else 2
        self._peer_parity = 0 if role is Role.DIALER else 1
        self._peer_highest = self._peer_parity - 2  # -1 or -2: nothing opened yet
        self.frames_received = 0
        self.frame_bytes_received = 0  # frame bodies decoded so far: a measure of the decoding work done
        # One decoder for the connection's life: building one per frame costs more than decoding a small frame.
        # Any decoding error breaks the codec for good, so no half-decoded state can leak into the next frame.
        # It accepts only the CBOR a frame needs (``cbor_safe``): bounded work, an allow-list of tags.
        self._decoder = SafeDecoder(CborLimits(max_items=max_frame_items))
        # MESSAGE payloads decoded on their own (``_decode_message_fast``) sit one level less deep than in their
        # frame: one level less allowed keeps the verdict on every document the same as the whole frame's.
        limits = self._decoder.limits
        self._payload_decoder = SafeDecoder(attrs.evolve(limits, max_depth=limits.max_depth - 1))

    # ------------------------------------------------------------------ stream ids

    def new_stream_id(self) -> int:
        """Hand out the next stream id of our side (never reused)."""
        sid = self._next_local
        if sid >= MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted on this connection; reconnect")
        self._next_local += 2
        return sid

    def is_local_stream(self, sid: int) -> bool:
        """True if ``sid`` belongs to our side's id space (whether or not it is still open)."""
        return sid % 2 != self._peer_parity

    @property
    def peer_max_frame_size(self) -> int:
        return self.peer_hello.max_frame_size if self.peer_hello is not None else self.max_frame_size

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the peer; ``b""`` says the peer closed its side (EOF)."""
        if self._eof:
            raise LocalProtocolError("receive_data called after EOF was already fed")
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf) - self._start

    def next_event(self) -> Event | NeedData:
        """The next event, or ``NEED_DATA``. Raises ``RemoteProtocolError`` on malformed input (and forever after)."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _next_event(self) -> Event | NeedData:
        buf, start = self._buf, self._start
        avail = len(buf) - start
        if avail < _PREFIX:
            if self._eof:
                if avail == 0:
                    if self.peer_hello is None:
                        raise RemoteProtocolError("the peer closed the connection before completing the handshake")
                    return ConnectionClosed()
                raise RemoteProtocolError(
                    f"the peer closed the connection in the middle of a frame's length prefix ({avail} of 4 bytes)"
                )
            return NEED_DATA
        n = int.from_bytes(buf[start : start + _PREFIX], "big")
        if n == 0:
            raise RemoteProtocolError("received a frame of length 0; every frame holds a CBOR array")
        if n > self.max_frame_size:
            raise RemoteProtocolError(
                f"received a frame length prefix of {n} bytes, over our maximum frame size of "
                f"{self.max_frame_size} bytes"
            )
        if avail < _PREFIX + n:
            if self._eof:
                raise RemoteProtocolError(
                    f"the peer closed the connection in the middle of a frame ({avail - _PREFIX} of {n} bytes)"
                )
            return NEED_DATA
        lo, hi = start + _PREFIX, start + _PREFIX + n
        self._start = hi
        if hi == len(buf):
            # Everything consumed: reset cheaply instead of shifting bytes.
            event = self._decode(buf, lo, hi)
            del buf[:]
            self._start = 0
            return event
        if self._start > 65536 and self._start * 2 > len(buf):
            event = self._decode(buf, lo, hi)
            del buf[: self._start]
            self._start = 0
            return event
        return self._decode(buf, lo, hi)

    def _decode(self, buf: bytearray, lo: int, hi: int) -> Event:
        self.frames_received += 1
        self.frame_bytes_received += hi - lo
        first = buf[lo]
        if first == 0x83 and self.peer_hello is not None:
            if hi - lo > 3 and buf[lo + 1] == 0 and buf[lo + 2] == _MESSAGE:
                return self._decode_message_fast(buf, lo, hi)
            if buf[hi - 1] == 0xA0:
                reply = self._decode_reply_fast(buf, lo, hi)
                if reply is not None:
                    return reply
            if hi - lo >= 256:
                fast = self._decode_data_fast(buf, lo, hi)
                if fast is not None:
                    return fast
        return self._decode_generic(buf, lo, hi)

    def _decode_generic(self, buf: bytearray, lo: int, hi: int) -> Event:
        raw = _copy(buf, lo, hi)
        try:
            frame = self._decoder.decode(raw, max_items=self.max_frame_items)
        except CborRejected as exc:
            raise RemoteProtocolError(f"a {len(raw)}-byte frame was refused: {exc}; closing the connection") from None
        if type(frame) is not list or len(frame) != 3:
            raise RemoteProtocolError(
                f"a frame must be a CBOR array [stream id, kind, payload], got {_describe(frame)}"
            )
        sid, kind, payload = frame
        if not _is_int(sid) or not 0 <= sid < MAX_STREAM_ID:
            raise RemoteProtocolError(f"a frame's stream id must be an integer in [0, 2**62), got {_describe(sid)}")
        if not _is_int(kind):
            raise RemoteProtocolError(f"a frame's kind must be an integer, got {_describe(kind)}")
        k = _KINDS.get(kind)
        if k is None:
            raise RemoteProtocolError(f"unknown frame kind {kind} on stream {sid}")
        if self.peer_hello is None:
            if k is not Kind.HELLO:
                raise RemoteProtocolError(f"expected the handshake (HELLO) as the first frame, got {k.name}")
            return self._decode_hello(sid, payload)
        if k is Kind.HELLO:
            raise RemoteProtocolError("received a second handshake (HELLO) on an established connection")
        return self._decode_frame(sid, k, payload)

    def _decode_message_fast(self, buf: bytearray, lo: int, hi: int) -> Event:
        # A MESSAGE frame (Raft, SWIM: most frames between nodes) starts with the three bytes of its minimal
        # encoding, ``[0, 9, ``: decode only the payload that follows, against the whole frame's budget less
        # those three items (and one level less deep, see ``_payload_decoder``), so no document passes here that
        # the generic path refuses, or the other way round. A frame encoded otherwise takes the generic path.
        raw = _copy(buf, lo + 3, hi)
        try:
            body = self._payload_decoder.decode(raw, max_items=max(self.max_frame_items - 3, 0))
        except CborRejected:
            # Refused: the generic path refuses it too, and says why in terms of the whole frame (a hostile frame
            # costs at most two bounded decodes, and closes the connection).
            return self._decode_generic(buf, lo, hi)
        return Message(body=body)

    def _decode_reply_fast(self, buf: bytearray, lo: int, hi: int) -> Event | None:
        # A REPLY without streams whose body is null (a write's answer) or one definite-length byte string (a
        # get's encoded value), in its minimal encoding ``[sid, 8, [body, {}]]``: parsed by hand, then checked as
        # any reply is (``_decode_frame``). Anything else (None here) takes the generic path, which decodes it
        # the same way or refuses it.
        head = _read_uint(buf, lo + 1, hi)
        if head is None or head[0] != 0:
            return None
        _, sid, pos = head
        if pos + 3 > hi - 1 or buf[pos] != _REPLY or buf[pos + 1] != 0x82:
            return None
        pos += 2
        body: bytes | None
        if buf[pos] == 0xF6 and pos + 1 == hi - 1:
            body = None
        else:
            head = _read_uint(buf, pos, hi - 1)
            if head is None or head[0] != 2 or head[2] + head[1] != hi - 1:
                return None
            body = _copy(buf, head[2], hi - 1)
        if not 0 <= sid < MAX_STREAM_ID:
            return None
        return self._decode_frame(sid, Kind.REPLY, [body, {}])

    def _decode_data_fast(self, buf: bytearray, lo: int, hi: int) -> Data | None:
        # DATA frames carry bulk; parse their fixed shape by hand to skip a copy and the generic decoder.
        # Anything that does not match exactly falls through to the generic path (and its checks).
        # (The caller checked the handshake is done and the first byte is 0x83.)
        head = _read_uint(buf, lo + 1, hi)
        if head is None or head[0] != 0:
            return None
        _, sid, pos = head
        if pos >= hi or buf[pos] != Kind.DATA:
            return None
        head = _read_uint(buf, pos + 1, hi)
        if head is None or head[0] != 2 or head[2] + head[1] != hi:
            return None
        if not 0 < sid < MAX_STREAM_ID:
            return None
        self._check_existing(sid, Kind.DATA)
        return Data(stream_id=sid, data=_copy(buf, head[2], hi))

    def _decode_hello(self, sid: int, p: Any) -> Hello:
        if sid != 0:
            raise RemoteProtocolError(f"the handshake (HELLO) must be on stream 0, got stream {sid}")
        if type(p) is not dict:
            raise RemoteProtocolError(f"the handshake payload must be a map, got {_describe(p)}")
        if p.get("magic") != MAGIC:
            raise RemoteProtocolError(
                f"the peer does not speak the Borough wire protocol (handshake magic {_describe(p.get('magic'))})"
            )
        version: Any = p.get("version")
        min_version: Any = p.get("min_version")
        if not (_is_int(version) and _is_int(min_version) and 1 <= min_version <= version):
            raise RemoteProtocolError(
                f"the handshake's version range is invalid: min_version={_describe(min_version)}, "
                f"version={_describe(version)}"
            )
        for key in ("cluster", "node", "address"):
            if not _opt_str(p.get(key)) or len(p.get(key) or "") > MAX_HELLO_TEXT:
                raise RemoteProtocolError(
                    f"the handshake's {key!r} must be text of at most {MAX_HELLO_TEXT} characters or null, got "
                    f"{_describe(p[key])}"
                )
        window: Any = p.get("window")
        max_frame: Any = p.get("max_frame")
        if not (_is_int(window) and 1 <= window < _MAX_WINDOW):
            raise RemoteProtocolError(
                f"the handshake's window must be an integer in [1, 2**31), got {_describe(window)}"
            )
        if not (_is_int(max_frame) and 1024 <= max_frame < 2**31):
            raise RemoteProtocolError(
                f"the handshake's max_frame must be an integer in [1024, 2**31), got {_describe(max_frame)}"
            )
        hello = Hello(
            version=version,
            min_version=min_version,
            cluster_id=p.get("cluster"),
            node_id=p.get("node"),
            address=p.get("address"),
            window=window,
            max_frame_size=max_frame,
        )
        self.peer_hello = hello
        return hello

    def _check_new_peer_stream(self, sid: int, what: str) -> None:
        if sid % 2 != self._peer_parity:
            raise RemoteProtocolError(f"{what}: stream id {sid} belongs to our side; the peer must use its own ids")
        if sid <= self._peer_highest:
            raise RemoteProtocolError(
                f"{what}: stream id {sid} is not above the peer's previous stream id {self._peer_highest}"
            )
        self._peer_highest = sid

    def _check_existing(self, sid: int, kind: Kind) -> None:
        if sid == 0:
            raise RemoteProtocolError(f"a {kind.name} frame must name a stream, got stream 0")
        if sid % 2 == self._peer_parity:
            if sid > self._peer_highest:
                raise RemoteProtocolError(f"a {kind.name} frame names stream {sid}, which the peer never opened")
        elif sid >= self._next_local:
            raise RemoteProtocolError(f"a {kind.name} frame names stream {sid}, which we never opened")

    def _check_stream_map(self, p: Any, kind: Kind, sid: int) -> tuple[Any, dict[str, int]]:
        if type(p) is not list or len(p) != 2:
            raise RemoteProtocolError(f"a {kind.name} payload must be [body, streams], got {_describe(p)}")
        body, streams = p
        if type(streams) is not dict:
            raise RemoteProtocolError(
                f"a {kind.name}'s streams must be a map of name to stream id, got {_describe(streams)}"
            )
        if len(streams) > self.max_attached_streams:
            raise RemoteProtocolError(
                f"a {kind.name} on stream {sid} attaches {len(streams)} streams, over the limit of "
                f"{self.max_attached_streams}"
            )
        for name, attached in streams.items():
            if type(name) is not str or not _is_int(attached) or not 0 < attached < MAX_STREAM_ID:
                raise RemoteProtocolError(
                    f"a {kind.name}'s streams map must hold text names and stream ids, got {_describe(name)}: "
                    f"{_describe(attached)}"
                )
            self._check_new_peer_stream(attached, f"a stream attached to {kind.name} {sid}")
        return body, streams

    def _decode_frame(self, sid: int, k: Kind, p: Any) -> Event:
        if k is Kind.DATA:
            self._check_existing(sid, k)
            if type(p) is not bytes:
                raise RemoteProtocolError(f"a DATA payload must be a byte string, got {_describe(p)}")
            return Data(stream_id=sid, data=p)
        if k is Kind.MESSAGE:
            if sid != 0:
                raise RemoteProtocolError(f"a MESSAGE must be on stream 0, got stream {sid}")
            return Message(body=p)
        if k is Kind.WINDOW:
            self._check_existing(sid, k)
            if not _is_int(p) or not 0 < p < _MAX_WINDOW:
                raise RemoteProtocolError(f"a WINDOW credit must be an integer in [1, 2**31), got {_describe(p)}")
            return Window(stream_id=sid, credit=p)
        if k is Kind.CALL:
            if sid == 0:
                raise RemoteProtocolError("a CALL must open a new stream, got stream 0")
            self._check_new_peer_stream(sid, "a CALL")
            body, streams = self._check_stream_map(p, k, sid)
            return Call(stream_id=sid, body=body, streams=streams)
        if k is Kind.REPLY:
            if sid == 0 or not self.is_local_stream(sid) or sid >= self._next_local:
                raise RemoteProtocolError(f"a REPLY names stream {sid}, which is not a call we made")
            body, streams = self._check_stream_map(p, k, sid)
            return Reply(stream_id=sid, body=body, streams=streams)
        if k is Kind.END or k is Kind.STOP:
            self._check_existing(sid, k)
            if p is not None:
                raise RemoteProtocolError(f"a {k.name} payload must be null, got {_describe(p)}")
            return End(stream_id=sid) if k is Kind.END else Stop(stream_id=sid)
        if k is Kind.RESET:
            self._check_existing(sid, k)
            if p is not None and not (
                type(p) is dict
                and type(p.get("type")) is str
                and type(p.get("message")) is str
                and type(p.get("fields", {})) is dict
            ):
                raise RemoteProtocolError(
                    f"a RESET payload must be null or a map with text 'type' and 'message', got {_describe(p)}"
                )
            return Reset(stream_id=sid, error=p)
        if k is Kind.OPEN:
            if sid == 0:
                raise RemoteProtocolError("an OPEN must open a new stream, got stream 0")
            self._check_new_peer_stream(sid, "an OPEN")
            return Open(stream_id=sid, header=p)
        if k is Kind.PING or k is Kind.PONG:
            # The nonce is echoed: bounding it bounds the PONG we owe, so it always fits the peer's frame limit.
            if sid != 0 or not _is_int(p) or not 0 <= p < _MAX_NONCE:
                raise RemoteProtocolError(
                    f"a {k.name} must carry an integer in [0, 2**64) on stream 0, got {_describe(p)}"
                )
            return Ping(nonce=p) if k is Kind.PING else Pong(nonce=p)
        # GOAWAY (HELLO was handled by the caller)
        if sid != 0 or type(p) is not str:
            raise RemoteProtocolError(f"a GOAWAY must carry text on stream 0, got {_describe(p)}")
        return GoAway(reason=p)

    # ------------------------------------------------------------------ sending

    def _frame(self, sid: int, kind: int, payload: Any, what: str) -> bytes:
        return self._prefixed(encode_payload([sid, kind, payload], what), what)

    def _prefixed(self, encoded: bytes, what: str) -> bytes:
        """An encoded frame with its length prefix, if it is within the peer's frame limit."""
        limit = self.peer_max_frame_size
        if len(encoded) > limit:
            raise LocalProtocolError(
                f"{what} encodes to {len(encoded)} bytes, over the peer's maximum frame size of {limit} bytes; "
                f"send large data as a stream instead"
            )
        return len(encoded).to_bytes(_PREFIX, "big") + encoded

    def send(self, event: Event) -> bytes:
        """The bytes for ``event``. The ``Hello`` must go first; stream ids must have been opened properly."""
        if isinstance(event, Hello):
            if self._hello_sent:
                raise LocalProtocolError("the handshake (HELLO) was already sent on this connection")
            self._hello_sent = True
            return self._frame(0, Kind.HELLO, _hello_to_wire(event), "the handshake")
        if not self._hello_sent:
            raise LocalProtocolError(f"cannot send {type(event).__name__} before the handshake (HELLO)")
        if isinstance(event, Data):
            return self.encode_data(event.stream_id, event.data)
        if isinstance(event, Message):
            return self.encode_message(event.body)
        if isinstance(event, (Call, Reply)):
            kind = Kind.CALL if isinstance(event, Call) else Kind.REPLY
            what = "the call body" if kind is Kind.CALL else "the reply body"
            return self._frame(event.stream_id, kind, [event.body, event.streams], what)
        if isinstance(event, Open):
            return self._frame(event.stream_id, Kind.OPEN, event.header, "the stream header")
        if isinstance(event, End):
            return self._frame(event.stream_id, Kind.END, None, "END")
        if isinstance(event, Stop):
            return self._frame(event.stream_id, Kind.STOP, None, "STOP")
        if isinstance(event, Reset):
            return self._frame(event.stream_id, Kind.RESET, event.error, "the reset error")
        if isinstance(event, Window):
            if not 0 < event.credit < _MAX_WINDOW:
                raise LocalProtocolError(f"WINDOW credit must be in [1, 2**31), got {event.credit}")
            return self._frame(event.stream_id, Kind.WINDOW, event.credit, "WINDOW")
        if isinstance(event, Ping):
            return self._frame(0, Kind.PING, event.nonce, "PING")
        if isinstance(event, Pong):
            return self._frame(0, Kind.PONG, event.nonce, "PONG")
        if isinstance(event, GoAway):
            reason = event.reason
            if len(reason) > MAX_GOAWAY_REASON:
                reason = reason[: MAX_GOAWAY_REASON - 3] + "..."
            return self._frame(0, Kind.GOAWAY, reason, "GOAWAY")
        raise LocalProtocolError(f"{type(event).__name__} is not an event that can be sent")

    # Direct encoders for the multiplexed connection's hot paths (no event object, no dispatch). They assume the
    # handshake was sent, which the connection guarantees.

    def encode_call(self, sid: int, body: Any, streams: dict[str, int]) -> bytes:
        if streams:
            return self._frame(sid, _CALL, [body, streams], "the call body")
        return self._plain(sid, _CALL_HEAD, body, "the call body")

    def encode_reply(self, sid: int, body: Any, streams: dict[str, int]) -> bytes:
        if streams:
            return self._frame(sid, _REPLY, [body, streams], "the reply body")
        return self._plain(sid, _REPLY_HEAD, body, "the reply body")

    def _plain(self, sid: int, kind_head: bytes, body: Any, what: str) -> bytes:
        """The frame ``[sid, kind, [body, {}]]`` of a call or reply without streams (most of them), the same bytes
        ``_frame`` makes; only ``body`` goes through the CBOR encoder, whose every array and map costs a call
        more than assembling the envelope's few bytes here."""
        encoded = b"".join((_ARRAY3, _uint_header(0, sid), kind_head, encode_payload(body, what), _EMPTY_MAP))
        return self._prefixed(encoded, what)

    def encode_window(self, sid: int, credit: int) -> bytes:
        return self._frame(sid, _WINDOW, credit, "WINDOW")

    def encode_reset(self, sid: int, error: dict[str, Any] | None) -> bytes:
        return self._frame(sid, _RESET, error, "the reset error")

    def encode_end(self, sid: int) -> bytes:
        return self._frame(sid, _END, None, "END")

    def encode_stop(self, sid: int) -> bytes:
        return self._frame(sid, _STOP, None, "STOP")

    def encode_data(self, sid: int, data: bytes | bytearray | memoryview) -> bytes:
        """A DATA frame, built by hand (a valid CBOR array) so bulk bytes are copied once."""
        n = len(data)
        head = b"\x83" + _uint_header(0, sid) + b"\x02" + _uint_header(2, n)
        size = len(head) + n
        if size > self.peer_max_frame_size:
            raise LocalProtocolError(
                f"a DATA frame of {n} bytes is over the peer's maximum frame size; split it (data_frame_size)"
            )
        return b"".join((size.to_bytes(_PREFIX, "big"), head, data))

    def encode_message(self, body: Any) -> bytes:
        """A MESSAGE frame within the peer's frame limit."""
        return self._frame(0, Kind.MESSAGE, body, "the message")


def encode_message_frame(body: Any, max_frame_size: int) -> bytes:
    """A complete MESSAGE frame (prefix included), encoded once so it can be queued on any connection.

    Raises ``LocalProtocolError`` if ``body`` is not CBOR-encodable or encodes over ``max_frame_size``.
    """
    encoded = encode_payload([0, Kind.MESSAGE, body], "the message")
    if len(encoded) > max_frame_size:
        raise LocalProtocolError(
            f"the message encodes to {len(encoded)} bytes, over the maximum frame size of {max_frame_size} "
            f"bytes; send large data with a call and a stream instead"
        )
    return len(encoded).to_bytes(_PREFIX, "big") + encoded


def _copy(buf: bytearray, lo: int, hi: int) -> bytes:
    # ``bytes(buf[lo:hi])`` would copy twice (the slice is a bytearray); a released view copies once.
    with memoryview(buf) as view:
        return bytes(view[lo:hi])


def _describe(x: object) -> str:
    # Never raises: what a hostile peer sent must not break the message that reports it.
    try:
        text = repr(x)
    except Exception:
        text = "(cannot be shown)"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(x).__name__} {text}"
