"""Where the leader of each group this node hosts is, as the group's replica last reported it.

This module owns an index of the hosted replicas by the node their leader is on, kept from the replicas' leader
changes (``ReplicaHost.leader_changed``), and the waits for a group's first leader. Fail-over looks up the groups
led from a node that is gone (or the groups led here, when a node comes back) in it, so the work of a member
event is proportional to those groups rather than to every replica hosted. A caller that just created a group
and started its first election waits here for the outcome (``wait_known``) instead of answering "no leader yet"
and having the client retry every replica while the election runs. The index may lag a replica by one report
(callers check the replica itself); entries of replicas no longer hosted are dropped when met and swept once
they outnumber the hosted ones. It knows nothing of Raft or of the wire.
"""

from __future__ import annotations

from collections.abc import Collection

import trio

__all__ = ["Leaders"]


class Leaders:
    def __init__(self, hosted: Collection[str]) -> None:
        self._hosted = hosted  # the partitions hosted here (the node's replicas), to sweep entries of those gone
        self._leader_of: dict[str, str] = {}
        self._led_by: dict[str, set[str]] = {}
        self._waits: dict[str, trio.Event] = {}

    def __len__(self) -> int:
        return len(self._leader_of)

    def changed(self, partition: str, leader: str | None) -> None:
        """``partition``'s replica here now knows ``leader`` (its own node id when it leads; None: none known)."""
        old = self._leader_of.get(partition)
        if old == leader:
            return
        if old is not None:
            group = self._led_by[old]
            group.discard(partition)
            if not group:
                del self._led_by[old]
        if leader is None:
            del self._leader_of[partition]
            return
        self._leader_of[partition] = leader
        self._led_by.setdefault(leader, set()).add(partition)
        wait = self._waits.pop(partition, None)
        if wait is not None:
            wait.set()
        self._sweep()

    def leader_of(self, partition: str) -> str | None:
        return self._leader_of.get(partition)

    def led_by(self, node_id: str) -> list[str]:
        """The partitions hosted here whose leader (as last reported) is on ``node_id``, in name order."""
        return sorted(self._led_by.get(node_id, ()))

    async def wait_known(self, partition: str) -> None:
        """Return once ``partition``'s replica here reports a leader (at once if it has); bound it with a cancel
        scope. The wait is shared by every caller waiting on the same partition and forgotten when it ends."""
        if partition in self._leader_of:
            return
        wait = self._waits.get(partition)
        if wait is None:
            wait = self._waits[partition] = trio.Event()
        try:
            await wait.wait()
        finally:
            if self._waits.get(partition) is wait and not wait.statistics().tasks_waiting:
                del self._waits[partition]

    def _sweep(self) -> None:
        hosted = self._hosted
        if len(self._leader_of) <= 2 * len(hosted) + 64:
            return
        for name in [n for n in self._leader_of if n not in hosted]:
            self.changed(name, None)
