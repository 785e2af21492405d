"""The trio driver of the SWIM failure detector: feeds the sans-IO core time and messages, sends its output.

This module owns one background task per node that wakes at the core's next deadline, runs ``tick``, sends
what comes out through the transport's non-blocking priority-lane ``send(address, message) -> bool`` and
publishes liveness events. It knows nothing of the protocol (``membership.py`` does) and of the transport
beyond that one function: inbound SWIM messages are handed in by the node with ``deliver(from_address,
message)``. Time comes only from trio (``trio.current_time``), so a ``MockClock`` drives it in simulation.

Contract with the transport:
- ``send`` never blocks and never calls ``deliver`` re-entrantly; it returns False when it dropped the message
  (SWIM tolerates loss: a missed ack is a failed probe, a missed update is gossiped again).
- Messages go out in their CBOR list form (``messages.encode_message``); ``deliver`` accepts that list (it is
  validated, garbage raises ``RemoteProtocolError`` so the transport can close that connection) or an
  already decoded message. ``from_address`` must be the sender's *listen* address: replies go there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import trio

from borough.errors import ConfigError
from borough.ids import NodeId
from borough.ring.members import MemberTable
from borough.ring.membership import MemberEvent, MemberView, Outgoing, Swim, SwimEvent
from borough.ring.messages import MESSAGE_TYPES, Liveness, decode_message, encode_message

__all__ = ["MembershipDriver", "SendFn", "open_membership"]

log = logging.getLogger(__name__)

SendFn = Callable[[str, object], bool]


class MembershipDriver:
    """A running failure detector. Created by ``open_membership``; read ``view()`` for the current belief,
    ``events`` (a bounded channel) or the ``on_event`` callback for changes."""

    def __init__(
        self,
        core: Swim,
        send: SendFn,
        *,
        events_capacity: int,
        on_event: Callable[[SwimEvent], None] | None,
        tick_interval: float,
    ) -> None:
        self.core = core
        self._send = send
        self._on_event = on_event
        self._tick_interval = tick_interval
        self._wake = trio.Event()
        self._events_send, self.events = trio.open_memory_channel[SwimEvent](events_capacity)
        self.sent = 0
        self.send_failures = 0
        self.received = 0
        self.dropped_events = 0
        self._closed = False

    # -- the node's side ---------------------------------------------------------------------------------------
    def deliver(self, from_address: str, message: object) -> None:
        """Hand in one inbound SWIM message (its list form or a decoded message). Never blocks. Raises
        ``RemoteProtocolError`` for garbage (nothing is changed then); ignored after the driver has closed."""
        msg = message if isinstance(message, MESSAGE_TYPES) else decode_message(message)
        if self._closed:
            return
        self.received += 1
        self._send_all(self.core.receive(trio.current_time(), from_address, msg))
        self._after_core()

    def set_table(self, table: MemberTable) -> None:
        """Adopt a new member table (the node calls this after refreshing it from ``_system``)."""
        self.core.set_table(table)
        self._after_core()

    def view(self) -> Mapping[NodeId, MemberView]:
        """What this node believes about every member right now (authoritative; events are only hints)."""
        return self.core.view()

    def live(self) -> set[NodeId]:
        """Members believed ALIVE (ourselves included): the conservative live set placement counts on."""
        return self.core.members_in(Liveness.ALIVE)

    # -- the loop ---------------------------------------------------------------------------------------------
    def _send_all(self, outgoing: list[Outgoing]) -> None:
        for o in outgoing:
            self.sent += 1
            if not self._send(o.address, encode_message(o.message)):
                self.send_failures += 1

    def _after_core(self) -> None:
        for event in self.core.drain_events():
            self._publish(event)
        # The core's next deadline may have moved earlier (a new suspicion, a new member): let the loop look.
        self._wake.set()

    def _publish(self, event: SwimEvent) -> None:
        if isinstance(event, MemberEvent):
            level = logging.INFO if event.liveness is Liveness.ALIVE else logging.WARNING
            log.log(
                level,
                "member %s is now %s (incarnation %d)",
                event.node_id,
                event.liveness.name,
                event.incarnation,
                extra={"node_id": self.core.self_id, "member": event.node_id, "liveness": event.liveness.name},
            )
        if self._on_event is not None:
            self._on_event(event)
        try:
            self._events_send.send_nowait(event)
        except trio.WouldBlock:
            # Nobody is reading fast enough: the view stays authoritative, so dropping a hint is safe.
            self.dropped_events += 1

    async def _run(self) -> None:
        while True:
            now = trio.current_time()
            if self.core.next_deadline() <= now:
                self._send_all(self.core.tick(now))
                self._after_core()
            self._wake = trio.Event()
            deadline = min(self.core.next_deadline(), now + self._tick_interval)
            if deadline == -math.inf:
                continue
            with trio.move_on_at(deadline):
                await self._wake.wait()

    def _close(self) -> None:
        self._closed = True
        self._events_send.close()


@asynccontextmanager
async def open_membership(
    core: Swim,
    send: SendFn,
    *,
    events_capacity: int = 256,
    on_event: Callable[[SwimEvent], None] | None = None,
    tick_interval: float = 1.0,
) -> AsyncIterator[MembershipDriver]:
    """Run ``core`` until the block exits. ``send(address, message) -> bool`` is the transport's non-blocking
    send; events go to ``on_event`` (called inline, must not block) and to the bounded ``driver.events``
    channel (dropped and counted in ``dropped_events`` when full). The loop sleeps until the core's next
    deadline or an inbound message; ``tick_interval`` only bounds that sleep (a safety net, not a tick)."""
    if events_capacity < 0 or not tick_interval > 0:
        raise ConfigError(
            "open_membership needs events_capacity >= 0 and a positive tick_interval, "
            f"got {events_capacity!r} and {tick_interval!r}"
        )
    driver = MembershipDriver(
        core, send, events_capacity=events_capacity, on_event=on_event, tick_interval=tick_interval
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver._run)
            try:
                yield driver
            finally:
                nursery.cancel_scope.cancel()
    finally:
        driver._close()
