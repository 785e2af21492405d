"""The consistent hash ring: which R nodes hold each partition, as a pure function of (member table, name).

This module owns the placement *rule*: V virtual points per ring member on a 64-bit circle, a stable hash
(BLAKE2b with an 8-byte digest, never Python's per-process ``hash()``), the owner of a name being the member
of the first point at or after hash(name), and the replica set being the owner followed by the next R-1
*distinct* members clockwise (fewer members than R gives all of them). It knows nothing of liveness, Raft or
the network: give it the same member table and it gives the same answer on every node, process and run.

Only ring members count (``MemberState.ACTIVE``, see ``members.py``): a LEAVING member is still a replica
until placement moves its partitions away, but the ring no longer places anything on it.

Choosing the default number of virtual points (``DEFAULT_VNODES = 128``), measured with ``bench/ring.py
--choose-vnodes --tables 200``: 10,000 partition names, R = 3, the *worst* of 200 random member tables per row:

====== ================================= =====================================================
vnodes max/mean replicas, 5 members      slots moved to a joining member / its fair share (N=4..12)
====== ================================= =====================================================
 32    1.33                              1.29
 64    1.22                              1.12
 128   1.16                              1.08
 160   1.18                              1.04
 256   1.12                              1.11
====== ================================= =====================================================

The issue's bounds are max/mean <= 1.3 with 5 members and <= 2x the fair share when a member joins. 32
points already miss the first in the worst case and 64 keep little margin; 128 keep a wide one, and more
points buy little balance for their cost (points are hashed at build time and the point array grows: a
100-member ring of 128 points builds in ~20 ms, see ``bench/ring.py``).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence

from borough.errors import ConfigError
from borough.ids import NodeId
from borough.ring.members import Member, MemberTable

__all__ = ["DEFAULT_CACHE_SIZE", "DEFAULT_REPLICAS", "DEFAULT_VNODES", "HashRing", "point_of", "stable_hash"]

DEFAULT_REPLICAS = 3
DEFAULT_VNODES = 128
DEFAULT_CACHE_SIZE = 65_536

# Distinct BLAKE2b personalisations keep member points and partition names in separate hash domains, so no
# partition name can be chosen to land exactly on a member's point string.
_NAME_PERSON = b"borough.part"
_POINT_PERSON = b"borough.vnode"


def stable_hash(name: str) -> int:
    """The 64-bit position of a partition name on the ring: identical in every process, run and platform."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8, person=_NAME_PERSON).digest()
    return int.from_bytes(digest, "big")


def point_of(node_id: NodeId, i: int) -> int:
    """The position of a member's i-th virtual point."""
    key = f"{node_id}\x00{i}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8, person=_POINT_PERSON).digest(), "big")


def _points_of(node_id: NodeId, vnodes: int) -> list[int]:
    return [point_of(node_id, i) for i in range(vnodes)]


class HashRing:
    """An immutable ring built from the ring members of a member table (or an iterable of members).

    ``replica_set(name)`` is the tuple of node ids holding the partition, owner first. Lookups are cached by
    name in a bounded dict that evicts the oldest entry when full (FIFO: a hit costs one dict lookup and no
    bookkeeping; a hot name that was evicted comes back on its next lookup). The replica set of each point is
    also memoised, so even a cold lookup is one hash, one bisect and one list index once the ring is warm.
    Rebuild after a member change with ``updated(table)``, which reuses the point hashes of unchanged members.
    """

    __slots__ = (
        "_cache",
        "_cache_size",
        "_member_ids",
        "_owners",
        "_point_sets",
        "_points",
        "_points_by_member",
        "replicas",
        "version",
        "vnodes",
    )

    def __init__(
        self,
        members: MemberTable | Iterable[Member],
        *,
        replicas: int = DEFAULT_REPLICAS,
        vnodes: int = DEFAULT_VNODES,
        cache_size: int = DEFAULT_CACHE_SIZE,
        _reuse: dict[NodeId, list[int]] | None = None,
    ) -> None:
        if type(replicas) is not int or replicas < 1:
            raise ConfigError(f"HashRing replicas must be a positive integer, got {replicas!r}")
        if type(vnodes) is not int or not 1 <= vnodes <= 65_536:
            raise ConfigError(f"HashRing vnodes must be an integer in [1, 65536], got {vnodes!r}")
        if type(cache_size) is not int or cache_size < 0:
            raise ConfigError(f"HashRing cache_size must be a non-negative integer, got {cache_size!r}")
        if isinstance(members, MemberTable):
            self.version: int | None = members.version
            ring_members = members.ring_members()
        else:
            self.version = None
            ring_members = tuple(m for m in MemberTable(members=members).members if m.state.in_ring)
        self.replicas = replicas
        self.vnodes = vnodes
        self._cache_size = cache_size
        self._cache: dict[str, tuple[NodeId, ...]] = {}
        ids = tuple(m.node_id for m in ring_members)  # sorted by node id (MemberTable keeps them sorted)
        self._member_ids = ids
        reuse = _reuse or {}
        self._points_by_member: dict[NodeId, list[int]] = {}
        tagged: list[tuple[int, int]] = []
        for idx, node_id in enumerate(ids):
            pts = reuse.get(node_id)
            if pts is None:
                pts = _points_of(node_id, vnodes)
            self._points_by_member[node_id] = pts
            tagged.extend((p, idx) for p in pts)
        # Ties between two members' points (probability ~ N*V/2**64) are broken by node id through the index,
        # so the order, and with it every replica set, is still a pure function of the member table.
        tagged.sort()
        self._points: list[int] = [p for p, _ in tagged]
        self._owners: list[int] = [i for _, i in tagged]
        self._point_sets: list[tuple[NodeId, ...] | None] = [None] * len(tagged)

    @classmethod
    def from_node_ids(
        cls,
        node_ids: Iterable[str],
        *,
        replicas: int = DEFAULT_REPLICAS,
        vnodes: int = DEFAULT_VNODES,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> HashRing:
        """A ring of ACTIVE members with these ids (addresses are irrelevant to placement); for tests and tools."""
        members = [Member(node_id=NodeId(n), address=f"{n}:0") for n in node_ids]
        return cls(members, replicas=replicas, vnodes=vnodes, cache_size=cache_size)

    def updated(self, members: MemberTable | Iterable[Member]) -> HashRing:
        """A ring for a new member table with the same settings, reusing the points of unchanged members."""
        return HashRing(
            members,
            replicas=self.replicas,
            vnodes=self.vnodes,
            cache_size=self._cache_size,
            _reuse=self._points_by_member,
        )

    # -- lookups -------------------------------------------------------------------------------------------
    @property
    def members(self) -> tuple[NodeId, ...]:
        """The ring members' node ids, sorted."""
        return self._member_ids

    def __len__(self) -> int:
        return len(self._member_ids)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._points_by_member

    def replica_set(self, name: str) -> tuple[NodeId, ...]:
        """The nodes holding partition ``name``: the owner first, then the next R-1 distinct members clockwise.
        Holds min(R, members) distinct node ids; empty when the ring has no members."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        result = self._lookup(name)
        cache = self._cache
        if len(cache) >= self._cache_size:
            if self._cache_size == 0:
                return result
            # Evict the least recently inserted entry: dicts keep insertion order, so this is O(1).
            del cache[next(iter(cache))]
        cache[name] = result
        return result

    def owner(self, name: str) -> NodeId | None:
        """The ring owner of ``name`` (the preferred leader of its partition), or None for an empty ring."""
        rs = self.replica_set(name)
        return rs[0] if rs else None

    def replica_set_uncached(self, name: str) -> tuple[NodeId, ...]:
        """``replica_set`` without the name cache (the per-point memo still applies); for benchmarks."""
        return self._lookup(name)

    def _lookup(self, name: str) -> tuple[NodeId, ...]:
        points = self._points
        if not points:
            return ()
        i = bisect.bisect_left(points, stable_hash(name))
        if i == len(points):
            i = 0  # wrap around the circle
        rs = self._point_sets[i]
        if rs is None:
            rs = self._walk(i)
            self._point_sets[i] = rs
        return rs

    def _walk(self, start: int) -> tuple[NodeId, ...]:
        want = min(self.replicas, len(self._member_ids))
        owners = self._owners
        n = len(owners)
        seen: list[int] = []
        i = start
        while len(seen) < want:
            o = owners[i]
            if o not in seen:
                seen.append(o)
            i += 1
            if i == n:
                i = 0
        ids = self._member_ids
        return tuple(ids[o] for o in seen)

    def replica_sets(self, names: Sequence[str]) -> dict[str, tuple[NodeId, ...]]:
        """Replica sets of many names at once (a convenience for planners and tests)."""
        return {name: self.replica_set(name) for name in names}

    def __repr__(self) -> str:
        return (
            f"HashRing(members={len(self._member_ids)}, replicas={self.replicas}, vnodes={self.vnodes}, "
            f"version={self.version})"
        )
