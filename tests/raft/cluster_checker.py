"""Safety checks over a simulated cluster: the invariants of Raft (Figure 3 of the paper) and of our reads.

The checker observes the ``Env`` after every step (and through its apply/read hooks) and keeps the global
history it needs: which node led which term, which entries were committed and in which term that was first
seen, which entry each index applied (on any node, learners included) and the lowest term of a node that applied
it, which writes were acknowledged, and when each read began.

An applied entry is as final as a committed one, whoever applied it: a learner's state machine (or a follower's)
must never hold an entry the group can still lose. So every applied entry must agree with every committed log,
and every leader of a later term than the one its applier was in must hold it (Leader Completeness, for what was
applied rather than what some node believes committed).
"""

from __future__ import annotations

import attrs

from borough.raft.core import Role
from borough.raft.records import Entry, NodeId

from .env import Env, EnvNode, fmt_entry


class InvariantViolation(AssertionError):
    pass


@attrs.define
class Checker:
    env: Env
    leader_of_term: dict[int, NodeId] = attrs.Factory(dict)
    # (index, term) -> (kind, data, term of index-1): Log Matching says one entry per (index, term), same prefix.
    entries: dict[tuple[int, int], tuple[int, bytes, int | None]] = attrs.Factory(dict)
    committed: dict[int, tuple[int, bytes]] = attrs.Factory(dict)  # index -> (term, data)
    committed_seen_in_term: dict[int, int] = attrs.Factory(dict)  # index -> term of the first node that knew it
    applied: dict[int, tuple[int, bytes]] = attrs.Factory(dict)  # index -> (term, data), on any node
    applied_in_term: dict[int, int] = attrs.Factory(dict)  # index -> the lowest term of a node that applied it
    proposals: dict[tuple[NodeId, int, int], bytes] = attrs.Factory(dict)  # (proposer, index, term) -> data
    acked_max: int = 0  # the highest index of an acknowledged write
    reads: dict[bytes, tuple[NodeId, int]] = attrs.Factory(dict)  # context -> (node, acked_max at read start)
    reads_served: int = 0
    writes_acked: int = 0

    def __attrs_post_init__(self) -> None:
        self.env.on_apply = self.on_apply
        self.env.on_read = self.on_read
        self.env.on_failed_read = self.on_failed_read

    # --- hooks --------------------------------------------------------------------------------------------

    def on_apply(self, node: EnvNode, e: Entry) -> None:
        prior = self.applied.setdefault(e.index, (e.term, e.data))
        if prior != (e.term, e.data):
            raise InvariantViolation(
                f"State Machine Safety: node {node.id} applied {fmt_entry(e)} but index {e.index} was applied "
                f"elsewhere as term {prior[0]} data {prior[1]!r}"
            )
        c = self.committed.get(e.index)
        if c is not None and c != (e.term, e.data):
            raise InvariantViolation(f"node {node.id} applied {fmt_entry(e)}, not the committed entry {c}")
        # The applier learned that the entry is committed from a leader of its term or an earlier one (or is
        # that leader): every leader of a later term must hold it.
        assert node.raw is not None
        term = node.raw.term
        if term < self.applied_in_term.get(e.index, term + 1):
            self.applied_in_term[e.index] = term
        data = self.proposals.pop((node.id, e.index, e.term), None)
        if data is not None and data == e.data:
            # The proposer applied its own write: the client now has its answer (the write completed).
            self.acked_max = max(self.acked_max, e.index)
            self.writes_acked += 1

    def on_read(self, node: EnvNode, context: bytes, index: int) -> None:
        begun = self.reads.pop(context, None)
        if begun is None:
            return
        reader, acked_then = begun
        if reader != node.id:
            raise InvariantViolation(f"read {context!r} from {reader} was answered on {node.id}")
        if index < acked_then:
            raise InvariantViolation(
                f"Linearizable read: read {context!r} on {node.id} got read index {index}, but the write at "
                f"{acked_then} completed before the read began"
            )
        self.reads_served += 1

    def on_failed_read(self, node: EnvNode, context: bytes) -> None:
        self.reads.pop(context, None)

    def read_started(self, node: NodeId, context: bytes) -> None:
        self.reads[context] = (node, self.acked_max)

    def proposed(self, node: NodeId, index: int, term: int, data: bytes) -> None:
        self.proposals[(node, index, term)] = data

    # --- the per-step check -------------------------------------------------------------------------------

    def check(self) -> None:
        for node in self.env.nodes.values():
            raw = node.raw
            if raw is None:
                continue
            r = raw._raft
            log = r.log
            if r.role is Role.LEADER:
                prior = self.leader_of_term.setdefault(r.term, node.id)
                if prior != node.id:
                    raise InvariantViolation(f"Election Safety: {prior} and {node.id} both led term {r.term}")
            first = log.first_index()
            entries = log.slice(first, log.last + 1, 1 << 62) if log.last >= first else []
            prev_term = log.term_or_none(first - 1)
            for e in entries:
                key = (e.index, e.term)
                seen = self.entries.setdefault(key, (e.kind, e.data, prev_term))
                if seen != (e.kind, e.data, prev_term):
                    raise InvariantViolation(
                        f"Log Matching: node {node.id} has {fmt_entry(e)} after term {prev_term}, but another log "
                        f"has kind {seen[0]} data {seen[1]!r} after term {seen[2]} at that index and term"
                    )
                prev_term = e.term
            # Committed entries never change (no committed entry is lost or replaced).
            for i in range(max(first, 1), log.committed + 1):
                e = entries[i - first]
                c = self.committed.setdefault(i, (e.term, e.data))
                self.committed_seen_in_term.setdefault(i, r.term)
                if c != (e.term, e.data):
                    raise InvariantViolation(
                        f"committed entry {i} changed: node {node.id} has {fmt_entry(e)}, it was term {c[0]} {c[1]!r}"
                    )
                a = self.applied.get(i)
                if a is not None and a != (e.term, e.data):
                    raise InvariantViolation(
                        f"State Machine Safety: node {node.id} committed {fmt_entry(e)}, but index {i} was applied "
                        f"as term {a[0]} data {a[1]!r}"
                    )
        # Leader Completeness: a leader of term T holds every entry known committed in an earlier term.
        for node in self.env.leaders():
            assert node.raw is not None
            r = node.raw._raft
            for i, (term, _) in self.committed.items():
                if self.committed_seen_in_term[i] >= r.term or i < r.log.first_index() - 1:
                    continue
                if r.log.term_or_none(i) != term:
                    raise InvariantViolation(
                        f"Leader Completeness: leader {node.id} of term {r.term} lacks committed entry {i} (term "
                        f"{term}), committed by term {self.committed_seen_in_term[i]}"
                    )
            # ... and every entry any node applied (a learner, say) as of a term before this one.
            for i, (term, _) in self.applied.items():
                if self.applied_in_term[i] >= r.term or i < r.log.first_index() - 1:
                    continue
                if r.log.term_or_none(i) != term:
                    raise InvariantViolation(
                        f"Leader Completeness: leader {node.id} of term {r.term} lacks entry {i} (term {term}), "
                        f"applied by a node in term {self.applied_in_term[i]}"
                    )
