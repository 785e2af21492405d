"""A simulated network: in-memory byte streams with latency, jitter and faults, for one trio run.

Owns simulated hosts, listeners, connections and the fault state (cuts, isolation, per-link latency); it drives
everything from ``trio.current_time()`` and one ``random.Random(seed)``, so under
``trio.testing.MockClock(autojump_threshold=0)`` a run is a function of its seed and trio's scheduling. It knows
nothing of frames or peers: it moves bytes, like TCP.

Model, precisely:
- ``sim.host(name)`` is one machine's view (a ``Network``): ``connect`` dials from it, ``serve`` listens on it.
  Faults name hosts. An address that nobody serves belongs to a host of the same name.
- Each direction of a connection is a FIFO pipe. Every ``send_all`` is delivered after a latency drawn for the
  (source, destination) link (mean +- jitter, uniform, never earlier than the previous chunk: order is kept like
  TCP). At most ``buffer_size`` bytes are in flight per direction; ``send_all`` waits for the reader beyond that.
- ``cut(a, b)`` stops delivery a->b and b->a (``one_way=True``: only a->b). Live connections crossing a cut
  direction are *severed* in that direction for good: bytes in flight and every later byte (EOF included) are
  silently dropped, and ``send_all`` still succeeds, as with TCP under a partition; the ends notice through their
  liveness timeouts. A severed pipe never resumes, even after ``heal``, so a byte stream cannot continue
  mid-frame. New connects from a to b while a->b is cut hang for ``connect_timeout`` and raise ``TimeoutError``
  (a one-way cut of a->b leaves b->a connects working: an idealised asymmetric partition).
- ``partition(*groups)`` cuts every pair of hosts that are in different groups (hosts not named are untouched).
  ``isolate(a)`` cuts a from every host, including hosts that appear later; ``recover(a)`` undoes ``isolate(a)``
  and every cut that involves a; ``heal()`` removes all cuts and isolation.
- ``kill_connections(a, b=None)`` resets live connections between a and b (or all of a's) at once: both ends'
  pending and later reads and writes raise ``trio.BrokenResourceError``, like a TCP RST.
- Connecting to an address nobody serves raises ``ConnectionRefusedError`` after one round trip.
"""

from __future__ import annotations

import errno
import itertools
import operator
import random
from collections import deque
from collections.abc import Callable

import attrs
import trio

from borough.wire.network import Handler, run_handler

__all__ = ["SimHost", "SimNetwork", "SimStream"]


@attrs.define
class _Listener:
    host: str
    handler: Handler
    nursery: trio.Nursery


class _Pipe:
    """One direction of one connection."""

    def __init__(self, src: str, dst: str) -> None:
        self.src, self.dst = src, dst
        self.queue: deque[tuple[float, bytes | None]] = deque()  # (deliver at, chunk or None for EOF)
        self.last_at = 0.0
        self.in_flight = 0
        self.severed = False
        self.killed = False
        self.reader_closed = False
        self.eof_sent = False
        self.recv_wakeup: trio.Event | None = None
        self.send_wakeup: trio.Event | None = None

    def wake_recv(self) -> None:
        if self.recv_wakeup is not None:
            self.recv_wakeup.set()
            self.recv_wakeup = None

    def wake_send(self) -> None:
        if self.send_wakeup is not None:
            self.send_wakeup.set()
            self.send_wakeup = None

    def sever(self) -> None:
        self.severed = True
        self.queue.clear()
        self.in_flight = 0
        self.wake_send()

    def kill(self) -> None:
        self.killed = True
        self.queue.clear()
        self.in_flight = 0
        self.wake_send()
        self.wake_recv()


@attrs.define
class _Connection:
    dialer: str
    acceptor: str
    forward: _Pipe  # dialer -> acceptor
    backward: _Pipe  # acceptor -> dialer
    open_ends: int = 2


class SimStream(trio.abc.HalfCloseableStream):
    """One end of a simulated connection. ``local_address``/``remote_address`` are host or listen addresses."""

    def __init__(
        self, net: SimNetwork, conn_id: int, out: _Pipe, inp: _Pipe, *, local_address: str, remote_address: str
    ) -> None:
        self._net = net
        self._conn_id = conn_id
        self._out = out
        self._in = inp
        self.local_address = local_address
        self.remote_address = remote_address
        self._closed = False
        self._sending = False
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            out = self._out
            self._check_send()
            chunk = bytes(data)
            if chunk:
                while out.in_flight >= self._net.buffer_size and not (out.severed or out.killed):
                    out.send_wakeup = ev = trio.Event()
                    await ev.wait()
                    self._check_send()
                self._check_send()
                self._net._transmit(out, chunk)
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this simulated stream was closed")
        if self._out.eof_sent:
            raise trio.ClosedResourceError("send_eof was already called on this simulated stream")
        if self._out.killed:
            raise trio.BrokenResourceError(f"the connection to {self.remote_address} was reset (simulated)")
        if self._out.reader_closed:
            raise trio.BrokenResourceError(f"{self.remote_address} closed the connection (simulated)")

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("this simulated stream was closed")
            out = self._out
            if out.in_flight >= self._net.buffer_size and not (out.severed or out.killed or out.reader_closed):
                out.send_wakeup = ev = trio.Event()
                await ev.wait()
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("this simulated stream was closed")
        if not self._out.eof_sent:
            self._out.eof_sent = True
            self._net._transmit(self._out, None)
        await trio.lowlevel.checkpoint()

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
            inp = self._in
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this simulated stream was closed")
                if inp.killed:
                    raise trio.BrokenResourceError(f"the connection to {self.remote_address} was reset (simulated)")
                if inp.queue:
                    at, chunk = inp.queue[0]
                    if at <= trio.current_time():
                        if chunk is None:
                            await trio.lowlevel.cancel_shielded_checkpoint()
                            return b""
                        if max_bytes is None or len(chunk) <= max_bytes:
                            inp.queue.popleft()
                        else:
                            inp.queue[0] = (at, chunk[max_bytes:])
                            chunk = chunk[:max_bytes]
                        inp.in_flight -= len(chunk)
                        inp.wake_send()
                        tracer = self._net.tracer
                        if tracer is not None:
                            tracer("recv", inp.src, inp.dst, chunk)
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        return chunk
                    inp.recv_wakeup = ev = trio.Event()
                    with trio.move_on_at(at):
                        await ev.wait()
                else:
                    inp.recv_wakeup = ev = trio.Event()
                    await ev.wait()
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._out.eof_sent and not self._out.killed:
                self._out.eof_sent = True
                self._net._transmit(self._out, None)
            self._in.reader_closed = True
            self._in.queue.clear()
            self._in.in_flight = 0
            self._in.wake_send()
            self._in.wake_recv()
            self._out.wake_send()
            self._net._end_closed(self._conn_id)
        await trio.lowlevel.checkpoint()


class SimHost:
    """One host's view of a ``SimNetwork``; implements ``network.Network``."""

    def __init__(self, net: SimNetwork, name: str) -> None:
        self._net = net
        self.name = name

    async def connect(self, address: str) -> trio.abc.Stream:
        return await self._net._connect(self.name, address)

    async def serve(
        self, address: str, handler: Handler, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self._net._serve(self.name, address, handler, task_status)

    def __repr__(self) -> str:
        return f"SimHost({self.name!r})"


class SimNetwork:
    """The simulated network. ``latency``/``jitter`` (seconds) apply to links without ``set_latency``."""

    def __init__(
        self,
        seed: int,
        *,
        latency: float = 0.0005,
        jitter: float = 0.0002,
        connect_timeout: float = 5.0,
        buffer_size: int = 256 * 1024,
    ) -> None:
        self.rng = random.Random(seed)
        self.default_latency = (latency, jitter)
        self.connect_timeout = connect_timeout
        self.buffer_size = buffer_size
        self._latency: dict[tuple[str, str], tuple[float, float]] = {}
        self._cuts: set[tuple[str, str]] = set()
        self._isolated: set[str] = set()
        self._listeners: dict[str, _Listener] = {}
        self._conns: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._ports = itertools.count(40000)
        self.connects = 0  # successful connects, for tests
        #: Simulation hook (``borough.testing`` records a run's trace through it): called as
        #: ``tracer(event, src_host, dst_host, chunk)`` with event "send" (a chunk accepted for delivery),
        #: "recv" (a chunk handed to the reader) or "drop" (a chunk lost to a cut); chunk None is EOF.
        #: It must not raise or block. None (the default) costs one attribute test per chunk.
        self.tracer: Callable[[str, str, str, bytes | None], None] | None = None

    # ------------------------------------------------------------------ hosts and faults

    def host(self, name: str) -> SimHost:
        return SimHost(self, name)

    def host_of(self, address: str) -> str:
        listener = self._listeners.get(address)
        return listener.host if listener is not None else address

    def set_latency(self, a: str, b: str, mean: float, jitter: float = 0.0, *, one_way: bool = False) -> None:
        """Latency of a->b (and b->a unless ``one_way``): ``mean`` +- ``jitter`` seconds, uniform."""
        if mean < 0 or jitter < 0:
            raise ValueError("latency and jitter must not be negative")
        self._latency[(a, b)] = (mean, jitter)
        if not one_way:
            self._latency[(b, a)] = (mean, jitter)

    def blocked(self, src: str, dst: str) -> bool:
        """True if bytes from host ``src`` to host ``dst`` are not delivered right now."""
        return (src, dst) in self._cuts or src in self._isolated or dst in self._isolated

    def cut(self, a: str, b: str, *, one_way: bool = False) -> None:
        self._cuts.add((a, b))
        if not one_way:
            self._cuts.add((b, a))
        self._sever_blocked()

    def partition(self, *groups: list[str] | tuple[str, ...] | set[str]) -> None:
        members = [sorted(g) for g in groups]
        for i, gi in enumerate(members):
            for gj in members[i + 1 :]:
                for a in gi:
                    for b in gj:
                        self._cuts.add((a, b))
                        self._cuts.add((b, a))
        self._sever_blocked()

    def isolate(self, a: str) -> None:
        self._isolated.add(a)
        self._sever_blocked()

    def recover(self, a: str) -> None:
        self._isolated.discard(a)
        self._cuts = {(x, y) for (x, y) in self._cuts if a not in (x, y)}

    def heal(self) -> None:
        self._cuts.clear()
        self._isolated.clear()

    def kill_connections(self, a: str, b: str | None = None) -> int:
        """Reset every live connection between hosts ``a`` and ``b`` (any peer if None); returns how many."""
        killed = 0
        for conn in list(self._conns.values()):
            ends = {conn.dialer, conn.acceptor}
            if a in ends and (b is None or b in ends) and (b != a or conn.dialer == conn.acceptor):
                conn.forward.kill()
                conn.backward.kill()
                killed += 1
        return killed

    def connection_count(self, a: str | None = None, b: str | None = None) -> int:
        """Live connections (optionally between ``a`` and ``b``), for tests."""
        count = 0
        for conn in self._conns.values():
            ends = {conn.dialer, conn.acceptor}
            if (a is None or a in ends) and (b is None or b in ends):
                count += 1
        return count

    # ------------------------------------------------------------------ internals

    def _sample(self, src: str, dst: str) -> float:
        mean, jitter = self._latency.get((src, dst), self.default_latency)
        if jitter:
            return max(0.0, mean + self.rng.uniform(-jitter, jitter))
        return mean

    def _sever_blocked(self) -> None:
        for conn in self._conns.values():
            for pipe in (conn.forward, conn.backward):
                if not pipe.severed and self.blocked(pipe.src, pipe.dst):
                    pipe.sever()

    def _transmit(self, pipe: _Pipe, chunk: bytes | None) -> None:
        if pipe.killed or pipe.reader_closed:
            return
        if pipe.severed or self.blocked(pipe.src, pipe.dst):
            pipe.sever()
            if self.tracer is not None:
                self.tracer("drop", pipe.src, pipe.dst, chunk)
            return
        at = max(trio.current_time() + self._sample(pipe.src, pipe.dst), pipe.last_at)
        if self.tracer is not None:
            self.tracer("send", pipe.src, pipe.dst, chunk)
        pipe.last_at = at
        pipe.queue.append((at, chunk))
        if chunk is not None:
            pipe.in_flight += len(chunk)
        pipe.wake_recv()

    def _end_closed(self, conn_id: int) -> None:
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.open_ends -= 1
            if conn.open_ends <= 0:
                del self._conns[conn_id]

    async def _connect(self, src: str, address: str) -> SimStream:
        dst = self.host_of(address)
        deadline = trio.current_time() + self.connect_timeout
        if not self.blocked(src, dst):
            # SYN, SYN-ACK: one round trip before the dialer knows.
            await trio.sleep(self._sample(src, dst) + self._sample(dst, src))
            listener = self._listeners.get(address)
            dst = self.host_of(address)
            if listener is None and not self.blocked(src, dst):
                raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on {address} (simulated)")
            if listener is not None and not self.blocked(src, dst):
                return self._establish(src, address, listener)
        await trio.sleep_until(deadline)
        raise TimeoutError(errno.ETIMEDOUT, f"connecting from {src} to {address} timed out (simulated link cut)")

    def _establish(self, src: str, address: str, listener: _Listener) -> SimStream:
        conn_id = next(self._ids)
        forward, backward = _Pipe(src, listener.host), _Pipe(listener.host, src)
        self._conns[conn_id] = _Connection(dialer=src, acceptor=listener.host, forward=forward, backward=backward)
        client = SimStream(self, conn_id, forward, backward, local_address=src, remote_address=address)
        server = SimStream(self, conn_id, backward, forward, local_address=address, remote_address=src)
        self.connects += 1
        listener.nursery.start_soon(run_handler, listener.handler, server)
        return client

    async def _serve(self, host: str, address: str, handler: Handler, task_status: trio.TaskStatus[str]) -> None:
        if address.endswith(":0"):
            address = f"{address[:-2]}:{next(self._ports)}"
        if address in self._listeners:
            raise OSError(errno.EADDRINUSE, f"{address} is already served in this simulated network")
        async with trio.open_nursery() as nursery:
            listener = _Listener(host=host, handler=handler, nursery=nursery)
            self._listeners[address] = listener
            try:
                task_status.started(address)
                await trio.sleep_forever()
            finally:
                if self._listeners.get(address) is listener:
                    del self._listeners[address]
