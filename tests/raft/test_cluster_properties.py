"""A randomized, deterministic cluster of 1 to 7 Raft cores driven by Hypothesis: 1 to 5 voters, learners.

Faults: message drop, duplication, reordering and delay; partitions; crash and restart from persisted state
with unsynced writes lost, including a leader crashing after its appends left but before its own write landed
(the replica's order, thesis §10.2.1: followers may hold entries the leader lost); membership changes
(learners, promotions, removals down to one voter, joint changes); leadership transfers; log compaction and
snapshots. Learners are first-class: a group may start with some, or with one voter and some (the one-voter leader
commits its own entries at once, so what it tells its learners is committed only once it is durable). After every
step the checker verifies Election Safety, Log Matching, Leader Completeness, State Machine Safety over every node
that applied anything, learners included (no entry any node applied is ever lost: every later leader and every
committed log holds it), that committed entries never change, and that a ReadIndex or lease read never misses a
write acknowledged before it began. Liveness: once faults heal, a leader is elected and a proposal commits within
a bounded number of ticks.

A failure prints the steps that replay it (Hypothesis' stateful output) and a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from borough.errors import BoroughError
from borough.raft.confchange import ChangeType, ConfChange, ConfChangeSingle, Transition
from borough.raft.config import RaftConfig
from borough.raft.core import Role
from borough.raft.memory_storage import MemoryLogStorage
from borough.raft.rawnode import RawNode
from borough.raft.records import ConfState, NodeId

from .cluster_checker import Checker
from .env import Env, Envelope

ELECTION = 6


def _bucket(n: int) -> str:
    return "0" if n == 0 else "1-4" if n < 5 else "5-19" if n < 20 else "20+"


ALL_IDS = [NodeId(str(i)) for i in range(1, 8)]
# Requests mostly go to the current leader (None), sometimes to an arbitrary node.
TARGET = st.one_of(st.none(), st.none(), st.sampled_from(ALL_IDS))


class Cluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.env = Env()
        self.checker = Checker(self.env)
        self.counter = 0
        self.steps = 0
        self.stale_reads = 0
        self.runs = 0

    @initialize(
        voters=st.integers(1, 5),
        learners=st.integers(0, 2),
        spares=st.integers(0, 2),
        lease=st.booleans(),
        pre_vote=st.booleans(),
        batch=st.sampled_from([1, 3, 100]),
        seed=st.integers(0, 2**32 - 1),
        appends_first=st.sampled_from([True, True, False]),
        quiesce=st.sampled_from([0, 0, 2, 5]),
        coalesce=st.booleans(),
    )
    def setup(
        self,
        voters: int,
        learners: int,
        spares: int,
        lease: bool,
        pre_vote: bool,
        batch: int,
        seed: int,
        appends_first: bool,
        quiesce: int,
        coalesce: bool,
    ) -> None:
        self.env.seed = seed
        # Mostly the replica's order (appends and heartbeats before the leader's write), sometimes persist-first.
        self.env.appends_first = appends_first
        ids = ALL_IDS[: voters + learners + spares]
        members = voters + learners
        conf = ConfState(voters=ids[:voters], learners=ids[voters:members])
        for i, nid in enumerate(ids):
            cfg = RaftConfig(
                id=nid,
                group="p",
                election_tick=ELECTION,
                heartbeat_tick=1,
                pre_vote=pre_vote,
                check_quorum=True if lease else pre_vote,
                read_only="lease" if lease else "safe",
                # One entry per append sends old-term entries apart from the new leader's no-op (Figure 8).
                max_msg_entries=batch,
                max_inflight_msgs=3,
                max_uncommitted_bytes=1 << 12,
                quiesce_ticks=quiesce,  # groups go quiet, and are woken by anything (0: never)
                coalesce_appends=coalesce,  # (what every node's groups do: new entries wait for the append in flight)
            )
            # Spares are replicas created to receive a snapshot: empty configuration, no log.
            storage = MemoryLogStorage(conf if i < members else ConfState())
            self.env.add_node(nid, cfg, storage)

    # --- helpers ------------------------------------------------------------------------------------------

    def process(self) -> None:
        for nid in sorted(self.env.nodes):
            self.env.process_ready(nid)

    def up_ids(self) -> list[NodeId]:
        return [nid for nid in sorted(self.env.nodes) if self.env.nodes[nid].up]

    def stale_leader(self) -> NodeId | None:
        """A node that believes it leads an older term than the newest leader (it may not know it is deposed)."""
        leaders = sorted(self.env.leaders(), key=lambda n: n.raw.term if n.raw else 0)
        return leaders[0].id if len(leaders) > 1 else None

    def leader(self) -> NodeId | None:
        leaders = sorted(self.env.leaders(), key=lambda n: -n.raw.term if n.raw else 0)
        return leaders[0].id if leaders else None

    def tick_all(self) -> None:
        # One global clock: every running node ticks together (lease reads assume bounded clock drift).
        for node in self.env.nodes.values():
            if node.raw is not None:
                node.raw.tick()
        self.process()

    # --- time and the network -----------------------------------------------------------------------------

    @rule(n=st.integers(1, 4))
    def tick(self, n: int) -> None:
        """Time passes and nothing is delivered (every message in flight is delayed)."""
        for _ in range(n):
            self.tick_all()

    @rule(seed=st.integers(0, 2**32 - 1))
    def run(self, seed: int) -> None:
        """Time passes while clients write and read and the network delivers, with random drops, duplicates,
        delays and reordering, and crashes, restarts and partitions striking at random moments.

        The run's shape (length, load, fault rates) comes from ``seed`` rather than from separate Hypothesis
        draws: Hypothesis favours small and zero values, which would make most runs uneventful."""
        # Mixed with the example's seed and the run's number, so that runs differ even when Hypothesis draws the
        # same seed again (it favours a few values); replaying the example replays the same runs, and steps
        # removed while shrinking (other than runs) do not change them.
        self.runs += 1
        rng = random.Random(f"{seed}/{self.env.seed}/{self.runs}")
        self.run_with(
            rng,
            ticks=rng.randint(1, 3 * ELECTION),
            drop=rng.choice([0.0, 0.0, 0.05, 0.2]),
            dup=rng.choice([0.0, 0.0, 0.05]),
            delay=rng.choice([0.0, 0.1, 0.3, 0.6]),
            reorder=rng.random() < 0.5,
            load=rng.randint(0, 3),
            chaos=rng.choice([0.0, 0.02, 0.05, 0.15]),
        )

    # Rules are drawn uniformly: more names for ``run`` make progress (rather than faults) the common case.
    @rule(seed=st.integers(0, 2**32 - 1))
    def run_more(self, seed: int) -> None:
        self.run(seed)

    @rule(seed=st.integers(0, 2**32 - 1))
    def run_longer(self, seed: int) -> None:
        self.run(seed)

    def run_with(
        self,
        rng: random.Random,
        ticks: int,
        drop: float,
        dup: float,
        delay: float,
        reorder: bool,
        load: int,
        chaos: float,
    ) -> None:
        env = self.env
        for _ in range(ticks):
            self.tick_all()
            for _ in range(load):
                r = rng.random()
                target = self.leader() if r < 0.6 else self.stale_leader() if r < 0.8 else rng.choice(sorted(env.nodes))
                if rng.random() < 0.7:
                    self.propose(target, 1)
                else:
                    self.read(target)
            for _ in range(3):
                batch = env.take()
                if reorder:
                    rng.shuffle(batch)
                for e in batch:
                    p = rng.random()
                    if p < drop:
                        env.drop(e)
                    elif p < drop + delay:
                        env.net.append(e)
                    else:
                        if p < drop + delay + dup:
                            env.net.append(Envelope(msg=e.msg, data=e.data))
                        env.deliver(e)
                    if rng.random() < chaos / 4:
                        self.strike(rng)
                self.process()
            if rng.random() < chaos:
                self.strike(rng)
            self.checker.check()

    def strike(self, rng: random.Random) -> None:
        """One random fault: crash or restart a node (the leader, sometimes, in the middle of its next Ready),
        or re-partition or heal the network."""
        env = self.env
        what = rng.random()
        if what < 0.1:
            lead = self.leader()
            if lead is not None and len(self.up_ids()) > 1:
                env.crash_mid_ready.add(lead)
        elif what < 0.35:
            up = self.up_ids()
            if len(up) > 1:
                env.crash(rng.choice(up))
        elif what < 0.7:
            down = [n for n in sorted(env.nodes) if not env.nodes[n].up]
            if down:
                env.restart(rng.choice(down))
        elif what < 0.85:
            env.heal()
            ids = sorted(env.nodes)
            if len(ids) > 1:
                inside = rng.sample(ids, rng.randint(1, len(ids) // 2))
                env.partition([inside, [n for n in ids if n not in inside]])
        else:
            env.heal()

    @precondition(lambda self: self.env.net)
    @rule(
        action=st.sampled_from(["deliver", "drop", "duplicate", "deliver-all"]),
        picks=st.lists(st.integers(0, 1000), min_size=1, max_size=6),
    )
    def messages(self, action: str, picks: list[int]) -> None:
        """Act on chosen in-flight messages: deliver them out of order (the rest are delayed), drop them, or
        duplicate them; or deliver everything in flight."""
        env = self.env
        if action == "deliver-all":
            for e in env.take():
                env.deliver(e)
            self.process()
            return
        for p in picks:
            if not env.net:
                break
            i = p % len(env.net)
            if action == "duplicate":
                env.net.append(Envelope(msg=env.net[i].msg, data=env.net[i].data))
            elif action == "drop":
                env.drop(env.net.pop(i))
            else:
                env.deliver(env.net.pop(i))
                self.process()

    @rule(heal=st.booleans(), members=st.sets(st.sampled_from(ALL_IDS), min_size=1, max_size=3))
    def network(self, heal: bool, members: set[NodeId]) -> None:
        """Heal every partition, or cut ``members`` off from the others."""
        self.env.heal()
        if not heal:
            inside = [n for n in sorted(self.env.nodes) if n in members]
            outside = [n for n in sorted(self.env.nodes) if n not in members]
            self.env.partition([inside, outside])

    @rule(crash=st.booleans(), pick=st.integers(0, 6))
    def node_fault(self, crash: bool, pick: int) -> None:
        """Crash a running node (losing unsynced writes) or restart a crashed one."""
        if crash:
            up = self.up_ids()
            if len(up) > 1:
                self.env.crash(up[pick % len(up)])
        else:
            down = [nid for nid in sorted(self.env.nodes) if not self.env.nodes[nid].up]
            if down:
                self.env.restart(down[pick % len(down)])
                self.process()

    @rule(n=st.integers(1, 3))
    def crash_while_replicating(self, n: int) -> None:
        """The leader takes ``n`` writes, sends its appends and crashes before its own write lands (only in the
        replica's order): the followers may hold, and commit, entries the leader lost."""
        lead = self.leader()
        if lead is None or len(self.up_ids()) < 2:
            return
        self.env.crash_mid_ready.add(lead)
        self.propose(lead, n)
        self.env.crash_mid_ready.discard(lead)  # not armed beyond this step (e.g. persist-first, or refused)

    # --- requests -----------------------------------------------------------------------------------------

    def pick(self, node: NodeId | None) -> tuple[NodeId, RawNode | None]:
        if node is None:
            node = self.leader() or ALL_IDS[0]
        n = self.env.nodes.get(node)
        return node, (n.raw if n is not None else None)

    @rule(node=TARGET, n=st.integers(1, 3))
    def propose(self, node: NodeId | None, n: int) -> None:
        node, raw = self.pick(node)
        if raw is None:
            return
        for _ in range(n):
            self.counter += 1
            data = f"w{self.counter}".encode()
            try:
                index = raw.propose(data)
            except BoroughError:
                return
            self.checker.proposed(node, index, raw.term, data)
        self.process()

    @rule(node=TARGET)
    def read(self, node: NodeId | None) -> None:
        node, raw = self.pick(node)
        if raw is None:
            return
        self.counter += 1
        if node == self.stale_leader():
            self.stale_reads += 1
        ctx = f"r{self.counter}".encode()
        self.checker.read_started(node, ctx)
        try:
            raw.read_index(ctx)
        except BoroughError:
            self.checker.on_failed_read(self.env.nodes[node], ctx)
            return
        self.process()

    @rule(node=TARGET, to=st.sampled_from(ALL_IDS))
    def transfer(self, node: NodeId | None, to: NodeId) -> None:
        node, raw = self.pick(node)
        if raw is None or raw.role is not Role.LEADER:
            return
        try:
            raw.transfer_leadership(to)
        except BoroughError:
            return
        self.process()

    @rule(node=TARGET, kind=st.sampled_from(["learner", "voter", "remove", "joint", "leave"]),
          subject=st.sampled_from(ALL_IDS), other=st.sampled_from(ALL_IDS), explicit=st.booleans())  # fmt: skip
    def conf_change(self, node: NodeId | None, kind: str, subject: NodeId, other: NodeId, explicit: bool) -> None:
        node, raw = self.pick(node)
        if raw is None or raw.role is not Role.LEADER or subject not in self.env.nodes:
            return
        cs = raw.status().conf_state
        if kind == "learner":
            cc = ConfChange.add_learner(subject)
        elif kind == "voter":
            cc = ConfChange.add_voter(subject)
        elif kind == "remove":
            if cs.voters == (subject,):
                return  # a group keeps a voter (down to one: a one-voter leader and its learners)
            cc = ConfChange.remove(subject)
        elif kind == "joint":
            if other not in self.env.nodes:
                return
            changes = [ConfChangeSingle(type=ChangeType.ADD_VOTER, node=subject)]
            if other != subject and len(cs.voters) > 2:
                changes.append(ConfChangeSingle(type=ChangeType.REMOVE_NODE, node=other))
            transition = Transition.JOINT_EXPLICIT if explicit else Transition.JOINT_IMPLICIT
            cc = ConfChange(changes=changes, transition=transition)
        else:
            cc = ConfChange.leave_joint()
        try:
            raw.propose_conf_change(cc)
        except BoroughError:
            return
        self.process()

    @rule(node=TARGET, back=st.integers(0, 3))
    def compact(self, node: NodeId | None, back: int) -> None:
        node, _ = self.pick(node)
        n = self.env.nodes.get(node)
        if n is None or n.raw is None:
            return
        index = n.applied - back
        if index > 0:
            n.raw.compact(index)
            self.process()

    @rule(node=TARGET, within=st.integers(0, 4))
    def forget_leader(self, node: NodeId | None, within: int) -> None:
        """The driver says the leader's node is gone (rightly or not): the replica campaigns within ``within``."""
        node, raw = self.pick(node)
        if raw is not None:
            raw.forget_leader(within)
            self.process()

    # --- checks -------------------------------------------------------------------------------------------

    @invariant()
    def safe(self) -> None:
        self.steps += 1
        self.checker.check()

    def teardown(self) -> None:
        if not self.env.nodes:
            return
        self.check_liveness()
        c = self.checker
        event(f"steps: {_bucket(self.steps)}")
        event(f"reads sent to a deposed leader: {_bucket(self.stale_reads)}")
        event(f"terms with a leader: {_bucket(len(c.leader_of_term))}")
        event(f"writes acknowledged: {_bucket(c.writes_acked)}")
        event(f"reads served: {_bucket(c.reads_served)}")
        event(f"snapshots installed: {_bucket(sum(n.snapshots for n in self.env.nodes.values()))}")
        event(f"crashes between a leader's appends and its write: {_bucket(self.env.mid_ready_crashes)}")

    def check_liveness(self) -> None:
        """Heal everything; a leader must emerge and commit a new proposal within a bounded time."""
        env = self.env
        env.heal()
        env.crash_mid_ready.clear()
        for nid in sorted(env.nodes):
            if not env.nodes[nid].up:
                env.restart(nid)
        self.process()
        budget = 30 * ELECTION
        data = b"liveness"
        proposed: tuple[NodeId, int, int] | None = None
        for _ in range(budget):
            self.tick_all()
            for _ in range(6):
                for e in env.take():
                    env.deliver(e)
                self.process()
            self.checker.check()
            lead = self.leader()
            if lead is None:
                continue
            raw = env.nodes[lead].raw
            assert raw is not None
            if proposed is not None and proposed[0] == lead and raw.term == proposed[2]:
                node = env.nodes[lead]
                if node.applied < proposed[1]:
                    continue
                e = node.app[proposed[1] - 1]
                if (e.index, e.term, e.data) == (proposed[1], proposed[2], data):
                    return
            try:
                index = raw.propose(data)
            except BoroughError:
                continue
            proposed = (lead, index, raw.term)
        states = "\n".join(env.state_line(n) for n in sorted(env.nodes))
        raise AssertionError(f"no proposal committed within {budget} ticks after healing:\n{states}")


TestCluster = Cluster.TestCase
TestCluster.settings = settings(
    max_examples=500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)


class SoakCluster(Cluster):
    pass


@pytest.mark.soak
def test_cluster_soak() -> None:
    # Scales with the loaded Hypothesis profile: a few dozen examples in CI, 20,000 with BOROUGH_SOAK=1.
    from hypothesis import settings as current

    SoakCluster.TestCase.settings = settings(
        current(), stateful_step_count=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    SoakCluster.TestCase().runTest()
