"""A deterministic, synchronous cluster of Raft cores for tests: in-memory disks that lose unsynced writes on
crash, a network of in-flight messages that tests deliver, drop, duplicate and reorder, and a toy application
whose state is the list of entries it applied.

Used by the golden scenario runner (which prints what happens) and by the Hypothesis cluster test (which checks
invariants through the ``on_apply`` / ``on_read`` hooks). It plays the driver as the replica does, by carrying
out ``plan_ready``'s plan: send what may leave first, persist (sync when asked), send the rest, apply, advance.
With ``appends_first=False`` it never sends before persisting (the conservative order of the RawNode contract).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from borough.raft.confchange import decode_conf_change
from borough.raft.config import RaftConfig
from borough.raft.core import Role
from borough.raft.memory_storage import MemoryLogStorage
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from borough.raft.rawnode import RawNode, Ready
from borough.raft.ready_plan import ReadyPlan, plan_ready
from borough.raft.records import ConfState, Entry, EntryKind, NodeId, SnapshotMeta

AppState = tuple[Entry, ...]  # every applied entry, in order from index 1


@attrs.define(eq=False)
class Envelope:
    msg: Message
    data: AppState | None = None  # the snapshot's application state, for InstallSnapshot


@attrs.define(eq=False)
class EnvNode:
    id: NodeId
    config: RaftConfig
    storage: MemoryLogStorage
    durable: MemoryLogStorage  # what survives a crash: the storage as of the last sync
    raw: RawNode | None  # None while crashed
    app: list[Entry] = attrs.Factory(list)  # the applied state: durable (applied with its index, as in Borough)
    staged: dict[tuple[int, int], AppState] = attrs.Factory(dict)  # received snapshot data awaiting install
    restarts: int = 0
    snapshots: int = 0  # snapshots installed (for test statistics)

    @property
    def applied(self) -> int:
        return self.app[-1].index if self.app else 0

    @property
    def up(self) -> bool:
        return self.raw is not None


# --- formatting -----------------------------------------------------------------------------------------------


def fmt_ids(ids: Iterable[str]) -> str:
    return "(" + ",".join(ids) + ")"


def fmt_conf(cs: ConfState) -> str:
    parts = [f"voters={fmt_ids(cs.voters)}"]
    if cs.learners:
        parts.append(f"learners={fmt_ids(cs.learners)}")
    if cs.voters_outgoing:
        parts.append(f"outgoing={fmt_ids(cs.voters_outgoing)}")
    if cs.learners_next:
        parts.append(f"learners_next={fmt_ids(cs.learners_next)}")
    if cs.auto_leave:
        parts.append("autoleave")
    return " ".join(parts)


def fmt_data(data: bytes) -> str:
    return '"' + data.decode("utf-8", "backslashreplace") + '"'


def fmt_entry(e: Entry) -> str:
    if e.kind == EntryKind.CONF_CHANGE:
        change, result = decode_conf_change(e.data)
        names = {0: "v", 1: "l", 2: "r"}
        what = " ".join(f"{names[int(s.type)]}{s.node}" for s in change.changes) or "leave-joint"
        return f"{e.term}/{e.index} conf[{what}] -> {fmt_conf(result)}"
    return f"{e.term}/{e.index} {fmt_data(e.data)}"


def fmt_entries(entries: Iterable[Entry]) -> str:
    return "[" + ", ".join(fmt_entry(e) for e in entries) + "]"


def fmt_snap(meta: SnapshotMeta) -> str:
    return f"{meta.term}/{meta.index} {fmt_conf(meta.conf_state)}"


def fmt_msg(m: Message) -> str:
    head = f"{m.frm}->{m.to}"
    if isinstance(m, VoteRequest):
        kind = "PreVote" if m.pre_vote else "Vote"
        extra = " transfer" if m.transfer else ""
        return f"{head} {kind} term={m.term} last={m.last_term}/{m.last_index}{extra}"
    if isinstance(m, VoteResponse):
        kind = "PreVoteResp" if m.pre_vote else "VoteResp"
        return f"{head} {kind} term={m.term}" + (" rejected" if m.reject else "")
    if isinstance(m, AppendRequest):
        s = f"{head} App term={m.term} prev={m.prev_term}/{m.prev_index} commit={m.commit}"
        return s + (f" entries={fmt_entries(m.entries)}" if m.entries else "")
    if isinstance(m, AppendResponse):
        s = f"{head} AppResp term={m.term} index={m.index}"
        return s + (f" rejected hint={m.hint_term}/{m.hint_index}" if m.reject else "")
    if isinstance(m, Heartbeat):
        return f"{head} Heartbeat term={m.term} commit={m.commit} seq={m.seq}" + (" quiesce" if m.quiesce else "")
    if isinstance(m, HeartbeatResponse):
        return f"{head} HeartbeatResp term={m.term} seq={m.seq}"
    if isinstance(m, InstallSnapshot):
        return f"{head} Snapshot term={m.term} snap={fmt_snap(m.meta)}"
    if isinstance(m, TimeoutNow):
        return f"{head} TimeoutNow term={m.term}"
    if isinstance(m, ReadIndexRequest):
        return f"{head} ReadIndex term={m.term} ctx={fmt_data(m.context)}"
    if isinstance(m, ReadIndexResponse):
        s = f"{head} ReadIndexResp term={m.term} index={m.index} ctx={fmt_data(m.context)}"
        return s + (" rejected" if m.reject else "")
    raise TypeError(m)


def fmt_ready(rd: Ready) -> list[str]:
    out = []
    if rd.soft_state is not None:
        out.append(f"soft-state: leader={rd.soft_state.leader or '-'} role={rd.soft_state.role.value}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        out.append(f"hard-state: term={hs.term} vote={hs.vote or '-'} commit={hs.commit}")
    if rd.snapshot is not None:
        out.append(f"snapshot: {fmt_snap(rd.snapshot)}")
    if rd.entries:
        out.append("entries:")
        out.extend("  " + fmt_entry(e) for e in rd.entries)
    if rd.compaction is not None:
        out.append(f"compaction: {fmt_snap(rd.compaction)}")
    if rd.must_sync:
        out.append("must-sync")
    if rd.committed_entries:
        out.append("committed:")
        out.extend("  " + fmt_entry(e) for e in rd.committed_entries)
    if rd.messages:
        out.append("messages:")
        out.extend("  " + fmt_msg(m) for m in rd.messages)
    for rs in rd.read_states:
        out.append(f"read-state: index={rs.index} ctx={fmt_data(rs.context)}")
    for ctx in rd.failed_reads:
        out.append(f"failed-read: ctx={fmt_data(ctx)}")
    return out


# --- the environment ------------------------------------------------------------------------------------------


class Env:
    """The cluster. ``out`` collects printed lines when given (scenario runner), else nothing is formatted."""

    def __init__(self, out: list[str] | None = None, seed: int = 0, *, appends_first: bool = True) -> None:
        self.out = out
        self.seed = seed
        self.appends_first = appends_first  # honour Ready.appends_first (the replica's order), or never
        # Nodes armed to crash in the middle of their next Ready that sends before persisting: right after
        # ``send_before`` left, before anything is written (a crash only the production order has).
        self.crash_mid_ready: set[NodeId] = set()
        self.mid_ready_crashes = 0
        self.nodes: dict[NodeId, EnvNode] = {}
        self.net: list[Envelope] = []
        self.cut: set[frozenset[NodeId]] = set()
        self.on_apply: Callable[[EnvNode, Entry], None] | None = None
        self.on_read: Callable[[EnvNode, bytes, int], None] | None = None
        self.on_failed_read: Callable[[EnvNode, bytes], None] | None = None

    def say(self, line: str) -> None:
        if self.out is not None:
            self.out.append(line)

    # --- membership of the simulated cluster --------------------------------------------------------------

    def add_node(self, node_id: str, config: RaftConfig, storage: MemoryLogStorage) -> EnvNode:
        nid = NodeId(node_id)
        if storage.snap.index:
            # A node bootstrapped from a snapshot starts with the application state it describes.
            app = [Entry(term=storage.snap.term, index=i) for i in range(1, storage.snap.index + 1)]
        else:
            app = []
        node = EnvNode(id=nid, config=config, storage=storage, durable=storage.clone(), raw=None, app=app)
        self.nodes[nid] = node
        self._start(node)
        return node

    def _start(self, node: EnvNode) -> None:
        rng = random.Random(f"{self.seed}/{node.id}/{node.restarts}")
        node.raw = RawNode(node.config, node.storage, rng, applied=node.applied)

    def crash(self, node_id: str) -> None:
        """Stop the node; everything it wrote since its last sync is lost; staged snapshots are lost."""
        node = self.nodes[NodeId(node_id)]
        node.raw = None
        node.storage = node.durable.clone()
        node.staged.clear()

    def restart(self, node_id: str) -> None:
        node = self.nodes[NodeId(node_id)]
        if node.raw is not None:
            return
        node.restarts += 1
        self._start(node)

    def raw(self, node_id: str) -> RawNode:
        raw = self.nodes[NodeId(node_id)].raw
        if raw is None:
            raise RuntimeError(f"node {node_id} is down")
        return raw

    # --- the network --------------------------------------------------------------------------------------

    def partition(self, groups: list[list[str]]) -> None:
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                for x in a:
                    for y in b:
                        self.cut.add(frozenset((NodeId(x), NodeId(y))))

    def heal(self) -> None:
        """End every partition. What was sent across a cut link while it was cut is lost, not delayed."""
        if not self.cut:
            return
        lost = [e for e in self.net if not self.connected(e.msg.frm, e.msg.to)]
        if lost:
            self.net = [e for e in self.net if self.connected(e.msg.frm, e.msg.to)]
            for e in lost:
                self.drop(e)
        self.cut.clear()

    def connected(self, a: NodeId, b: NodeId) -> bool:
        return frozenset((a, b)) not in self.cut

    def deliver(self, env: Envelope) -> bool:
        """Deliver one message now (it must have been taken off ``net``). Returns whether it arrived."""
        m = env.msg
        node = self.nodes.get(m.to)
        if node is None or node.raw is None or not self.connected(m.frm, m.to):
            self.say(f"  {fmt_msg(m)} (dropped)")
            self._snapshot_failed(env)
            return False
        self.say(f"  {fmt_msg(m)}")
        if isinstance(m, InstallSnapshot):
            assert env.data is not None
            node.staged[(m.meta.index, m.meta.term)] = env.data
            # The stream finished: tell the sender (if it is still up) so it resumes replication.
            sender = self.nodes[m.frm].raw
            if sender is not None:
                sender.report_snapshot(m.to, True)
        node.raw.step(m)
        return True

    def drop(self, env: Envelope) -> None:
        self.say(f"  {fmt_msg(env.msg)} (dropped)")
        self._snapshot_failed(env)

    def _snapshot_failed(self, env: Envelope) -> None:
        m = env.msg
        if isinstance(m, InstallSnapshot):
            sender = self.nodes[m.frm].raw
            if sender is not None:
                sender.report_snapshot(m.to, False)

    def take(self, to: Iterable[str] | None = None) -> list[Envelope]:
        """Take every in-flight message (to the given nodes), in send order."""
        if to is None:
            taken, self.net = self.net, []
            return taken
        targets = {NodeId(t) for t in to}
        taken = [e for e in self.net if e.msg.to in targets]
        self.net = [e for e in self.net if e.msg.to not in targets]
        return taken

    def deliver_all(self, to: Iterable[str] | None = None, drop: Iterable[str] = ()) -> int:
        dropped = {NodeId(d) for d in drop}
        n = 0
        for env in self.take(to):
            if env.msg.to in dropped:
                self.drop(env)
            elif self.deliver(env):
                n += 1
        return n

    # --- the driver ---------------------------------------------------------------------------------------

    def process_ready(self, node_id: str) -> bool:
        """Play the driver once for the node, as ``plan_ready`` says: send before, persist (and sync), send after
        and stream snapshots, apply, serve reads, advance. Returns whether it had a Ready."""
        node = self.nodes[NodeId(node_id)]
        raw = node.raw
        if raw is None or not raw.has_ready():
            return False
        rd = raw.ready()
        if self.out is not None:
            self.say(f"> {node.id} handling Ready")
            self.out.extend("  " + line for line in fmt_ready(rd))
        plan = plan_ready(rd, appends_first=self.appends_first)
        # 1. what may leave before the write (a leader's appends and heartbeats)
        self.net.extend(Envelope(msg=m) for m in plan.send_before)
        if plan.send_before and node.id in self.crash_mid_ready:
            self.crash_mid_ready.discard(node.id)
            self.mid_ready_crashes += 1
            self.say(f"> {node.id} crashed before persisting")
            self.crash(node.id)
            return True
        # 2. persist (and sync when asked: everything written so far becomes durable)
        self._persist(node, plan)
        # 3. the rest of the messages, and the snapshot streams
        self.net.extend(Envelope(msg=m) for m in plan.send_after)
        for m in plan.stream_snapshots:
            # "Stream your applied state to m.to": the data at our applied index, with its meta.
            meta = raw.snapshot_meta_at(node.applied)
            self.net.append(Envelope(msg=attrs.evolve(m, meta=meta), data=tuple(node.app)))
        # 4. apply, serve reads, advance
        for e in plan.apply:
            if e.index != node.applied + 1:
                raise AssertionError(f"node {node.id} applies {e.index} after {node.applied}")
            node.app.append(e)
            if self.on_apply is not None:
                self.on_apply(node, e)
        for rs in plan.read_states:
            if self.on_read is not None:
                self.on_read(node, rs.context, rs.index)
        for ctx in plan.failed_reads:
            if self.on_failed_read is not None:
                self.on_failed_read(node, ctx)
        raw.advance(rd)
        return True

    def _persist(self, node: EnvNode, plan: ReadyPlan) -> None:
        storage = node.storage
        if plan.install is not None:
            data = node.staged.pop((plan.install.index, plan.install.term))
            node.staged.clear()
            node.app = list(data)
            node.snapshots += 1
            storage.apply_snapshot(plan.install)
        storage.append(plan.entries)
        if plan.hard_state is not None:
            storage.hard_state = plan.hard_state
        if plan.compaction is not None:
            storage.compact(plan.compaction)
        if plan.must_sync:
            node.durable = storage.clone()

    def stabilize(self, ids: Iterable[str] | None = None, limit: int = 10_000) -> None:
        """Process Readies and deliver messages among ``ids`` until nothing moves."""
        targets = sorted(self.nodes) if ids is None else [NodeId(i) for i in ids]
        for _ in range(limit):
            moved = False
            for nid in targets:
                pending = [e for e in self.net if e.msg.to == nid]
                if pending and self.nodes[nid].up:
                    self.say(f"> {nid} receiving messages")
                    self.deliver_all([nid])
                    moved = True
            for nid in targets:
                if self.process_ready(nid):
                    moved = True
            if not moved:
                return
        raise AssertionError("the cluster did not stabilize")

    # --- printers -----------------------------------------------------------------------------------------

    def state_line(self, nid: NodeId) -> str:
        node = self.nodes[nid]
        if node.raw is None:
            return f"{nid}: down"
        st = node.raw.status()
        learner = " learner" if st.learner else ""
        return (
            f"{nid}: {st.role.value}{learner} term={st.term} leader={st.leader or '-'} "
            f"commit={st.commit} applied={st.applied} last={st.last_index}"
        )

    def leaders(self) -> list[EnvNode]:
        return [n for n in self.nodes.values() if n.raw is not None and n.raw.role is Role.LEADER]


def parse_kv(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split ``a b k=v k2=(1,2)`` into positional and keyword arguments."""
    pos: list[str] = []
    kw: dict[str, Any] = {}
    for a in args:
        if "=" in a:
            k, v = a.split("=", 1)
            kw[k] = [x for x in v.strip("()").split(",") if x] if v.startswith("(") else v
        else:
            pos.append(a)
    return pos, kw
