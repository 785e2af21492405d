"""Replica incarnations: a node removed from a group and added back holds a new incarnation of its replica, and
messages of (or meant for) the deleted one are dropped, never taken for the new one's."""

from __future__ import annotations

import trio
import trio.testing

from borough.node.incarnations import Incarnations
from borough.raft.confchange import ConfChange
from borough.raft.messages import AppendRequest, AppendResponse
from borough.raft.records import ConfState, Entry, Tombstone

from .replica_harness import PARTITION as P
from .replica_harness import make_replica, open_group, run_replica, wait_until

# --- the bookkeeping ----------------------------------------------------------------------------------------------


def test_a_replica_is_the_incarnation_its_configuration_lists_or_a_later_one_a_sender_names() -> None:
    conf = ConfState(voters=["a", "b"], learners=["c"], incarnations={"c": 3}, next_incarnation=4)
    c = Incarnations("c", lambda: conf, None)
    assert c.own() == 3
    assert not c.admit("a", 2, 0)  # meant for an earlier incarnation of c
    assert c.admit("a", 3, 0)
    assert c.admit("a", 5, 0)  # c was removed and added back without hearing of it: it is 5 now
    assert c.own() == 5 and not c.admit("a", 3, 0)
    assert c.dropped == 2
    assert c.stamp("a") == (0, 5)


def test_a_message_from_an_earlier_incarnation_of_a_peer_is_dropped_and_a_later_one_is_answered_as_such() -> None:
    conf = ConfState(voters=["a", "b"], learners=["c"], incarnations={"c": 3}, next_incarnation=4)
    a = Incarnations("a", lambda: conf, None)
    assert not a.admit("c", 0, 2)  # from c's deleted incarnation 2
    assert a.admit("c", 0, 3) and a.stamp("c") == (3, 0)
    # A peer at a later incarnation than our (stale) configuration lists is answered at that incarnation.
    assert a.admit("b", 0, 7) and a.stamp("b") == (7, 0)
    assert a.admit("z", 0, 2) and a.stamp("z") == (2, 0)  # not a member here at all


def test_a_non_member_is_not_believed_about_incarnations() -> None:
    """``_system`` takes Raft traffic from node ids the member table does not list; anyone who reaches the port
    can be one. Had its "you are incarnation 2**63-1" been believed, the replica would have dropped every message
    of its real peers for good (the live-port fuzzer left `_system` learners unpromoted and voters deaf so)."""
    conf = ConfState(voters=["a", "b"], learners=["c"], incarnations={"c": 3}, next_incarnation=4)
    c = Incarnations("c", lambda: conf, None)
    assert c.admit("mallory", (1 << 63) - 1, 2, member=False)  # admitted (Raft judges it), but not believed
    assert c.own() == 3 and c.admit("a", 3, 0)
    assert not c.admit("mallory", 2, 0, member=False)  # meant for an earlier incarnation: dropped as any other
    assert c.stamp("mallory") == (2, 3)  # it is answered at the incarnation it claims for itself
    # A member's word about itself survives a flood of made-up ids.
    assert c.admit("b", 3, 7) and c.stamp("b") == (7, 3)
    for i in range(100):
        c.admit(f"mallory-{i}", 3, 5, member=False)
    assert c.stamp("b") == (7, 3) and c.own() == 3
    assert c.admit("a", 5, 0) and c.own() == 5  # a member that adds c back is believed


def test_a_replica_created_where_one_was_deleted_is_a_later_incarnation_than_that_one() -> None:
    conf = ConfState(voters=["a"])
    d = Incarnations("d", lambda: conf, Tombstone(term=3, incarnation=4))
    assert d.own() == 5
    assert not d.admit("a", 4, 0)
    assert d.admit("a", 6, 0) and d.own() == 6


# --- a node removed from a group and added back -------------------------------------------------------------------


async def test_a_delayed_answer_of_a_deleted_replica_does_not_stall_the_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_group(["a", "d"], voters=["a"]) as g:
        leader = await g.wait_leader()
        await leader.propose_conf_change(ConfChange.add_learner("d"))
        old_d = g.replicas["d"]
        for i in range(20):
            await leader.propose(f"k{i}".encode())
        await wait_until(lambda: old_d.applied == leader.applied)
        old_inc = leader.status().conf_state.incarnation("d")
        assert old_inc == 1 and old_d.incarnations.own() == 1
        # An answer of d's that the wire will deliver late: "I hold everything up to here".
        late = AppendResponse(frm="d", to="a", term=leader.term, index=old_d.applied)

        # d is removed (the leader stops replicating to it, so the node's sweep stops it) and, as the node's
        # registry does, its data is deleted and a tombstone left.
        await leader.propose_conf_change(ConfChange.remove("d"))
        await wait_until(lambda: "d" not in leader.status().conf_state.members())
        old_d.remove()
        g.scopes["d"].cancel()
        g.ticking.discard("d")
        host = g.hosts["d"]
        tombstone = old_d.tombstone()
        assert tombstone.incarnation == 1
        batch = host.store.write_batch()
        batch.destroy(P, tombstone)
        await host.committer.commit(batch)
        assert host.store.tombstone(P) == tombstone

        # A stale append of the old incarnation reaches the new, empty replica: dropped.
        new_d = make_replica(host, seed=9)
        assert new_d.incarnations.own() == 2
        stale = AppendRequest(frm="a", to="d", term=leader.term, prev_index=0, prev_term=0, commit=3,
                              entries=[Entry(term=1, index=1, data=b"old")])  # fmt: skip
        new_d.deliver(stale, 1, 0)
        assert new_d.incarnations.dropped == 1

        # d is added back: a new incarnation. The late answer of the old one arrives first.
        for i in range(5):
            await leader.propose(f"later{i}".encode())
        await leader.propose_conf_change(ConfChange.add_learner("d"))
        assert leader.status().conf_state.incarnation("d") == 2
        leader.deliver(late, 0, old_inc)
        await trio.testing.wait_all_tasks_blocked()
        assert leader.status().progress["d"].match < late.index  # not taken for the new replica's

        g.replicas["d"] = new_d
        g.net.replicas["d"] = new_d
        g.scopes["d"] = await g.nursery.start(run_replica, new_d)
        g.ticking.add("d")
        await wait_until(lambda: new_d.applied == leader.applied, within=30)
        assert dict(host.store.iterate(P)) == dict(g.hosts["a"].store.iterate(P))
        assert new_d.incarnations.own() == 2

        # What the check prevents: d stops; entries it never receives pile up at the leader. An answer claiming
        # them is dropped when stamped by the old incarnation, and believed when stamped by the current one.
        g.scopes["d"].cancel()
        for i in range(5):
            await leader.propose(f"unseen{i}".encode())
        match = leader.status().progress["d"].match
        claim = AppendResponse(frm="d", to="a", term=leader.term, index=leader.status().last_index)
        leader.deliver(claim, 0, 1)
        await trio.sleep(1.0)  # (ten ticks: an answer that may wait for the leader's next turn has had it)
        assert leader.status().progress["d"].match == match
        leader.deliver(claim, 0, 2)
        await wait_until(lambda: leader.status().progress["d"].match == claim.index > match)


async def test_a_learner_catching_up_through_the_log_does_not_take_old_removals_for_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The log holds another node's addition and removal before d's own addition. d replays it two entries at a
    # time: after the batch that applies c's removal, the newest configuration d has seen lists neither c nor d.
    # That is not d's removal (d's own addition is further on), and d must not delete itself (it did: found by
    # the topology fuzzer, seeds 10995 and 11567).
    async with open_group(["a", "c", "d"], voters=["a"], max_msg_entries=2, learner_snapshot_bytes=0) as g:
        leader = await g.wait_leader()
        g.ticking.discard("d")
        await leader.propose_conf_change(ConfChange.add_learner("c"))
        for i in range(6):
            await leader.propose(f"k{i}".encode())
        await leader.propose_conf_change(ConfChange.remove("c"))
        for i in range(6):
            await leader.propose(f"j{i}".encode())
        d = g.replicas["d"]
        g.ticking.add("d")
        await leader.propose_conf_change(ConfChange.add_learner("d"))
        await wait_until(lambda: d.applied == leader.applied or d.removed, within=30)
        assert not d.removed
        assert dict(g.hosts["d"].store.iterate(P)) == dict(g.hosts["a"].store.iterate(P))
