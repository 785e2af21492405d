"""The wire's tunables, in one frozen record shared by the codec, the multiplexed connection and the transport.

This module owns defaults and validation of the numbers only; it knows nothing of sockets or trio.
"""

from __future__ import annotations

from typing import Any

import attrs

from borough.errors import ConfigError

__all__ = ["WireSettings"]

KiB = 1024
MiB = 1024 * KiB


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"wire setting {attribute.name} must be positive, got {value!r}; fix the configuration")


@attrs.frozen(kw_only=True)
class WireSettings:
    """Every bound the wire enforces. Times are seconds of ``trio.current_time()``.

    Framing and flow control:
      ``max_frame_size``: the largest CBOR frame (after the 4-byte length prefix) we accept, and announce to the
      peer; a call body or message that encodes larger is refused before sending.
      ``window``: per-stream credit window: the most unread bytes a peer may have in flight towards one of our
      streams, so memory per stream is bounded by it.
      ``data_frame_size``: the largest DATA payload; bulk is cut into frames this big so priority frames and
      other streams interleave.
      ``write_batch_bytes``: the writer sends all queued priority and control frames plus at most this many
      bytes of data frames per socket write.
      ``read_size``: bytes asked of the transport stream per ``receive_some``. Keep it under 128 KiB: CPython
      allocates the whole size per read, and glibc serves 128 KiB and more with mmap/munmap, 15-50 us a read
      even when 200 bytes arrive (measured with ``socket.recv``).
    Bounds on queues and concurrency:
      ``priority_queue_limit``: frames queued on one connection's (and one link's) priority lane; more are dropped.
      ``priority_queue_bytes``: bytes of frames queued on one connection's (and one link's) priority lane; more
      are dropped (a peer that stops reading costs at most this, plus the batch being written to it).
      ``max_inbound_calls``: calls a peer may have running here on one connection (handler plus reply streams);
      past it new calls fail with ``Overloaded``.
      ``max_outbound_calls``: our own calls in flight on one connection; more wait (backpressure).
      ``max_open_streams``: peer-opened plain streams (``open_stream``) alive at once on one connection.
      ``max_attached_streams``: user streams attached to one call or reply.
      ``max_control_frames``: control frames (PONGs, refusals, credit, resets) queued on one connection; past it a
      PING is not answered (the drop is counted and logged once), and a peer whose calls or streams we must
      refuse faster than it reads the refusals is disconnected.
      ``max_inbound_connections``: connections peers and clients may hold open to this listener at once; past it
      a new one is closed at once (counted, logged at most every 10 s).
      ``max_handshaking``: accepted connections still in their handshake (TLS, then HELLO) at once; past it a new
      one is closed at once, so a flood of connections that never speak costs a bounded amount.
      ``max_frame_items``: CBOR data items one received frame may hold (every element, key, tag and scalar counts
      one); bounds the objects a frame decodes into and the work it takes (``borough.cbor_budget``).
    Liveness and links:
      ``keepalive_interval``: after this long without receiving anything we ping the peer.
      ``liveness_timeout``: after this long without receiving anything the connection is declared dead.
      ``idle_timeout``: a connection with no calls, streams or messages either way for this long is closed.
      ``connect_timeout``: dialling plus handshake (two round trips) must finish within it.
      ``backoff_initial`` / ``backoff_max``: reconnect delays double from the first to the second, each with
      ``backoff_jitter`` (a fraction) of random spread.
      ``close_timeout``: bound on the shielded cleanup when a connection or the transport closes.
    """

    max_frame_size: int = attrs.field(default=8 * MiB, validator=_positive)
    window: int = attrs.field(default=256 * KiB, validator=_positive)
    data_frame_size: int = attrs.field(default=64 * KiB, validator=_positive)
    write_batch_bytes: int = attrs.field(default=256 * KiB, validator=_positive)
    read_size: int = attrs.field(default=64 * KiB, validator=_positive)
    priority_queue_limit: int = attrs.field(default=4096, validator=_positive)
    priority_queue_bytes: int = attrs.field(default=32 * MiB, validator=_positive)
    max_inbound_calls: int = attrs.field(default=512, validator=_positive)
    max_outbound_calls: int = attrs.field(default=512, validator=_positive)
    max_open_streams: int = attrs.field(default=256, validator=_positive)
    max_attached_streams: int = attrs.field(default=16, validator=_positive)
    max_control_frames: int = attrs.field(default=1024, validator=_positive)
    max_frame_items: int = attrs.field(default=65536, validator=_positive)
    max_inbound_connections: int = attrs.field(default=1024, validator=_positive)
    max_handshaking: int = attrs.field(default=128, validator=_positive)
    keepalive_interval: float = attrs.field(default=1.0, validator=_positive)
    liveness_timeout: float = attrs.field(default=5.0, validator=_positive)
    idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    backoff_initial: float = attrs.field(default=0.05, validator=_positive)
    backoff_max: float = attrs.field(default=2.0, validator=_positive)
    backoff_jitter: float = attrs.field(default=0.5)
    close_timeout: float = attrs.field(default=1.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.data_frame_size + 64 > self.max_frame_size:
            raise ConfigError(
                f"wire setting data_frame_size ({self.data_frame_size}) must fit in max_frame_size "
                f"({self.max_frame_size}) with room for the frame header; lower data_frame_size"
            )
        if self.max_frame_size >= 2**31:
            raise ConfigError("wire setting max_frame_size must be below 2 GiB; lower it")
        if self.window >= 2**31:
            raise ConfigError("wire setting window must be below 2 GiB; lower it")
        if self.liveness_timeout <= self.keepalive_interval:
            raise ConfigError(
                f"wire setting liveness_timeout ({self.liveness_timeout}) must exceed keepalive_interval "
                f"({self.keepalive_interval}), or a healthy idle peer would be declared dead"
            )
        if not 0 <= self.backoff_jitter <= 1:
            raise ConfigError(f"wire setting backoff_jitter must be within [0, 1], got {self.backoff_jitter!r}")
        if self.backoff_max < self.backoff_initial:
            raise ConfigError("wire setting backoff_max must be at least backoff_initial")
