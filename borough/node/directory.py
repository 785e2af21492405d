"""Finding a partition's replicas: directory records and member addresses, cached, for members and clients.

This module owns the answer to "which nodes hold partition P, and at which addresses": the directory record
(written once in ``_system`` when P is first used), the member table (node id -> address), addresses learned
from handshakes, and the seed addresses a process was started with. It asks ``_system`` through a function it
is given (a routed call) and never talks to the network itself. Records are immutable once written, so they
are cached for the process's lifetime; the member table is refreshed when an address is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from borough.errors import NotFound
from borough.ids import NodeId
from borough.node.protocol import Locate, Members, Op
from borough.node.records import DirectoryRecord
from borough.node.routing import Target
from borough.node.system_state import SYSTEM, SystemState
from borough.ring.hashring import DEFAULT_REPLICAS, HashRing
from borough.ring.members import MemberTable

__all__ = ["Directory"]

logger = logging.getLogger(__name__)

SystemCall = Callable[[Op], Awaitable[Any]]


#: Addresses learned from handshakes and hints that are kept (the member table's are always known).
MAX_LEARNED = 1024


class Directory:
    def __init__(
        self,
        *,
        system_call: SystemCall,
        seeds: Iterable[str] = (),
        local_system: Callable[[], SystemState | None] = lambda: None,
        self_target: Target | None = None,
        on_miss: Callable[[], None] = lambda: None,
        replicas: int = DEFAULT_REPLICAS,
    ) -> None:
        self._replicas = replicas
        self._ring: tuple[int, HashRing] | None = None
        self._call = system_call
        self._local_system = local_system
        self._self = self_target
        self.seeds: list[str] = list(dict.fromkeys(seeds))
        self.records: dict[str, DirectoryRecord] = {}
        self._fetched = MemberTable()
        self.learned: dict[str, str] = {}  # node id -> address, from handshakes and hints
        #: Called when an address is not known: the node refreshes its member table.
        self._on_miss = on_miss

    def add_seed(self, address: str) -> None:
        if address not in self.seeds:
            self.seeds.append(address)

    # --- addresses --------------------------------------------------------------------------------------

    @property
    def members(self) -> MemberTable:
        """The newest member table this process knows: its own ``_system`` replica's, or the last fetched.
        (The one rule for "which table is current"; every service asks here.)"""
        local = self._local_system()
        if local is not None and local.members.version > self._fetched.version:
            # Kept: if this node's _system replica goes away (moved elsewhere), the newest table it knew must
            # not give way to an older fetched one (a stale ring would shrink the groups this node leads).
            self._fetched = local.members
        return self._fetched

    def set_members(self, table: MemberTable) -> None:
        if table.version >= self._fetched.version:
            self._fetched = table

    def learn_address(self, node_id: str | None, address: str | None) -> None:
        """Remember where ``node_id`` said it listens (a fallback for ids the member table lacks). Bounded:
        beyond ``MAX_LEARNED`` ids the oldest is forgotten."""
        if node_id and address and self.learned.get(node_id) != address:
            self.learned.pop(node_id, None)
            if len(self.learned) >= MAX_LEARNED:
                del self.learned[next(iter(self.learned))]
            self.learned[node_id] = address

    def address_of(self, node_id: str) -> str | None:
        if self._self is not None and node_id == self._self.node_id:
            return self._self.address
        address = self.members.address_of(NodeId(node_id)) or self.learned.get(node_id)
        if address is None:
            self._on_miss()
        return address

    async def refresh_members(self) -> MemberTable:
        table: MemberTable = await self._call(Members())
        self.set_members(table)
        return self.members

    # --- records ----------------------------------------------------------------------------------------

    def cached_record(self, name: str) -> DirectoryRecord | None:
        record = self.records.get(name)
        if record is None:
            local = self._local_system()
            if local is not None:
                record = local.directory.get(name)
                if record is not None:
                    self.records[name] = record
        return record

    async def record(self, name: str, create: bool) -> DirectoryRecord:
        """The partition's directory record; with ``create`` it is registered if missing. Raises NotFound
        (for the partition name) when it does not exist and ``create`` is False."""
        record = self.cached_record(name)
        if record is not None:
            return record
        found: DirectoryRecord | None = await self._call(Locate(name, create))
        if found is None:
            raise NotFound(name, partition=SYSTEM)
        self.records[name] = found
        return found

    # --- targets ----------------------------------------------------------------------------------------

    async def locate(self, partition: str, create: bool) -> list[Target]:
        """The nodes to try for ``partition``, most likely leader first."""
        if partition == SYSTEM:
            return self._system_targets()
        record = await self.record(partition, create)
        targets, complete = self._partition_targets(partition, record)
        if not complete:
            try:
                await self.refresh_members()
            except Exception as exc:  # the routed call already retried; go with what we know
                logger.debug("member table refresh failed: %s", exc)
            targets, _ = self._partition_targets(partition, record)
        return targets

    def _partition_targets(self, partition: str, record: DirectoryRecord) -> tuple[list[Target], bool]:
        """Where the partition's group was created, then, once the member table has changed since, where the
        ring places it now (replicas follow the ring as members come and go); and whether every address is
        known. A node that no longer hosts the partition refuses at once (NotLeader: nothing ran) and the
        router remembers the leader it finds, so the order costs a round trip at most."""
        wanted = list(record.voters)
        if self.members.version > record.table_version:
            wanted = list(dict.fromkeys((*wanted, *self.ring().replica_set(partition))))
        targets = self._targets(wanted)
        return targets, len(targets) == len(wanted)

    def ring(self, table: MemberTable | None = None) -> HashRing:
        """The hash ring of ``table`` (default: the newest member table), rebuilt only when the version changes."""
        table = self.members if table is None else table
        if self._ring is None or self._ring[0] != table.version:
            self._ring = (table.version, HashRing(table, replicas=self._replicas))
        return self._ring[1]

    def _targets(self, node_ids: Iterable[str]) -> list[Target]:
        targets = []
        for node_id in node_ids:
            address = self.address_of(node_id)
            if address is not None:
                targets.append(Target(node_id, address))
        return targets

    def _system_targets(self) -> list[Target]:
        targets: list[Target] = []
        local = self._local_system()
        if local is not None and self._self is not None:
            targets.append(self._self)
        targets += [Target(m.node_id, m.address) for m in self.members if m.state.in_ring]
        targets += [Target(None, address) for address in self.seeds]
        targets += [Target(n, a) for n, a in sorted(self.learned.items())]
        seen: set[str] = set()
        unique = []
        for t in targets:
            if t.address not in seen:
                seen.add(t.address)
                unique.append(t)
        return unique
