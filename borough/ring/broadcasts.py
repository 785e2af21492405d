"""The queue of membership updates waiting to be piggybacked (memberlist's TransmitLimitedQueue).

This module owns which updates ride on the next outgoing SWIM message: at most one pending update per node
(a newer claim replaces the older one), least-transmitted first and newest first among equals, each dropped
after a bounded number of transmissions (``retransmit_mult * ceil(log10(n + 1))``: enough for epidemic
spread to reach everyone with high probability, few enough to stay small). It knows nothing of the protocol
rules, time or the network.
"""

from __future__ import annotations

import math

import attrs

from borough.ids import NodeId
from borough.ring.messages import Update

__all__ = ["BroadcastQueue"]


@attrs.define
class _Pending:
    update: Update
    transmits: int
    order: int


@attrs.define
class BroadcastQueue:
    """Pending updates keyed by the node they are about."""

    retransmit_mult: int
    _pending: dict[NodeId, _Pending] = attrs.field(factory=dict, init=False)
    _order: int = attrs.field(default=0, init=False)

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, update: Update) -> None:
        """Queue ``update``, replacing any older pending update about the same node."""
        self._order += 1
        self._pending[update.node_id] = _Pending(update=update, transmits=0, order=self._order)

    def forget(self, node_id: NodeId) -> None:
        self._pending.pop(node_id, None)

    def transmit_limit(self, cluster_size: int) -> int:
        return self.retransmit_mult * math.ceil(math.log10(cluster_size + 1))

    def take(self, max_updates: int, cluster_size: int, *, first: Update | None = None) -> tuple[Update, ...]:
        """Up to ``max_updates`` updates for one message, ``first`` (a claim the caller insists on) leading;
        counts one transmission for each queued update taken."""
        picked: list[Update] = [] if first is None else [first]
        if not self._pending:
            return tuple(picked)
        limit = self.transmit_limit(cluster_size)
        for p in sorted(self._pending.values(), key=lambda p: (p.transmits, -p.order)):
            if len(picked) >= max_updates:
                break
            if first is not None and p.update.node_id == first.node_id:
                continue
            picked.append(p.update)
            p.transmits += 1
            if p.transmits >= limit:
                del self._pending[p.update.node_id]
        return tuple(picked)
