"""``Replica``: the trio driver of one Raft group, over a recording host, the real group committer and a
``MemoryStore``; groups of several replicas talk through an in-memory network (see ``replica_harness``).

Covers proposals (applied, batched, refused, lost, abandoned, bounded), linearizable reads, the commands the
driver carries out, the order a Ready is carried out in (appends before the write, votes after), stopping,
removal, leader reports, the inbox bound and log compaction.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import borough.node.inbox as inbox_module
import borough.node.replica as replica_module
from borough.errors import BoroughError, LocalProtocolError, NotFound, NotLeader, Overloaded, StorageError, Unavailable
from borough.raft.confchange import ConfChange
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    VoteRequest,
    VoteResponse,
)
from borough.raft.rawnode import RawNode
from borough.raft.role import Role

from .replica_harness import (
    PARTITION,
    KeyMachine,
    Sent,
    Written,
    bootstrap,
    elect_by_hand,
    make_replica,
    open_group,
    open_host,
    open_replica,
    run_replica,
    settle,
    single_leader,
    wait_until,
)

P = PARTITION


async def collect(fn: Any, out: list[Any]) -> None:
    """Run ``fn()`` and append its result or its BoroughError to ``out``."""
    try:
        out.append(await fn())
    except BoroughError as exc:
        out.append(exc)


def applied_data(replica: Any) -> list[bytes]:
    machine = replica.machine
    assert isinstance(machine, KeyMachine)
    return [e.data for e in machine.applied]


# --- proposals --------------------------------------------------------------------------------------------------


async def test_a_single_voter_elects_itself_and_tells_the_host(autojump_clock: trio.testing.MockClock) -> None:
    async with single_leader() as r:
        assert r.replica.is_leader and r.replica.leader == "a"
        assert (P, "a", r.replica.term) in r.host.leaders
        assert r.replica.term >= 1


async def test_propose_returns_the_state_machines_result_once_applied(autojump_clock: trio.testing.MockClock) -> None:
    async with single_leader() as r:
        replica, store = r.replica, r.host.store
        result = await replica.propose(b"k")
        key, index = result
        assert key == "k" and index == replica.status().last_index
        # Returned only after the apply was written: the value is in the store and the applied index moved.
        assert replica.applied >= index
        assert store.applied_index(P) >= index
        assert store.get(P, "k") == index


async def test_proposals_queued_in_one_round_share_one_ready(autojump_clock: trio.testing.MockClock) -> None:
    async with single_leader() as r, trio.open_nursery() as nursery:
        replica, committer = r.replica, r.committer
        committer.hold()
        results: list[Any] = []
        nursery.start_soon(collect, lambda: replica.propose(b"first"), results)
        await wait_until(lambda: committer.waiting == 1)  # the driver is writing "first"'s Ready
        readies, persisted = replica.stats.readies, replica.stats.entries_persisted
        for i in range(10):
            nursery.start_soon(collect, lambda i=i: replica.propose(f"k{i}".encode()), results)
        await settle()
        committer.release()
        await wait_until(lambda: len(results) == 11)
    assert all(isinstance(x, tuple) for x in results), results
    assert replica.stats.entries_persisted - persisted == 10
    # One Ready carried all ten (one round); one at a time would have taken ten.
    assert replica.stats.readies - readies <= 2
    assert sorted(key for key, _ in results) == sorted(["first"] + [f"k{i}" for i in range(10)])


async def test_propose_on_a_follower_raises_not_leader_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with open_group(["a", "b", "c"]) as g:
        leader = await g.wait_leader()
        follower = next(r for r in g.replicas.values() if r is not leader)
        await wait_until(lambda: follower.leader == leader.host.node_id)
        before = {n: r.status().last_index for n, r in g.replicas.items()}
        start = trio.current_time()
        with pytest.raises(NotLeader) as info:
            await follower.propose(b"x")
        assert trio.current_time() == start
        assert info.value.leader == leader.host.node_id and info.value.provably_not_run
        await trio.sleep(1)  # ten ticks: heartbeats only
        assert {n: r.status().last_index for n, r in g.replicas.items()} == before
        assert all(b"x" not in applied_data(r) for r in g.replicas.values())


async def test_a_proposal_lost_to_a_leader_change_fails_with_not_leader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_group(["a", "b", "c"]) as g, trio.open_nursery() as nursery:
        old = await g.wait_leader()
        old_id = old.host.node_id
        others = [n for n in g.replicas if n != old_id]
        g.net.cut.add(old_id)
        outcome: list[Any] = []
        nursery.start_soon(collect, lambda: old.propose(b"lost"), outcome)
        await settle()
        index, term = old.status().last_index, old.term
        assert old.host.store.term(P, index) == term  # appended (and written) on the old leader only
        new = await g.wait_leader(among=others)
        await new.propose(b"other")  # the new leader's log has its own entries at ``index``
        assert new.host.store.term(P, index) > term
        g.net.cut.clear()
        await wait_until(lambda: bool(outcome))
        assert isinstance(outcome[0], NotLeader), outcome
        assert outcome[0].provably_not_run
        await wait_until(lambda: old.applied >= new.applied)
    assert all(b"lost" not in applied_data(r) for r in g.replicas.values())
    assert old.host.store.term(P, index) > term


async def test_a_proposal_committed_by_the_next_leader_is_not_reported_lost_after_a_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The old leader's entry reaches the followers, the acknowledgements do not; the next leader commits it and
    compacts past it; the old leader then catches up by a snapshot that *contains* the entry. Failing the
    proposal with NotLeader (provably not run) would make routing apply it a second time."""
    async with open_group(["a", "b", "c"], snapshot_every=4) as g, trio.open_nursery() as nursery:
        old = await g.wait_leader()
        old_id = old.host.node_id
        others = [n for n in g.replicas if n != old_id]
        g.net.drop = lambda m: m.to == old_id  # the old leader's appends leave, no answer comes back
        outcome: list[Any] = []
        nursery.start_soon(collect, lambda: old.propose(b"x"), outcome)
        await settle()
        index = old.status().last_index
        await wait_until(lambda: all(g.replicas[n].status().last_index >= index for n in others))
        g.net.drop = None
        g.net.cut.add(old_id)
        new = await g.wait_leader(among=others)
        for i in range(8):
            await new.propose(f"k{i}".encode())
        assert new.host.store.get(P, "x") == index  # the next leader committed and applied "x"
        assert new.host.store.first_index(P) > index + 1  # and compacted past it
        g.net.cut.clear()
        await wait_until(lambda: bool(outcome) and old.applied >= new.applied)
        assert g.net.snapshots_sent >= 1
        assert old.host.store.get(P, "x") == index  # the old leader holds the command's effect, via the snapshot
        if isinstance(outcome[0], BoroughError):
            assert not outcome[0].provably_not_run, f"an applied command was reported as not run: {outcome[0]!r}"
        else:
            assert outcome[0] in (("x", index), None)


# --- reads ------------------------------------------------------------------------------------------------------


async def test_read_barrier_waits_until_the_applied_index_reaches_the_read_index(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Lease reads are served at once, at the commit index; one committed entry per Ready makes the apply lag.
    async with open_replica(["a", "b", "c"], read_only="lease", max_committed_bytes_per_ready=1) as r:
        replica, committer = r.replica, r.committer
        await elect_by_hand(replica)
        replica.tick()  # a heartbeat round (seq 1), acknowledged by b: the lease holds
        await settle()
        assert replica.host.sent(Heartbeat)[-1].seq == 1
        replica.deliver(HeartbeatResponse(frm="b", to="a", term=1, seq=1))
        await settle()
        committer.hold()
        writes: list[Any] = []
        reads: list[tuple[int, list[str]]] = []

        async def read() -> None:
            await replica.read_barrier()
            reads.append((replica.applied, [k for k, _ in replica.host.store.iterate(P)]))

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(collect, lambda i=i: replica.propose(f"k{i}".encode()), writes)
            await settle()
            assert committer.waiting == 1  # the Ready that appends indexes 2..6
            replica.deliver(AppendResponse(frm="b", to="a", term=1, index=6))  # commits 2..6 next round
            nursery.start_soon(read)
            await settle()
            for _ in range(20):
                if reads:
                    break
                await committer.step()
            committer.release()
        assert reads == [(6, ["k0", "k1", "k2", "k3", "k4"])]
        assert len(writes) == 5


async def test_reads_queued_in_one_round_share_one_read_index(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts: list[bytes] = []
    real = RawNode.read_index

    def counting(self: RawNode, context: bytes) -> None:
        contexts.append(context)
        real(self, context)

    monkeypatch.setattr(RawNode, "read_index", counting)
    async with single_leader() as r, trio.open_nursery() as nursery:
        replica, committer = r.replica, r.committer
        committer.hold()
        done: list[Any] = []
        nursery.start_soon(collect, lambda: replica.propose(b"w"), done)
        await wait_until(lambda: committer.waiting == 1)
        for _ in range(5):
            nursery.start_soon(collect, replica.read_barrier, done)
        await settle()
        assert contexts == []
        committer.release()
        await wait_until(lambda: len(done) == 6)
    assert done.count(None) == 5
    assert len(contexts) == 1


async def test_read_barrier_fails_with_not_leader_when_leadership_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_group(["a", "b", "c"]) as g:
        leader = await g.wait_leader()
        g.net.cut.add(leader.host.node_id)
        start = trio.current_time()
        with pytest.raises(NotLeader), trio.fail_after(10):
            await leader.read_barrier()
        # It waited for the heartbeat round (which never came back) until the leader gave up.
        assert trio.current_time() - start >= 0.5


# --- the queue bound and abandoned callers ------------------------------------------------------------------------


async def test_a_full_queue_raises_overloaded_and_proposes_nothing(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "QUEUE_LIMIT", 3)
    async with single_leader() as r, trio.open_nursery() as nursery:
        replica, committer = r.replica, r.committer
        committer.hold()
        results: list[Any] = []
        nursery.start_soon(collect, lambda: replica.propose(b"first"), results)
        await wait_until(lambda: committer.waiting == 1)
        for key in (b"q1", b"q2", b"q3"):
            nursery.start_soon(collect, lambda key=key: replica.propose(key), results)
        await settle()
        with pytest.raises(Overloaded) as info:
            await replica.propose(b"over")
        assert info.value.provably_not_run
        with pytest.raises(Overloaded):
            await replica.read_barrier()
        committer.release()
        await wait_until(lambda: len(results) == 4)
    assert sorted(key for key, _ in results) == ["first", "q1", "q2", "q3"]
    assert b"over" not in applied_data(replica)


async def test_a_proposal_abandoned_before_the_driver_took_it_is_never_proposed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with single_leader() as r, trio.open_nursery() as nursery:
        replica, committer = r.replica, r.committer
        committer.hold()
        results: list[Any] = []
        nursery.start_soon(collect, lambda: replica.propose(b"first"), results)
        await wait_until(lambda: committer.waiting == 1)
        with trio.CancelScope() as scope:
            scope.cancel()  # the caller gives up while its proposal waits in the queue
            await replica.propose(b"gone")
        assert scope.cancelled_caught
        committer.release()
        await wait_until(lambda: len(results) == 1)
        first_index = results[0][1]
        key, index = await replica.propose(b"after")
    assert index == first_index + 1  # nothing was appended between the two
    assert b"gone" not in applied_data(replica)


# --- commands -----------------------------------------------------------------------------------------------------


async def test_transfer_leadership_to_a_caught_up_voter(autojump_clock: trio.testing.MockClock) -> None:
    async with open_group(["a", "b", "c"]) as g:
        leader = await g.wait_leader()
        target = next(n for n in sorted(g.replicas) if n != leader.host.node_id)
        await leader.propose(b"x")
        await wait_until(lambda: g.replicas[target].applied == leader.applied)
        old_term = leader.term
        await leader.transfer_leadership(target)
        await wait_until(lambda: g.replicas[target].is_leader, within=5)  # at once, not after an election timeout
        new_term = g.replicas[target].term
        assert new_term == old_term + 1  # no pre-vote round, no competing candidate
        await wait_until(lambda: leader.leader == target)
        assert not leader.is_leader
        assert (P, target, new_term) in leader.host.leaders


async def test_transfer_leadership_to_a_non_voter_raises(autojump_clock: trio.testing.MockClock) -> None:
    async with single_leader() as r:
        with pytest.raises(LocalProtocolError, match="not a voter"):
            await r.replica.transfer_leadership("zz")
        assert r.replica.is_leader


async def test_campaign_and_report_snapshot_are_carried_out_in_a_round(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: list[tuple[str, bool, str]] = []

    def report(self: RawNode, node: str, ok: bool) -> None:
        reports.append((node, ok, trio.lowlevel.current_task().name))

    monkeypatch.setattr(RawNode, "report_snapshot", report)
    async with open_host("a") as host, trio.open_nursery() as nursery:
        await bootstrap(host, ["a"])
        replica = make_replica(host)
        replica.campaign()
        replica.report_snapshot("b", False)
        assert replica.status().role is Role.FOLLOWER and reports == []  # queued, not run by the caller
        nursery.start_soon(replica.run, name="replica")
        await wait_until(lambda: replica.is_leader)
        assert reports == [("b", False, "rounds")]  # by the node's round task, not the caller nor the replica's
        nursery.cancel_scope.cancel()


# --- the order of a Ready ------------------------------------------------------------------------------------------


async def test_a_leader_sends_its_appends_before_its_write(autojump_clock: trio.testing.MockClock) -> None:
    async with open_replica(["a", "b", "c"]) as r, trio.open_nursery() as nursery:
        replica, events = r.replica, r.host.events
        await elect_by_hand(replica)
        nursery.start_soon(replica.propose, b"x")
        await settle()
        index = replica.status().last_index
        sent_at = next(
            i for i, e in enumerate(events)
            if isinstance(e, Sent) and any(isinstance(m, AppendRequest) and m.entries and m.entries[-1].index == index
                                           for m in e.messages)
        )  # fmt: skip
        written_at = next(i for i, e in enumerate(events) if isinstance(e, Written) and e.last_index >= index)
        assert sent_at < written_at
        # (c never answered, so only b, which is in replicate state, gets the entry at once)
        assert [m.to for m in events[sent_at].messages if isinstance(m, AppendRequest)] == ["b"]  # type: ignore[union-attr]
        assert events[written_at].sync  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()


def _stored(store: Any, key: str) -> Any:
    """``key``'s value in the store, or None."""
    try:
        return store.get(P, key)
    except NotFound:
        return None


class _Steps(trio.abc.Instrument):
    """Counts the steps tasks take: two moments with the same count lie in one step of one task."""

    def __init__(self) -> None:
        self.n = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.n += 1


async def test_a_write_applied_without_a_sync_is_answered_in_the_step_that_writes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A leader's turn that only applies (its entry committed by a follower's answer: a commit index and applied
    state need no sync) answers its caller as it is prepared, before its batch is written, and the batch is
    written in the same step of the event loop: no task can see the store without the write after the answer."""
    async with open_group(["a", "b", "c"]) as g:
        leader = await g.wait_leader()
        store = leader.host.store
        steps = _Steps()
        trio.lowlevel.add_instrument(steps)
        written_at: list[int] = []
        write = store.write

        def recording_write(batch: Any, *, sync: bool = True) -> None:
            write(batch, sync=sync)
            if not written_at and _stored(store, "x") is not None:
                written_at.append(steps.n)

        store.write = recording_write  # type: ignore[method-assign]
        answers: list[tuple[Any, Any, int]] = []
        waiter = leader.propose_nowait(b"x")
        waiter.then(lambda w: answers.append((w.result, _stored(store, "x"), steps.n)))
        await wait_until(lambda: bool(answers) and bool(written_at))
        trio.lowlevel.remove_instrument(steps)
        (key, index), value_then, answered_at = answers[0]
        assert key == "x" and value_then is None  # answered before the batch that applies it was written ...
        assert written_at == [answered_at]  # ... which was written in that same step
        assert store.get(P, "x") == index


async def test_a_write_applied_while_the_store_is_busy_is_answered_once_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While another write holds the store, an unsynced batch waits for it: the turn's callers are answered only
    once their batch is written, as for any other turn."""
    async with open_group(["a", "b", "c"]) as g:
        leader = await g.wait_leader()
        store, committer = leader.host.store, leader.host.committer
        committer.hold()
        answers: list[Any] = []
        waiter = leader.propose_nowait(b"x")
        waiter.then(lambda w: answers.append(_stored(store, "x")))
        while not answers:
            await committer.step()
        committer.release()
        assert answers[0] is not None and answers[0] == store.get(P, "x")


async def test_a_vote_leaves_only_once_it_is_durable(autojump_clock: trio.testing.MockClock) -> None:
    async with open_replica(["a", "b", "c"]) as r:
        replica, events = r.replica, r.host.events
        replica.deliver(VoteRequest(frm="b", to="a", term=5, last_index=0, last_term=0))
        await settle()
        sent_at = next(
            i for i, e in enumerate(events)
            if isinstance(e, Sent) and any(isinstance(m, VoteResponse) for m in e.messages)
        )  # fmt: skip
        vote = events[sent_at].messages[0]  # type: ignore[union-attr]
        assert vote == VoteResponse(frm="a", to="b", term=5)
        written_at = next(
            i for i, e in enumerate(events)
            if isinstance(e, Written) and e.hard_state.term == 5 and e.hard_state.vote == "b"
        )  # fmt: skip
        assert written_at < sent_at
        assert events[written_at].sync  # type: ignore[union-attr]


@pytest.mark.parametrize("fsync", [True, False])
async def test_the_write_is_synced_unless_fsync_is_off(autojump_clock: trio.testing.MockClock, fsync: bool) -> None:
    async with single_leader(fsync=fsync) as r:
        committer = r.committer
        n = len(committer.syncs)
        await r.replica.propose(b"x")
        assert committer.syncs[n:] == [fsync]


# --- stopping and removal -------------------------------------------------------------------------------------------


async def test_stopping_the_driver_fails_every_waiter_and_aborts_a_staged_install(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with single_leader() as r, trio.open_nursery() as nursery:
        replica, committer = r.replica, r.committer
        committer.hold()
        outcomes: list[Any] = []
        nursery.start_soon(collect, lambda: replica.propose(b"proposed"), outcomes)
        await wait_until(lambda: committer.waiting == 1)
        nursery.start_soon(collect, lambda: replica.propose(b"queued"), outcomes)
        nursery.start_soon(collect, replica.read_barrier, outcomes)
        nursery.start_soon(collect, lambda: replica.transfer_leadership("a"), outcomes)
        await settle()
        install = replica.begin_install()
        r.scope.cancel()
        await wait_until(lambda: len(outcomes) == 4)
        committer.release()
        assert all(isinstance(x, Unavailable) for x in outcomes), outcomes
        with pytest.raises(StorageError, match="aborted"):
            install.add_chunk(b"")
        with pytest.raises(NotLeader):
            await replica.propose(b"later")


async def test_remove_stops_the_driver(autojump_clock: trio.testing.MockClock) -> None:
    async with open_host("a") as host, trio.open_nursery() as nursery:
        await bootstrap(host, ["a"])
        replica = make_replica(host)
        returned = trio.Event()

        async def drive() -> None:
            await replica.run()
            returned.set()

        nursery.start_soon(drive)
        replica.campaign()
        await wait_until(lambda: replica.is_leader and replica.applied >= 1)
        host.committer.hold()
        written: list[Any] = []
        queued: list[Any] = []
        nursery.start_soon(collect, lambda: replica.propose(b"written"), written)
        await wait_until(lambda: host.committer.waiting == 1)
        nursery.start_soon(collect, lambda: replica.propose(b"queued"), queued)
        await settle()
        replica.remove()
        host.committer.release()
        with trio.fail_after(5):
            await returned.wait()
        await settle()
        assert replica.removed
        assert written == [("written", 2)]  # its Ready was under way: it finished
        assert len(queued) == 1 and isinstance(queued[0], NotLeader)  # never fed to the core
        assert b"queued" not in applied_data(replica)
        with pytest.raises(NotLeader):
            replica.check_leader()


async def test_a_committed_configuration_without_this_node_removes_it(autojump_clock: trio.testing.MockClock) -> None:
    async with open_group(["a", "b", "c"]) as g:
        leader = await g.wait_leader()
        me = leader.host.node_id
        assert not leader.removed
        await leader.propose_conf_change(ConfChange.remove(me))
        await wait_until(lambda: leader.removed)
        with pytest.raises(NotLeader):
            await leader.propose(b"x")
        others = [n for n in g.replicas if n != me]
        g.ticking.discard(me)
        new = await g.wait_leader(among=others)
        assert me not in new.status().conf_state.members()
        assert not any(g.replicas[n].removed for n in others)


async def test_every_member_tells_its_host_who_leads(autojump_clock: trio.testing.MockClock) -> None:
    async with open_group(["a", "b", "c"]) as g:
        leader = await g.wait_leader()
        lid, term = leader.host.node_id, leader.term
        await wait_until(lambda: all(r.leader == lid for r in g.replicas.values()))
        for host in g.hosts.values():
            assert host.leaders[-1] == (P, lid, term)


# --- the inbox bound and compaction ----------------------------------------------------------------------------------


async def test_the_inbox_drops_and_counts_messages_beyond_its_limit(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "INBOX_LIMIT", 2)
    async with open_host("a") as host, trio.open_nursery() as nursery:
        await bootstrap(host, ["a", "b", "c"])
        replica = make_replica(host)
        for seq in (1, 2, 3):
            replica.deliver(Heartbeat(frm="b", to="a", term=1, commit=0, seq=seq))
        assert replica.dropped_messages == 1
        await nursery.start(run_replica, replica)
        await settle()
        assert [m.seq for m in host.sent(HeartbeatResponse)] == [1, 2]  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()


async def test_the_log_is_compacted_keeping_half_a_window(autojump_clock: trio.testing.MockClock) -> None:
    async with single_leader(snapshot_every=10) as r:
        replica, store = r.replica, r.host.store
        for i in range(30):
            await replica.propose(f"k{i}".encode())
        await settle()
        snap = store.snapshot_meta(P).index
        assert snap > 0
        assert store.first_index(P) == snap + 1
        assert 10 // 2 <= replica.applied - snap < 10
        assert store.applied_index(P) == replica.applied == 31
