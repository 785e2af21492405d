"""Which incarnation of a replica a Raft message comes from and is meant for.

A node removed from a group deletes its replica; added back later, it holds a new replica of the same group, a
new *incarnation* (its number comes from the group's configuration, see ``ConfState.incarnations``). Raft
names peers by node id only, so without incarnations a message of the old replica (a leader's append sent
before the removal, an old answer delayed on the wire) would be taken for the new one's: an old append would
start a zombie replica on stale state, an old "I hold entries up to 900" would make the leader believe the
fresh, empty replica holds them and stall its catch-up forever.

So every Raft message travels with two numbers: the incarnation the sender believes the recipient is
(``to_inc``) and the sender's own (``frm_inc``). A replica drops a message meant for an earlier incarnation of
itself, and one from an earlier incarnation of a peer than its configuration lists. A node drops a message for
a group it holds no replica of when the message is meant for the incarnation its tombstone recorded, or an
earlier one (``Registry``). This module owns those two numbers for one replica; it knows nothing of the wire.

Only a member's word changes them. ``_system`` takes Raft traffic from node ids the member table does not list
(``roles``: a node with a stale table may be needed to elect its leader), and such a sender, who may be anyone
who reached the port, is not believed about incarnations: had it told a replica "you are incarnation 2**63-1",
the replica would have dropped every message of its real peers (addressed to the incarnation its configuration
lists) for good, and a learner, which never speaks first, would have stayed one for ever (the live-port fuzzer).
"""

from __future__ import annotations

from collections.abc import Callable

from borough.raft.records import ConfState, Tombstone

__all__ = ["Incarnations", "Stamp"]

#: The (recipient's, sender's) incarnations for a message to a node.
Stamp = Callable[[str], tuple[int, int]]

#: Peers not in the configuration whose newer incarnation a replica remembers (to answer them).
_STRANGERS = 16


class Incarnations:
    """One replica's incarnation and what it knows of its peers'."""

    def __init__(self, node_id: str, conf: Callable[[], ConfState], tombstone: Tombstone | None) -> None:
        self._node_id = node_id
        self._conf = conf
        # A replica created where an earlier one was deleted is a later incarnation than that one was.
        self._floor = tombstone.incarnation + 1 if tombstone is not None else 0
        self._seen = 0  # the highest incarnation a sender addressed this replica as
        self._peers: dict[str, int] = {}  # peers known to be at a later incarnation than our configuration says
        self._strangers: dict[str, int] = {}  # the same, as non-members claim it for themselves
        self._previous = tombstone.incarnation if tombstone is not None else 0
        self._member: int | None = None  # the latest incarnation an applied configuration listed us at
        #: Messages dropped as meant for, or coming from, an earlier incarnation.
        self.dropped = 0

    def own(self) -> int:
        """This replica's incarnation: what its configuration says, or a sender told it, whichever is later."""
        return max(self._floor, self._seen, self._conf().incarnation(self._node_id))

    def admit(self, frm: str, to_inc: int, frm_inc: int, *, member: bool = True) -> bool:
        """Whether a message from ``frm`` stamped (``to_inc``, ``frm_inc``) is for this replica and from the
        current incarnation of its sender. A sender addressing a later incarnation than ours tells us we were
        added back (our removal never reached us): we are that incarnation from now on, and keep our log (Raft
        brings it in line; our term and vote are our node's). A sender that is not a ``member`` of the cluster
        (see the module docstring) changes nothing here: its message is admitted or dropped by the same rules,
        and its claims are forgotten."""
        own = self.own()
        if to_inc < own:
            self.dropped += 1
            return False
        conf = self._conf()
        listed = conf.incarnation(frm)
        if frm_inc < listed:
            self.dropped += 1
            return False
        if member and to_inc > own:
            self._seen = to_inc
        # How to address the sender from now on. A non-member's word counts for its own messages only, in a table
        # of its own, so a flood of made-up ids never evicts what a member told us.
        peers = self._peers if member else self._strangers
        if frm_inc > listed and frm_inc > peers.get(frm, 0):
            if len(peers) >= _STRANGERS and frm not in peers:
                peers.clear()
            peers[frm] = frm_inc
        return True

    def observe(self, applied: ConfState) -> None:
        """``applied`` is the configuration in effect at the replica's applied index: note whether (and at which
        incarnation) it lists this replica."""
        if self._node_id in applied.members():
            inc = applied.incarnation(self._node_id)
            self._member = inc if self._member is None else max(self._member, inc)

    def left_group(self, applied: ConfState, newest: ConfState) -> bool:
        """Whether this replica was removed from its group: the newest configuration, committed (equal to the
        one in effect at the applied index), does not list it, and an applied configuration did list it at its
        current incarnation. A replica still catching up replays configurations from before it was added (its
        own addition is further on in the log), and an old incarnation added back replays its removal: neither
        has left (a removed replica is never told so by Raft itself, §4.2.2 of Ongaro's thesis)."""
        self.observe(applied)
        return (
            self._member is not None
            and self._member >= self.own()
            and self._node_id not in newest.members()
            and applied == newest
        )

    def deleted(self) -> int:
        """The incarnation a tombstone records when this replica's data is deleted: the latest one it knew itself
        a member at. One that never was (it was only catching up) records what the earlier tombstone did, so
        the leader that was adding it can still create it again."""
        return self._member if self._member is not None else self._previous

    def stamp(self, to: str) -> tuple[int, int]:
        """(``to_inc``, ``frm_inc``) for a message to ``to``."""
        return max(self._conf().incarnation(to), self._peers.get(to, 0), self._strangers.get(to, 0)), self.own()
