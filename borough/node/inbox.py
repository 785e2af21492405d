"""What other tasks hand a replica's core: Raft ticks, peers' messages and commands for its core.

This module owns the queue between the node (the ticker, the outbox's inbound side, snapshot transfers,
placement) and one replica's core, which only the replica's turn in a round feeds (``borough.node.rounds``), and
the signal that asks for that turn when anything arrives.
Messages are bounded (beyond ``INBOX_LIMIT`` they are dropped and counted: Raft retransmits), except a staged
snapshot's offer, which its data waits on. A message the core says may wait (``RawNode.can_wait``: an answer that
only records a follower's progress) asks for no turn: up to ``WAITING_LIMIT`` of them wait for the next one. It
also notes when a leader last spoke to this replica. It knows nothing of proposals or reads
(``borough.node.waiters``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from borough.errors import BoroughError
from borough.node.clocks import Clocks
from borough.node.waiters import Waiter
from borough.raft.messages import AppendRequest, Heartbeat, InstallSnapshot, Message
from borough.raft.rawnode import RawNode
from borough.raft.role import Role

__all__ = ["INBOX_LIMIT", "WAITING_LIMIT", "Inbox"]

logger = logging.getLogger(__name__)

#: Inbound Raft messages queued per replica; beyond this they are dropped (Raft retransmits).
INBOX_LIMIT = 4096
#: Messages that may wait (``RawNode.can_wait``) queued without a turn; past this many they ask for one like any
#: other, so a peer that sends them without end cannot fill the inbox with messages nobody steps.
WAITING_LIMIT = 64
#: What only a leader sends: receiving one means the replica is in touch with its group.
_FROM_LEADER = (AppendRequest, Heartbeat, InstallSnapshot)

Command = Callable[[RawNode], Any]


class Inbox:
    def __init__(self, partition: str, on_wake: Callable[[], None], clocks: Clocks | None = None) -> None:
        self._partition = partition
        self._on_wake = on_wake
        self._clocks = clocks
        self._quiet = False
        self._tick = self.tick  # one bound method, so the clock set can tell it apart from another replica's
        if clocks is not None:
            clocks.run(partition, self._tick)
        self._ticks = 0
        self._late = 0  # ticks that were due while the node stalled (see ``tick``)
        self._messages: deque[Message] = deque()
        #: Messages that may wait for the replica's next turn (``RawNode.can_wait``): queued without asking for one.
        self._waiting: deque[Message] = deque()
        self._commands: list[tuple[Command, Waiter | None]] = []
        self.last_leader_contact = trio.current_time()
        self.dropped = 0
        self._pending = False  # something arrived since the core was last fed

    # --- asking for a turn ----------------------------------------------------------------------------------

    def wake(self) -> None:
        """Something arrived for the core (here, or in its proposal and read queues): ask for a turn."""
        if not self._pending:
            self._pending = True
            self._on_wake()

    def settle(self, quiesced: bool) -> None:
        """The replica goes back to waiting for input. ``quiesced``: the core's clock stands still, so the ticker
        stops ticking it until a turn finds it awake again."""
        clocks = self._clocks
        if clocks is not None and quiesced is not self._quiet:
            self._quiet = quiesced
            if quiesced:
                clocks.stop(self._partition, self._tick)
            else:
                clocks.run(self._partition, self._tick)

    @property
    def pending(self) -> bool:
        return self._pending

    # --- what arrives -----------------------------------------------------------------------------------------

    def commands(self) -> int:
        return len(self._commands)

    def tick(self, late: int = 0) -> None:
        """A tick of the node's ticker; ``late`` more were due that the node could not deliver in time (it stalled:
        see ``borough.node.clocks``). A leader counts them (``feed``), so a lease it holds runs out by elapsed time
        and not by the ticks its ticker managed to deliver. Other roles do not: a slow clock only makes a follower
        hold its vote longer and notice a dead leader later (both safe), while counting the stall before reading
        the leader's heartbeats queued meanwhile would make every group campaign after a long stall."""
        self._ticks += 1
        self._late += late
        self.wake()

    def deliver(self, message: Message, *, urgent: bool = True) -> None:
        """Queue a peer's message; dropped (and counted) when the inbox is full: the sender retransmits. One that
        is not ``urgent`` (``RawNode.can_wait``) asks for no turn: it is stepped at the next one, first."""
        if len(self._messages) + len(self._waiting) >= INBOX_LIMIT:
            self.dropped += 1
            return
        if not urgent and len(self._waiting) < WAITING_LIMIT:
            self._waiting.append(message)
            return
        self._messages.append(message)
        if type(message) in _FROM_LEADER:
            self.last_leader_contact = trio.current_time()
        self.wake()

    def offer(self, message: InstallSnapshot) -> None:
        """A staged snapshot's message: never dropped, since its staged data waits on it."""
        self._messages.append(message)
        self.wake()

    def command(self, fn: Command, waiter: Waiter | None = None) -> None:
        self._commands.append((fn, waiter))
        self.wake()

    async def call(self, fn: Command) -> Any:
        """Run ``fn`` on the core at the replica's next turn and return its result (or raise its error)."""
        waiter = Waiter()
        self.command(fn, waiter)
        return await waiter.wait()

    def feed(self, raw: RawNode, stepping: Callable[[Message], None]) -> None:
        """Hand ``raw`` the ticks, commands and messages queued since the last round, in that order (the ticks
        first: a leader that stalled must count the time that passed before it answers a read that arrived). A command's
        outcome goes to its waiter; a message the core refuses is logged and dropped. The messages that waited
        (``deliver(urgent=False)``) go before all: followers' progress, which a tick judges (whether the group may
        go quiet) and which no read depends on."""
        self._pending = False
        if self._waiting:
            self._step_all(raw, self._waiting, stepping)
        ticks, self._ticks = self._ticks, 0
        if self._late:
            if raw.role is Role.LEADER:
                raw.elapse(self._late)  # (counted, with no heartbeat round each: the next tick sends one)
            self._late = 0
        for _ in range(ticks):
            raw.tick()
        commands = self._commands
        if commands:
            self._commands = []
        for fn, waiter in commands:
            try:
                result = fn(raw)
            except BoroughError as exc:
                if waiter is None:
                    logger.info("partition %r: a command failed: %s", self._partition, exc)
                else:
                    waiter.fail(exc)
            else:
                if waiter is not None:
                    waiter.succeed(result)
        if self._messages:
            self._step_all(raw, self._messages, stepping)

    def _step_all(self, raw: RawNode, messages: deque[Message], stepping: Callable[[Message], None]) -> None:
        while messages:
            msg = messages.popleft()
            stepping(msg)
            try:
                raw.step(msg)
            except BoroughError as exc:
                logger.warning("partition %r: dropped a message from %s: %s", self._partition, msg.frm, exc)

    def fail_all(self, error: BaseException) -> None:
        if self._clocks is not None:
            self._clocks.stop(self._partition, self._tick)
        for _, waiter in self._commands:
            if waiter is not None:
                waiter.fail(error)
        self._commands.clear()
