"""``plan_ready``: which of a Ready's messages leave before its write, which after, which are snapshot streams, and
which proposals it settles; over hand-built Readies, then over a real leader's Ready in the test harness."""

from __future__ import annotations

import attrs
import pytest

from borough.raft.config import RaftConfig
from borough.raft.core import Role
from borough.raft.memory_storage import MemoryLogStorage
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    InstallSnapshot,
    Message,
    ReadIndexResponse,
    TimeoutNow,
    VoteResponse,
)
from borough.raft.rawnode import Ready, SoftState
from borough.raft.readonly import ReadState
from borough.raft.ready_plan import ReadyPlan, plan_ready
from borough.raft.records import ConfState, Entry, HardState, NodeId, SnapshotMeta

from .env import Env

L, A, B = NodeId("1"), NodeId("2"), NodeId("3")
E5, E6 = Entry(term=2, index=5, data=b"x"), Entry(term=2, index=6, data=b"y")
META = SnapshotMeta(index=9, term=3, conf_state=ConfState(voters=[L, A, B]))


def app(to: NodeId, *entries: Entry) -> AppendRequest:
    return AppendRequest(frm=L, to=to, term=2, prev_index=4, prev_term=2, commit=4, entries=entries)


def hb(to: NodeId) -> Heartbeat:
    return Heartbeat(frm=L, to=to, term=2, commit=4, seq=1)


def snap(to: NodeId) -> InstallSnapshot:
    return InstallSnapshot(frm=L, to=to, term=2, meta=META)


VOTE_RESP = VoteResponse(frm=L, to=B, term=2, reject=True)
READ_RESP = ReadIndexResponse(frm=L, to=A, term=2, index=4, context=b"r")
TIMEOUT = TimeoutNow(frm=L, to=A, term=2)


def leader_ready(messages: list[Message], **kw: object) -> Ready:
    """A leader's Ready: new entries to write, and it may send its appends first."""
    fields: dict[str, object] = {"entries": [E5, E6], "must_sync": True, "appends_first": True, "messages": messages}
    fields.update(kw)
    return Ready(**fields)  # type: ignore[arg-type]


def test_fields_are_in_the_order_a_driver_carries_them_out() -> None:
    names = [f.name for f in attrs.fields(ReadyPlan)]
    assert names == [
        "install", "entries", "hard_state", "compaction", "must_sync", "send_before", "send_after",
        "stream_snapshots", "apply", "read_states", "failed_reads", "soft_state",
    ]  # fmt: skip


def test_leader_sends_appends_and_heartbeats_before_the_write_and_the_rest_after() -> None:
    msgs: list[Message] = [VOTE_RESP, app(A, E5, E6), hb(B), READ_RESP, app(B, E5, E6), TIMEOUT]
    rd = leader_ready(msgs, hard_state=HardState(term=2, vote=L, commit=4))
    plan = plan_ready(rd)
    assert plan.send_before == (app(A, E5, E6), hb(B), app(B, E5, E6))
    assert plan.send_after == (VOTE_RESP, READ_RESP, TIMEOUT)
    assert plan.stream_snapshots == ()
    assert plan.entries == (E5, E6)
    assert plan.hard_state == HardState(term=2, vote=L, commit=4)
    assert plan.must_sync and plan.persists
    assert plan.install is None and plan.compaction is None
    assert rd.messages == msgs  # the Ready is left as it was


def test_follower_ready_sends_everything_after_the_write() -> None:
    resp = AppendResponse(frm=A, to=L, term=2, index=6)
    rd = Ready(entries=[E5, E6], hard_state=HardState(term=2, vote=L, commit=5), must_sync=True,
               committed_entries=[E5], messages=[resp], soft_state=SoftState(leader=L, role=Role.FOLLOWER))  # fmt: skip
    plan = plan_ready(rd)
    assert plan.send_before == ()
    assert plan.send_after == (resp,)
    assert plan.apply == (E5,)
    assert plan.soft_state == SoftState(leader=L, role=Role.FOLLOWER)


@pytest.mark.parametrize("driver, ready", [(False, True), (True, False), (False, False)])
def test_without_appends_first_every_message_waits_for_the_write_in_its_order(driver: bool, ready: bool) -> None:
    # Either the driver does not honour it, or the Ready does not allow it (e.g. it carries a new term or vote).
    msgs: list[Message] = [VOTE_RESP, app(A, E5), hb(B), READ_RESP, app(B, E5)]
    plan = plan_ready(leader_ready(msgs, appends_first=ready), appends_first=driver)
    assert plan.send_before == ()
    assert plan.send_after == tuple(msgs)


def test_nothing_to_persist_means_nothing_goes_first() -> None:
    msgs: list[Message] = [hb(A), READ_RESP, hb(B)]
    plan = plan_ready(leader_ready(msgs, entries=[], must_sync=False))
    assert not plan.persists
    assert plan.send_before == ()
    assert plan.send_after == tuple(msgs)


@pytest.mark.parametrize(
    "what",
    [
        {"hard_state": HardState(term=2, vote=L, commit=6)},  # a commit-only change, written without sync
        {"compaction": META},
        {"snapshot": META},
    ],
    ids=["hard-state", "compaction", "snapshot"],
)
def test_any_write_lets_appends_go_first(what: dict[str, object]) -> None:
    plan = plan_ready(leader_ready([READ_RESP, hb(A)], entries=[], must_sync=False, **what))
    assert plan.persists
    assert plan.send_before == (hb(A),)
    assert plan.send_after == (READ_RESP,)


def test_snapshot_install_is_planned() -> None:
    rd = Ready(snapshot=META, hard_state=HardState(term=3, vote=None, commit=9), must_sync=True,
               messages=[AppendResponse(frm=A, to=L, term=3, index=9)])  # fmt: skip
    plan = plan_ready(rd)
    assert plan.install == META
    assert plan.apply == ()
    assert plan.persists
    assert plan.send_after == (AppendResponse(frm=A, to=L, term=3, index=9),)


@pytest.mark.parametrize("driver", [True, False])
def test_install_snapshot_messages_are_streams_not_sends(driver: bool) -> None:
    msgs: list[Message] = [snap(A), app(B, E5), READ_RESP, snap(B)]
    plan = plan_ready(leader_ready(msgs), appends_first=driver)
    assert plan.stream_snapshots == (snap(A), snap(B))
    sent = plan.send_before + plan.send_after
    assert not any(isinstance(m, InstallSnapshot) for m in sent)
    assert sent == (app(B, E5), READ_RESP)
    assert plan.send_before == ((app(B, E5),) if driver else ())


def test_committed_entries_are_applied_and_written_by_the_driver_not_the_plan() -> None:
    plan = plan_ready(Ready(committed_entries=[E5, E6]))
    assert plan.apply == (E5, E6)
    assert not plan.persists  # applying writes the state machine's data, not Raft's


def test_nothing_committed_applies_nothing() -> None:
    assert plan_ready(Ready(entries=[E5], must_sync=True)).apply == ()


def test_reads_and_soft_state_pass_through() -> None:
    rs = ReadState(index=4, context=b"r")
    soft = SoftState(leader=None, role=Role.CANDIDATE)
    plan = plan_ready(Ready(read_states=[rs], failed_reads=[b"f", b"g"], soft_state=soft))
    assert plan.read_states == (rs,)
    assert plan.failed_reads == (b"f", b"g")
    assert plan.soft_state == soft
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        plan.apply = ()  # type: ignore[misc]


# --- a real leader's Ready, and the harness's crash between the early sends and the write ---------------------


def three_nodes(appends_first: bool = True) -> Env:
    env = Env(appends_first=appends_first)
    for nid in ("1", "2", "3"):
        env.add_node(nid, RaftConfig(id=NodeId(nid), group="p"), MemoryLogStorage(ConfState(voters=[L, A, B])))
    env.raw("1").campaign()
    env.stabilize()
    assert env.raw("1").role is Role.LEADER
    return env


def test_a_real_leader_ready_sends_its_appends_first_and_a_new_term_does_not() -> None:
    env = three_nodes()
    raw = env.raw("1")
    raw.propose(b"w")
    rd = raw.ready()
    plan = plan_ready(rd)
    assert [(type(m), m.to) for m in plan.send_before] == [(AppendRequest, A), (AppendRequest, B)]
    assert plan.send_after == ()
    raw.advance(rd)
    follower = env.raw("2")
    follower.campaign()  # a new term and vote: nothing may leave before it is durable
    rd = follower.ready()
    assert rd.messages and plan_ready(rd).send_before == ()


@pytest.mark.parametrize("appends_first", [True, False])
def test_a_leader_crashing_between_its_appends_and_its_write_loses_what_followers_hold(appends_first: bool) -> None:
    env = three_nodes(appends_first)
    before = env.nodes[L].durable.last_index()
    env.crash_mid_ready.add(L)
    index = env.raw("1").propose(b"w")
    env.process_ready("1")
    if not appends_first:  # the persist-first order has no such moment: the write lands, then the sends
        assert env.nodes[L].up and env.nodes[L].durable.last_index() == index
        assert env.mid_ready_crashes == 0 and L in env.crash_mid_ready
        return
    assert not env.nodes[L].up and env.mid_ready_crashes == 1 and not env.crash_mid_ready
    assert env.nodes[L].storage.last_index() == before < index
    assert sorted(e.msg.to for e in env.net if isinstance(e.msg, AppendRequest)) == [A, B]
    env.stabilize(["2", "3"])
    assert env.nodes[A].storage.last_index() == env.nodes[B].storage.last_index() == index
