"""Small helpers for unit tests of the Raft core: build a replica with a given log and state, play its driver
once, and a tiny lossless network for a handful of replicas."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from borough.raft.config import RaftConfig
from borough.raft.memory_storage import MemoryLogStorage
from borough.raft.messages import Message
from borough.raft.rawnode import RawNode, Ready
from borough.raft.records import ConfState, Entry, HardState, NodeId


def ents(*terms: int, start: int = 1) -> list[Entry]:
    """Entries with the given terms at consecutive indexes from ``start``."""
    return [Entry(term=t, index=start + i, data=f"{t}/{start + i}".encode()) for i, t in enumerate(terms)]


def make_node(
    node: str,
    voters: Sequence[str] = ("1", "2", "3"),
    *,
    learners: Sequence[str] = (),
    log: Sequence[int] = (),
    term: int = 0,
    vote: str | None = None,
    commit: int = 0,
    seed: int | None = None,
    **config: object,
) -> RawNode:
    """A replica whose storage holds ``log`` (one term per entry, indexes from 1) and the given hard state."""
    storage = MemoryLogStorage(ConfState(voters=voters, learners=learners))
    storage.append(ents(*log))
    storage.hard_state = HardState(term=term, vote=NodeId(vote) if vote else None, commit=commit)
    cfg = RaftConfig(id=NodeId(node), group="p", **config)  # type: ignore[arg-type]
    # Each replica gets its own random stream (identical streams would time out in lockstep forever).
    raw = RawNode(cfg, storage, random.Random(f"{node}/{seed}"))
    raw.storage = storage  # type: ignore[attr-defined]  # handy in tests
    return raw


def restart(raw: RawNode, seed: int = 1) -> RawNode:
    """The same replica after a crash: a new core over what its storage persisted."""
    storage = raw.storage  # type: ignore[attr-defined]
    again = RawNode(raw._raft.cfg, storage, random.Random(f"{raw.id}/restart{seed}"), applied=raw.status().applied)
    again.storage = storage  # type: ignore[attr-defined]
    return again


def drain(raw: RawNode) -> Ready:
    """Play the driver once: persist the Ready into the node's storage, then advance. Returns the Ready."""
    rd = raw.ready()
    raw.storage.persist(rd)  # type: ignore[attr-defined]
    raw.advance(rd)
    return rd


def msgs(raw: RawNode) -> list[Message]:
    """The messages the node wants to send now (after playing its driver once)."""
    return drain(raw).messages if raw.has_ready() else []


class Net:
    """Replicas joined by a lossless network; ``stabilize`` runs them until no message is left."""

    def __init__(self, nodes: Iterable[RawNode]) -> None:
        self.nodes = {n.id: n for n in nodes}
        self.cut: set[frozenset[str]] = set()
        self.applied: dict[str, list[Entry]] = {n: [] for n in self.nodes}

    def isolate(self, node: str) -> None:
        for other in self.nodes:
            if other != node:
                self.cut.add(frozenset((node, other)))

    def heal(self) -> None:
        self.cut.clear()

    def send(self, messages: Iterable[Message]) -> None:
        pending = list(messages)
        while pending:
            m = pending.pop(0)
            if frozenset((m.frm, m.to)) in self.cut or m.to not in self.nodes:
                continue
            self.nodes[m.to].step(m)

    def stabilize(self, limit: int = 1000) -> None:
        for _ in range(limit):
            out: list[Message] = []
            for nid, n in self.nodes.items():
                if n.has_ready():
                    rd = drain(n)
                    self.applied[nid].extend(rd.committed_entries)
                    out.extend(rd.messages)
            if not out:
                return
            self.send(out)
        raise AssertionError("the network did not stabilize")

    def elect(self, node: str) -> None:
        self.nodes[NodeId(node)].campaign()
        self.stabilize()

    def heartbeat(self, leader: str) -> None:
        """One heartbeat interval of the leader, then stabilize: the followers learn its commit index (a
        commit alone rides on the next append or heartbeat)."""
        raw = self.nodes[NodeId(leader)]
        for _ in range(raw._raft.cfg.heartbeat_tick):
            raw.tick()
        self.stabilize()
