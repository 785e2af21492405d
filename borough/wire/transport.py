"""Peer links: the object a node (or a client) holds to talk to other nodes by address.

Owns the listener, one link per peer address (lazy dialling, reconnect with exponential backoff and jitter, a
bounded queue of priority messages while dialling, the choice of one connection per node pair), the handshake
policy (cluster and role refusal) and the dispatch of inbound messages and calls to the node's callbacks. It does
not know what messages or call bodies mean, nor Raft, partitions or the ring. Everything runs in the nursery of
``open_transport``; leaving it closes every connection within ``settings.close_timeout``.

One connection per node pair: when both nodes dial each other at once, both connections live briefly; each side
uses the one dialled by the node with the smaller node id, and the other goes idle and is closed after
``idle_timeout``. Each connection's ``PeerInfo.role`` comes from the peer's TLS certificate when the network
is a ``tls.TlsNetwork`` (the handshake refuses a HELLO that claims another role), else from the HELLO. A side whose
cluster id is None connects to anyone; the peer's id is in ``PeerInfo.cluster_id``
and the node adopts it with ``set_cluster_id`` (the transport never adopts one by itself).
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from borough.errors import ConfigError, LocalProtocolError, NotDelivered, ProtocolError, Unavailable
from borough.wire import codec as c
from borough.wire.errors_codec import ErrorRegistry, default_registry
from borough.wire.mux import (
    IncomingCall,
    MuxConnection,
    PeerInfo,
    Reply,
    StreamSource,
    handshake,
    make_hello,
    open_mux,
)
from borough.wire.network import Network, describe_stream
from borough.wire.records import CallAnswer, DispatchHooks, QuickCallHandler
from borough.wire.settings import WireSettings
from borough.wire.tls import peer_certificate, role_refusal, tls_failure

__all__ = ["Identity", "OnCall", "OnMessage", "Transport", "open_transport"]

log = logging.getLogger(__name__)

OnMessage = Callable[[PeerInfo, Any], None]
OnCall = Callable[[PeerInfo, IncomingCall], Awaitable[Any]]

_DIAL_ERRORS = (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError)


@attrs.define(kw_only=True)
class Identity:
    """Who we are in handshakes. ``node_id`` None for a client; ``address`` None to advertise the bound listen
    address (or nothing, if not listening); ``cluster_id`` None until known (see ``Transport.set_cluster_id``)."""

    node_id: str | None
    address: str | None = None
    cluster_id: str | None = None


class _Link:
    """Everything we know about one peer address."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.dialled: MuxConnection | None = None
        self.inbound: list[MuxConnection] = []
        self.task_running = False
        self.attempt = 0
        self.failures = 0
        self.last_error: BaseException | None = None
        self.retry_at = float("-inf")
        self.last_used = float("-inf")
        self.waiters = 0
        self._changed = trio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


class Transport:
    """Use through ``open_transport``. See the module docstring and each method for the semantics."""

    def __init__(
        self,
        network: Network,
        *,
        identity: Identity,
        on_message: OnMessage | None,
        on_call: OnCall | None,
        settings: WireSettings,
        rng: random.Random,
        registry: ErrorRegistry,
    ) -> None:
        self.network = network
        self.identity = identity
        self.settings = settings
        self.listen_address: str | None = None
        self._on_message = on_message
        self._on_call = on_call
        self._rng = rng
        self._registry = registry
        self._links: dict[str, _Link] = {}
        #: Called with a peer's address each time dialling it fails (refused, timed out, handshake broken). A
        #: connection in use that closes is dialled again at once, so a peer whose process died is reported
        #: within a round trip of its connection's reset (the node's followers of its groups campaign then).
        self.on_unreachable: Callable[[str], None] | None = None
        #: Takes inbound calls without a task of their own (see ``open_mux``), on every connection; None: none.
        self.on_quick_call: QuickCallHandler | None = None
        #: Told of each run of frames a connection's reader dispatches (see ``DispatchHooks``); None: nobody.
        self.dispatch_hooks: DispatchHooks | None = None
        self._hooks = _Hooks(self)
        self._inbound = 0  # accepted connections open now
        self._handshaking = 0  # of which still in their handshake
        self._refusal_logged_at = float("-inf")
        #: Accepted connections closed at once because a bound was reached.
        self.refused_connections = 0
        #: Accepted connections closed because their handshake failed (garbage, another cluster, a timeout).
        self.failed_handshakes = 0
        self._handshake_log_window = float("-inf")
        self._handshake_logged = 0
        #: Whether an accepted connection from ``node_id`` may carry our traffic to the address its HELLO claims
        #: (the node answers from its member table, so no process can take over another member's address;
        #: a connection that may not still carries its own calls and messages, and their replies).
        self.trusts_address: Callable[[str | None, str], bool] = lambda node_id, address: True
        self._clients: list[MuxConnection] = []  # accepted connections from non-members
        self._nursery: trio.Nursery | None = None
        self._closing = False

    # ------------------------------------------------------------------ public

    def set_cluster_id(self, cluster_id: str) -> None:
        """Adopt a cluster id (after joining); later handshakes carry it and refuse other clusters."""
        self.identity.cluster_id = cluster_id

    def send(self, address: str, message: Any) -> bool:
        """Queue ``message`` (any CBOR) on the priority lane to ``address``; never blocks.

        Encoded once here (``LocalProtocolError`` if unencodable or over ``max_frame_size``). Returns False, and
        drops it, when the connection's or the dialling link's bounded queue is full or the transport is closing.
        Dials lazily; messages queued while dialling are dropped if the attempt fails (Raft retransmits).
        """
        frame = c.encode_message_frame(message, self.settings.max_frame_size)
        if self._closing:
            return False
        link = self._link(address)
        link.last_used = trio.current_time()
        conn = self._current(link)
        if conn is not None:
            return conn.send_message_frame(frame)
        if (
            len(link.pending) >= self.settings.priority_queue_limit
            or link.pending_bytes + len(frame) > self.settings.priority_queue_bytes
        ):
            return False
        link.pending.append(frame)
        link.pending_bytes += len(frame)
        self._ensure_dialling(link)
        return True

    async def call(
        self,
        address: str,
        body: Any,
        *,
        streams: Mapping[str, StreamSource] | None = None,
        deadline: float | None = None,
    ) -> Reply[trio.abc.ReceiveStream]:
        """Call the node at ``address``: its ``on_call`` handler's reply, or its error raised here as the same
        type. Waits for a dial in progress; raises ``Unavailable`` naming the peer when it cannot be reached (at
        once while the link is backing off after a failure) or the connection fails mid-call, ``ConfigError``
        when the peer belongs to another cluster. Bounded by the caller's cancel scope; cancelling resets the
        call and cancels the peer's handler. With ``deadline`` (trio time) it is bounded by that as well, without
        a cancel scope while the connection is up (``MuxConnection.call``), and raises ``trio.TooSlowError`` once
        it passes. Backpressure: waits while ``max_outbound_calls`` are in flight."""
        link = self._link(address)
        link.last_used = trio.current_time()
        conn = self._current(link)  # (connected, the usual case: no scope, no wait)
        if conn is None:
            with trio.move_on_at(math.inf if deadline is None else deadline):
                conn = await self._wait_connection(link)
            if conn is None:
                raise trio.TooSlowError
        return await conn.call(body, streams=streams, deadline=deadline)

    def is_connected(self, address: str) -> bool:
        link = self._links.get(address)
        return link is not None and self._current(link) is not None

    def connections(self) -> list[MuxConnection]:
        """Every live connection (dialled and accepted), for status pages and tests."""
        seen: list[MuxConnection] = []
        for link in self._links.values():
            for conn in [link.dialled, *link.inbound]:
                if conn is not None and not conn.closed and conn not in seen:
                    seen.append(conn)
        return seen + [conn for conn in self._clients if not conn.closed]

    # ------------------------------------------------------------------ links

    def _hello(self) -> c.Hello:
        return make_hello(
            self.settings,
            cluster_id=self.identity.cluster_id,
            node_id=self.identity.node_id,
            address=self.identity.address or self.listen_address,
        )

    def _link(self, address: str) -> _Link:
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = _Link(address)
        return link

    def _current(self, link: _Link) -> MuxConnection | None:
        dialled = link.dialled if link.dialled is not None and link.dialled.usable else None
        inbound = next((conn for conn in link.inbound if conn.usable), None)
        if dialled is None or inbound is None:
            return dialled or inbound
        # Both directions connected (simultaneous dial): both sides pick the smaller node id's connection.
        ours, theirs = self.identity.node_id, inbound.peer.node_id
        if ours is not None and theirs is not None and theirs < ours:
            return inbound
        return dialled

    def _wanted(self, link: _Link) -> bool:
        recent = trio.current_time() - link.last_used < self.settings.idle_timeout
        return bool(link.pending) or link.waiters > 0 or recent

    def _ensure_dialling(self, link: _Link) -> None:
        if not link.task_running and self._nursery is not None and not self._closing:
            link.task_running = True
            self._nursery.start_soon(self._run_link, link)

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        delay = min(s.backoff_max, s.backoff_initial * 2.0 ** max(0, attempt - 1))
        return delay * (1 + s.backoff_jitter * (2 * self._rng.random() - 1))

    def _flush_pending(self, link: _Link, conn: MuxConnection) -> None:
        link.pending_bytes = 0
        while link.pending:
            try:
                conn.send_message_frame(link.pending.popleft())
            except LocalProtocolError as exc:  # the peer announced a smaller frame limit than ours
                log.warning("dropping a queued message for %s: %s", link.address, exc, extra={"peer": link.address})

    async def _wait_connection(self, link: _Link) -> MuxConnection:
        while True:
            conn = self._current(link)
            if conn is not None:
                return conn
            if self._closing or self._nursery is None:
                raise NotDelivered(f"cannot call {link.address}: the transport is closing")
            if link.last_error is not None and trio.current_time() < link.retry_at:
                self._raise_unreachable(link)
            failures = link.failures
            self._ensure_dialling(link)
            link.waiters += 1
            try:
                await link.wait_changed()
            finally:
                link.waiters -= 1
            if link.failures != failures:
                self._raise_unreachable(link)

    def _raise_unreachable(self, link: _Link) -> None:
        err = link.last_error
        if isinstance(err, ConfigError):
            raise ConfigError(f"{link.address} refused the connection: {err}") from err
        wait = max(0.0, link.retry_at - trio.current_time())
        raise NotDelivered(
            f"cannot reach {link.address} ({type(err).__name__}: {err}); the next attempt is in {wait:.2f} s"
        ) from err

    async def _run_link(self, link: _Link) -> None:
        try:
            while not self._closing:
                current = self._current(link)
                if current is not None:
                    await current.wait_closed()
                    continue
                if not self._wanted(link):
                    return
                if trio.current_time() < link.retry_at:
                    await trio.sleep_until(link.retry_at)
                    continue
                await self._dial_once(link)
        finally:
            link.task_running = False
            link.notify()
            if not self._wanted(link) and not link.inbound and self._links.get(link.address) is link:
                del self._links[link.address]

    async def _handshake(self, stream: trio.abc.Stream, role: c.Role) -> tuple[Any, c.FrameCodec]:
        """Exchange HELLOs on a new connection, refusing a peer whose declared role its certificate contradicts;
        returns the peer's certificate (None without TLS) and the codec."""
        certificate = peer_certificate(stream)
        codec = await handshake(
            stream, role=role, local=self._hello(), settings=self.settings, authorize=partial(role_refusal, certificate)
        )
        return certificate, codec

    async def _dial_once(self, link: _Link) -> None:
        try:
            with trio.fail_after(self.settings.connect_timeout):
                stream = await self.network.connect(link.address)
                try:
                    certificate, codec = await self._handshake(stream, c.Role.DIALER)
                except BaseException:
                    with trio.CancelScope(shield=True), trio.move_on_after(self.settings.close_timeout):
                        await trio.aclose_forcefully(stream)
                    raise
        except (*_DIAL_ERRORS, ConfigError, ValueError) as exc:  # ValueError: a malformed address
            # Under TLS 1.3 the peer's verdict on our certificate arrives as the HELLO exchange breaks.
            exc = tls_failure(exc, link.address) or exc
            link.failures += 1
            link.attempt += 1
            link.last_error = exc
            link.retry_at = trio.current_time() + self._backoff(link.attempt)
            dropped = len(link.pending)
            link.pending.clear()
            link.pending_bytes = 0
            level = logging.WARNING if isinstance(exc, (ConfigError, ProtocolError, ValueError)) else logging.INFO
            log.log(
                level,
                "dialling %s failed (%s: %s); %d queued messages dropped",
                link.address,
                type(exc).__name__,
                exc,
                dropped,
                extra={"peer": link.address},
            )
            link.notify()
            if self.on_unreachable is not None:
                self.on_unreachable(link.address)
            return
        started = trio.current_time()
        assert codec.peer_hello is not None
        peer = PeerInfo.from_hello(codec.peer_hello, certificate)
        async with open_mux(
            stream,
            codec,
            settings=self.settings,
            on_message=self._message_handler(peer),
            on_call=self._call_handler(),
            on_quick_call=self._quick_call,
            hooks=self._hooks,
            registry=self._registry,
            description=f"{peer} (dialled {link.address})",
            peer=peer,
        ) as conn:
            link.dialled = conn
            link.last_error = None
            link.attempt = 0
            self._flush_pending(link, conn)
            link.notify()
            await conn.wait_closed()
        link.dialled = None
        if trio.current_time() - started < self.settings.keepalive_interval:
            # The peer accepted and dropped us at once: back off as for a failed dial.
            link.attempt += 1
            link.retry_at = trio.current_time() + self._backoff(link.attempt)
        link.notify()

    # ------------------------------------------------------------------ inbound

    def _message_handler(self, peer: PeerInfo | None) -> Callable[[Any], None] | None:
        if self._on_message is None or peer is None:
            return None

        def handle(message: Any) -> None:
            if self._on_message is not None:
                self._on_message(peer, message)

        return handle

    def _quick_call(self, call: IncomingCall, answer: CallAnswer) -> bool:
        quick = self.on_quick_call
        return quick is not None and quick(call, answer)

    def _call_handler(self) -> Callable[[IncomingCall], Awaitable[Any]] | None:
        if self._on_call is None:
            return None

        async def handle(call: IncomingCall) -> Any:
            if self._on_call is None:
                raise Unavailable("this node no longer accepts calls")
            return await self._on_call(call.peer, call)

        return handle

    async def _handle_inbound(self, stream: trio.abc.Stream) -> None:
        remote = describe_stream(stream)
        s = self.settings
        if self._inbound >= s.max_inbound_connections or self._handshaking >= s.max_handshaking:
            self.refused_connections += 1
            now = trio.current_time()
            if now - self._refusal_logged_at >= 10.0:
                self._refusal_logged_at = now
                log.warning(
                    "refused a connection from %s: %d open (max_inbound_connections=%d), %d in their handshake "
                    "(max_handshaking=%d); %d refused so far",
                    remote, self._inbound, s.max_inbound_connections, self._handshaking, s.max_handshaking,
                    self.refused_connections, extra={"peer": remote},
                )  # fmt: skip
            return
        self._inbound += 1
        try:
            await self._serve_inbound(stream, remote)
        finally:
            self._inbound -= 1

    def _refuse_handshake(self, remote: str, why: str) -> None:
        """A connection that failed its handshake is closed; the first ones of each 10 s are logged, the rest
        only counted (a peer reconnecting in a loop must not fill the disk with the same line)."""
        self.failed_handshakes += 1
        now = trio.current_time()
        if now - self._handshake_log_window >= 10.0:
            self._handshake_log_window, self._handshake_logged = now, 0
        self._handshake_logged += 1
        if self._handshake_logged <= 10:
            log.warning("closing the connection from %s: %s", remote, why, extra={"peer": remote})
        elif self._handshake_logged == 11:
            log.warning("more connections failed their handshake; logging them again in 10 s (counted meanwhile)")

    async def _serve_inbound(self, stream: trio.abc.Stream, remote: str) -> None:
        self._handshaking += 1
        try:
            with trio.fail_after(self.settings.connect_timeout):
                certificate, codec = await self._handshake(stream, c.Role.ACCEPTOR)
        except trio.TooSlowError:
            self._refuse_handshake(remote, f"no handshake within {self.settings.connect_timeout:.1f} s")
            return
        except (ProtocolError, ConfigError) as exc:
            self._refuse_handshake(remote, str(exc))
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("the connection from %s failed during the handshake: %s", remote, exc, extra={"peer": remote})
            return
        finally:
            self._handshaking -= 1
        assert codec.peer_hello is not None
        peer = PeerInfo.from_hello(codec.peer_hello, certificate)
        claims = peer.address is not None and not peer.is_client
        if claims and peer.address is not None and not self.trusts_address(peer.node_id, peer.address):
            log.info(
                "%s says it listens at %s, which is not the member table's address for it: its connection will "
                "not carry traffic meant for that address",
                peer,
                peer.address,
                extra={"peer": remote},
            )
            claims = False
        link = self._link(peer.address) if claims and peer.address is not None else None
        async with open_mux(
            stream,
            codec,
            settings=self.settings,
            on_message=self._message_handler(peer),
            on_call=self._call_handler(),
            on_quick_call=self._quick_call,
            hooks=self._hooks,
            registry=self._registry,
            description=f"{peer} (from {remote})",
            peer=peer,
        ) as conn:
            try:
                if link is not None:
                    link.inbound.append(conn)
                    if link.pending and self._current(link) is conn:
                        self._flush_pending(link, conn)
                    link.notify()
                else:
                    self._clients.append(conn)
                await conn.wait_closed()
            finally:
                if link is not None:
                    link.inbound.remove(conn)
                    link.notify()
                    if self._current(link) is None and self._wanted(link) and not self._closing:
                        self._ensure_dialling(link)  # still in use: redial now (a dead peer is reported at once)
                    if not link.task_running and not link.inbound and not self._wanted(link):
                        self._links.pop(link.address, None)
                else:
                    self._clients.remove(conn)


class _Hooks:
    """Every connection's hooks: the transport's ``dispatch_hooks`` of the moment (set once the node exists)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def enter(self) -> None:
        hooks = self._transport.dispatch_hooks
        if hooks is not None:
            hooks.enter()

    def leave(self) -> None:
        hooks = self._transport.dispatch_hooks
        if hooks is not None:
            hooks.leave()


@asynccontextmanager
async def open_transport(
    network: Network,
    *,
    identity: Identity,
    listen: str | None = None,
    on_message: OnMessage | None = None,
    on_call: OnCall | None = None,
    settings: WireSettings | None = None,
    rng: random.Random | None = None,
    registry: ErrorRegistry = default_registry,
) -> AsyncIterator[Transport]:
    """Run a transport: listen on ``listen`` (if given; port 0 allowed) and dial peers on demand.

    ``on_message(peer, message)`` runs synchronously in the connection's reader for every priority message: it
    must not block (put the message in a bounded queue). ``on_call(peer, call)`` runs in its own task per call
    and returns the reply body or a ``Reply``; its ``BoroughError``s reach the caller typed. ``rng`` supplies the
    reconnect jitter (seed it in simulation). Leaving the block cancels everything, bounded by
    ``settings.close_timeout``.
    """
    transport = Transport(
        network,
        identity=identity,
        on_message=on_message,
        on_call=on_call,
        settings=settings or WireSettings(),
        rng=rng or random.Random(),
        registry=registry,
    )
    async with trio.open_nursery() as nursery:
        transport._nursery = nursery
        if listen is not None:
            transport.listen_address = await nursery.start(network.serve, listen, transport._handle_inbound)
        try:
            yield transport
        finally:
            transport._closing = True
            nursery.cancel_scope.cancel()
