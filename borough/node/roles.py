"""Who may say what: the role of the process at the other end of a connection, and what that role allows.

Every connection is either a member node's or a client's. A member node is a peer whose handshake names a node
id the member table lists (under TLS, its certificate must also be a node certificate of the cluster's CA; the
transport checks that and reports a client certificate as a client); a joining node is one that is not in the
table yet and asks to join. What each role may send:

- Raft and SWIM frames, and snapshot streams: members only. A node that hears from a node id it does not know
  asks ``_system`` for a fresh member table (a node that joined a moment ago), and drops the frame meanwhile:
  Raft and SWIM retransmit. One exception: ``_system``'s own Raft traffic and snapshots are taken from any node
  (never a client). ``_system`` is where the member table is decided, and a node whose table is stale (it was
  down while others joined) may be needed to elect its leader: refusing the new members there would leave it
  waiting for a table that no leader can serve (found by the topology fuzzer, seed 30655). Such a node speaks in
  its own name only, is not believed about incarnations (``incarnations``), and the Raft core ignores a node
  outside the group's configuration while it hears from its leader. Under TLS a node is a holder of a node
  certificate of the cluster's CA; without TLS no role is more than a declaration.
- ``sys.join``: a node joining (or rejoining) as itself, never a client, never on another node's behalf (it
  would rewrite that member's address).
- Everything else (reads, writes, requests, partition info, members, decommission): anyone who connected (under
  TLS, that means anyone holding a certificate of the cluster's CA).

This module owns those rules; it knows nothing of how frames or calls are carried out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from borough.errors import Forbidden
from borough.ids import NodeId
from borough.node.protocol import Join, Op, SendSnapshot
from borough.node.system_state import SYSTEM
from borough.raft.messages import decode_message
from borough.ring.members import MemberTable
from borough.wire.records import PeerInfo

__all__ = ["Roles"]

logger = logging.getLogger(__name__)

#: At most one refusal per peer kind is logged this often (a flood of refused frames must not flood the log).
LOG_EVERY = 10.0


class Roles:
    def __init__(self, *, members: Callable[[], MemberTable], unknown_member: Callable[[], None]) -> None:
        self._members = members
        self._unknown_member = unknown_member
        self._logged_at: dict[str, float] = {}
        #: Frames and calls refused because the peer's role does not allow them.
        self.refused = 0

    def is_member(self, peer: PeerInfo) -> bool:
        """Whether ``peer`` is a member node of the cluster (as far as this node's member table knows)."""
        if peer.is_client or not peer.node_id:
            return False
        if NodeId(peer.node_id) in self._members():
            return True
        self._unknown_member()  # perhaps a node that joined a moment ago: fetch a fresh table
        return False

    def trusts_address(self, node_id: str | None, address: str) -> bool:
        """Whether a connection from ``node_id`` may stand for ``address`` (``Transport.trusts_address``): only
        a member the member table lists at that address, so no connection takes over another's traffic."""
        return node_id is not None and self._members().address_of(NodeId(node_id)) == address

    def frames_from(self, peer: PeerInfo) -> str | None:
        """Which frames of ``peer`` are taken: ``"all"`` (a member's), ``"system"`` (only Raft messages of
        ``_system``: a node this node's table does not list yet), or None (a client's: nothing)."""
        if self.is_member(peer):
            return "all"
        self._refuse(peer, "Raft and SWIM frames")
        return None if peer.is_client or not peer.node_id else "system"

    def check_call(self, peer: PeerInfo, partition: str, op: Op) -> None:
        """Raise ``Forbidden`` unless ``peer``'s role allows ``op``."""
        if isinstance(op, SendSnapshot) and not self.is_member(peer):
            if partition != SYSTEM or peer.is_client:
                self._refuse(peer, "a snapshot")
                raise Forbidden(f"{peer} is not a member of this cluster: only members send snapshots")
            if decode_message(op.message).frm != peer.node_id:
                self._refuse(peer, "a snapshot in another node's name")
                raise Forbidden(f"{peer} is not a member of this cluster: it sends snapshots in its own name only")
        if isinstance(op, Join) and (peer.is_client or not peer.node_id):
            self._refuse(peer, "sys.join")
            raise Forbidden("a client cannot join the cluster: only a node (with a node id) can")
        if isinstance(op, Join) and op.node_id != peer.node_id:
            self._refuse(peer, "sys.join for another node")
            raise Forbidden(f"{peer} cannot join the cluster as node {op.node_id}: a node joins only as itself")

    def _refuse(self, peer: PeerInfo, what: str) -> None:
        self.refused += 1
        kind = "client" if peer.is_client else "non-member"
        now = trio.current_time()
        if now - self._logged_at.get(kind, -LOG_EVERY) >= LOG_EVERY:
            self._logged_at[kind] = now
            logger.warning("refused %s from %s (a %s); counted in roles.refused", what, peer, kind)
