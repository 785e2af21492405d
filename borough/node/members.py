"""The member table as this node sees it, kept fresh, and the failure detector fed with it.

This module owns keeping the node's view of the cluster current: a node that does not hear from a ``_system``
leader asks for the member table (periodically, and at once when gossip says a newer version exists), hands
every new table to the SWIM failure detector, reports who the detector believes alive, and notices when the
table says this node itself is DEAD (declared so while it was cut off), so it announces itself again, or
LEAVING (it is being decommissioned: it will not announce itself again). Which
table is newest is the directory's rule (``Directory.members``); this module never decides it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

import trio

from borough.errors import BoroughError
from borough.ids import NodeId
from borough.node.directory import Directory
from borough.node.replica import Replica
from borough.raft.rawnode import RawNode
from borough.ring.members import MemberState, MemberTable
from borough.ring.membership import MemberEvent, MemberView, SwimEvent, TableVersionEvent

__all__ = ["MemberWatch"]

logger = logging.getLogger(__name__)

MEMBER_REFRESH_INTERVAL = 2.0
#: At most this many refreshes a second, however much gossip asks.
MIN_REFRESH_GAP = 0.05


class Detector(Protocol):
    """What this module needs of the failure detector (``borough.ring.MembershipDriver``)."""

    def set_table(self, table: MemberTable) -> None: ...

    def view(self) -> Mapping[NodeId, MemberView]: ...

    def live(self) -> set[NodeId]: ...


class MemberWatch:
    def __init__(
        self,
        *,
        node_id: str,
        directory: Directory,
        detector: Detector,
        system_replica: Callable[[], Replica | None],
        joined: Callable[[], bool],
        out_of_touch: float,
        on_declared_dead: Callable[[], None],
        on_leaving: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_leaving = on_leaving
        self._node_id = node_id
        self._directory = directory
        self._detector = detector
        self._system_replica = system_replica
        self._joined = joined
        self._out_of_touch = out_of_touch
        self._on_declared_dead = on_declared_dead
        self._wanted = trio.Event()
        self._detector_version = -1
        self._newer_exists = False  # gossip named a newer table than ours: refresh even if _system seems in touch

    @property
    def table(self) -> MemberTable:
        return self._directory.members

    def want_refresh(self) -> None:
        self._wanted.set()

    def live(self) -> set[str]:
        """Members the failure detector believes alive (this node included)."""
        return set(self._detector.live()) | {self._node_id}

    def view(self) -> Mapping[NodeId, MemberView]:
        return self._detector.view()

    def sync_detector(self) -> None:
        """Give the failure detector the newest member table, if it has not got it yet."""
        table = self.table
        if table.version != self._detector_version:
            self._detector_version = table.version
            self._detector.set_table(table)

    def on_swim_event(self, event: SwimEvent) -> None:
        if isinstance(event, TableVersionEvent):
            if event.version > self.table.version:
                # (A quiet _system follower counts as in touch with its leader; if the table it holds is older than
                # the gossip says, it missed something while cut off: ask instead of trusting it.)
                self._newer_exists = True
                self.want_refresh()
                system = self._system_replica()
                if system is not None and system.is_leader and system.quiesced:
                    # A quiet leader of an older table than the cluster's is not the group's leader any more (the
                    # group went on while this node was away; it may even have been removed): wake it. It stays
                    # awake unless a quorum answers it, so check-quorum deposes it, and then it asks like any other.
                    system.command(RawNode.wake)
        elif isinstance(event, MemberEvent):
            logger.info("member %s is %s (incarnation %d)", event.node_id, event.liveness.name, event.incarnation)

    async def refresh_once(self) -> None:
        system = self._system_replica()
        stale, self._newer_exists = self._newer_exists, False
        if self._joined() and (stale or system is None or not system.hears_from_leader(self._out_of_touch)):
            try:
                with trio.move_on_after(MEMBER_REFRESH_INTERVAL):
                    await self._directory.refresh_members()
            except BoroughError as exc:
                logger.debug("member table refresh failed: %s", exc)
        self.sync_detector()
        me = self.table.get(NodeId(self._node_id))
        if me is not None and me.state is MemberState.LEAVING:
            self._on_leaving()
        elif me is not None and me.state is MemberState.DEAD:
            self._on_declared_dead()

    async def refresh_forever(self) -> None:
        while True:
            with trio.move_on_after(MEMBER_REFRESH_INTERVAL):
                await self._wanted.wait()
            self._wanted = trio.Event()
            await self.refresh_once()
            await trio.sleep(MIN_REFRESH_GAP)
