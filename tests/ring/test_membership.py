"""The SWIM core alone, step by step: probes, indirect probes, suspicion, refutation, dissemination.

Each test drives one ``Swim`` by hand with explicit ``now`` values and inspects what it returns, in the style
of etcd-io/raft's scenario tests: no trio, no network, no clock.
"""

from __future__ import annotations

import random

import pytest

from borough.errors import ConfigError
from borough.raft.records import NodeId
from borough.ring.members import Member, MemberTable
from borough.ring.membership import MemberEvent, Outgoing, Swim, SwimConfig, TableVersionEvent
from borough.ring.messages import Ack, Gossip, Liveness, Nack, Ping, PingReq, SwimMessage, Sync, Update
from borough.ring.suspicion import Suspicion, expected_confirmations, suspicion_timeouts

ME = NodeId("a")
OTHERS = [NodeId(x) for x in "bcde"]


def addr(n: str) -> str:
    return f"{n}:7000"


TABLE = MemberTable(version=3, members=[Member(node_id=NodeId(n), address=addr(n)) for n in [ME, *OTHERS]])


def make(seed: int = 1, **config: float) -> Swim:
    return Swim(ME, addr(ME), rng=random.Random(seed), config=SwimConfig(**config), table=TABLE)  # type: ignore[arg-type]


def run_until_probe(swim: Swim, start: float = 0.0) -> tuple[float, Ping, str]:
    """Tick from ``start`` until the core sends its first Ping; return (now, ping, address)."""
    now = start
    swim.tick(now)
    while True:
        now = swim.next_deadline()
        for o in swim.tick(now):
            if isinstance(o.message, Ping):
                return now, o.message, o.address


def ack_from(node: str, seq: int, *, incarnation: int = 0, updates: tuple[Update, ...] = ()) -> Ack:
    return Ack(seq=seq, source=NodeId(node), source_incarnation=incarnation, table_version=3, updates=updates)


def gossip_from(node: str, *updates: Update, incarnation: int = 0, table_version: int = 3) -> Gossip:
    return Gossip(source=NodeId(node), source_incarnation=incarnation, table_version=table_version, updates=updates)


def upd(node: str, inc: int, liveness: Liveness, accuser: str | None = None) -> Update:
    return Update(
        node_id=NodeId(node), incarnation=inc, liveness=liveness, accuser=None if accuser is None else NodeId(accuser)
    )


def of_type(out: list[Outgoing], kind: type[SwimMessage]) -> list[Outgoing]:
    return [o for o in out if isinstance(o.message, kind)]


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="probe_timeout"):
        SwimConfig(probe_interval=0.5, probe_timeout=0.5)
    with pytest.raises(ConfigError, match="positive"):
        SwimConfig(indirect_checks=0)
    with pytest.raises(ConfigError, match="max_piggyback"):
        SwimConfig(max_piggyback=65)
    with pytest.raises(ConfigError, match="suspicion_max_mult"):
        SwimConfig(suspicion_max_mult=0.5)


def test_before_the_first_tick_the_core_wants_a_tick_now() -> None:
    swim = make()
    assert swim.next_deadline() == float("-inf")
    assert swim.tick(100.0) == []  # the first probe is staggered into the first interval
    assert 100.0 <= swim.next_deadline() <= 100.5


def test_direct_probe_acked_leaves_everyone_alive() -> None:
    swim = make()
    now, ping, address = run_until_probe(swim)
    assert ping.target in OTHERS and address == addr(ping.target) and ping.source == ME
    assert swim.receive(now + 0.01, address, ack_from(ping.target, ping.seq)) == []
    # Through the whole probe interval nothing else happens for this probe: no ping-req, no suspicion.
    out = swim.tick(now + 0.49)
    assert of_type(out, PingReq) == [] and swim.drain_events() == []


def test_round_robin_probes_every_member_once_per_round() -> None:
    swim = make(seed=7)
    now = 0.0
    swim.tick(now)
    targets = []
    while len(targets) < 8:
        now = swim.next_deadline()
        for o in swim.tick(now):
            if isinstance(o.message, Ping):
                targets.append(o.message.target)
                swim.receive(now, o.address, ack_from(o.message.target, o.message.seq))
    assert sorted(targets[:4]) == sorted(OTHERS) and sorted(targets[4:]) == sorted(OTHERS)


def test_unanswered_ping_goes_indirect_then_suspects() -> None:
    swim = make()
    now, ping, _ = run_until_probe(swim)
    out = swim.tick(now + 0.2)  # the direct probe timed out
    reqs = of_type(out, PingReq)
    assert len(reqs) == 3  # k = 3 of the 3 other members
    for o in reqs:
        assert isinstance(o.message, PingReq)
        assert o.message.target == ping.target and o.message.target_address == addr(ping.target)
        assert o.message.seq == ping.seq and o.address != addr(ping.target)
    assert swim.drain_events() == []
    swim.tick(now + 0.5)  # the probe interval ended without any ack
    assert swim.drain_events() == [MemberEvent(node_id=ping.target, liveness=Liveness.SUSPECT, incarnation=0)]
    assert swim.liveness(ping.target) is Liveness.SUSPECT
    assert swim.health_score == 3  # none of the three helpers sent a nack: maybe we are the problem


def test_an_indirect_ack_saves_the_target_and_nacks_spare_our_health() -> None:
    swim = make()
    now, ping, _ = run_until_probe(swim)
    reqs = of_type(swim.tick(now + 0.2), PingReq)
    # Two helpers say they could not reach it, the third forwards an ack: the target is fine.
    swim.receive(
        now + 0.3, reqs[0].address, Nack(seq=ping.seq, source=NodeId("x"), source_incarnation=0, table_version=3)
    )
    swim.receive(now + 0.3, reqs[1].address, ack_from("c", ping.seq))
    swim.tick(now + 0.5)
    assert swim.liveness(ping.target) is Liveness.ALIVE and swim.drain_events() == []
    assert swim.health_score == 0


def test_failed_probe_with_all_nacks_does_not_raise_our_health_score() -> None:
    swim = make()
    now, ping, _ = run_until_probe(swim)
    reqs = of_type(swim.tick(now + 0.2), PingReq)
    for o in reqs:
        swim.receive(
            now + 0.3, o.address, Nack(seq=ping.seq, source=NodeId("x"), source_incarnation=0, table_version=3)
        )
    swim.tick(now + 0.5)
    assert swim.liveness(ping.target) is Liveness.SUSPECT
    assert swim.health_score == 0


def test_relaying_a_ping_req_forwards_the_ack_with_the_requesters_seq() -> None:
    swim = make()
    swim.tick(0.0)
    req = PingReq(
        seq=41, source=NodeId("b"), source_incarnation=0, table_version=3, target=NodeId("c"), target_address="c:7000"
    )
    out = swim.receive(0.1, "b:7000", req)
    assert len(out) == 1 and out[0].address == "c:7000"
    relayed = out[0].message
    assert isinstance(relayed, Ping) and relayed.target == "c"
    back = swim.receive(0.12, "c:7000", ack_from("c", relayed.seq))
    assert len(back) == 1 and back[0].address == "b:7000"
    assert isinstance(back[0].message, Ack) and back[0].message.seq == 41


def test_relay_that_times_out_sends_a_nack() -> None:
    swim = make()
    swim.tick(0.0)
    req = PingReq(
        seq=9, source=NodeId("b"), source_incarnation=0, table_version=3, target=NodeId("c"), target_address="c:7000"
    )
    swim.receive(0.1, "b:7000", req)
    nacks = of_type(swim.tick(0.1 + 0.2), Nack)
    assert len(nacks) == 1 and nacks[0].address == "b:7000" and nacks[0].message.seq == 9
    assert of_type(swim.tick(1.0), Nack) == []  # only once


def test_ping_for_someone_else_is_not_acked() -> None:
    swim = make()
    swim.tick(0.0)
    wrong = Ping(seq=1, source=NodeId("b"), source_incarnation=0, table_version=3, target=NodeId("zz"))
    assert swim.receive(0.1, "b:7000", wrong) == []
    right = Ping(seq=2, source=NodeId("b"), source_incarnation=0, table_version=3, target=ME)
    (o,) = swim.receive(0.1, "b:7000", right)
    assert o.address == "b:7000" and isinstance(o.message, Ack) and o.message.seq == 2 and o.message.source == ME


def test_a_suspicion_about_us_is_refuted_with_a_higher_incarnation() -> None:
    swim = make()
    swim.tick(0.0)
    swim.receive(0.1, "b:7000", gossip_from("b", upd(ME, 0, Liveness.SUSPECT, "b")))
    assert swim.incarnation == 1
    (o,) = swim.receive(
        0.2, "c:7000", Ping(seq=5, source=NodeId("c"), source_incarnation=0, table_version=3, target=ME)
    )
    assert o.message.source_incarnation == 1
    assert upd(ME, 1, Liveness.ALIVE) in o.message.updates
    # A stale claim (below our incarnation) is not refuted again.
    swim.receive(0.3, "d:7000", gossip_from("d", upd(ME, 0, Liveness.DEAD, "d")))
    assert swim.incarnation == 1
    swim.receive(0.3, "d:7000", gossip_from("d", upd(ME, 1, Liveness.DEAD, "d")))
    assert swim.incarnation == 2


def test_incarnation_rules_between_alive_suspect_and_dead() -> None:
    swim = make()
    swim.tick(0.0)
    swim.receive(1, "c:7000", gossip_from("c", upd("b", 0, Liveness.SUSPECT, "c")))
    assert swim.liveness(NodeId("b")) is Liveness.SUSPECT
    swim.receive(1, "c:7000", gossip_from("c", upd("b", 0, Liveness.ALIVE)))  # same incarnation: no effect
    assert swim.liveness(NodeId("b")) is Liveness.SUSPECT
    swim.receive(1, "c:7000", gossip_from("c", upd("b", 1, Liveness.ALIVE)))  # refuted
    assert swim.liveness(NodeId("b")) is Liveness.ALIVE
    swim.receive(1, "c:7000", gossip_from("c", upd("b", 0, Liveness.DEAD, "c")))  # stale
    assert swim.liveness(NodeId("b")) is Liveness.ALIVE
    swim.receive(1, "c:7000", gossip_from("c", upd("b", 1, Liveness.DEAD, "c")))
    assert swim.liveness(NodeId("b")) is Liveness.DEAD
    swim.receive(1, "c:7000", gossip_from("c", upd("b", 1, Liveness.SUSPECT, "d")))  # dead wins at equal inc
    assert swim.liveness(NodeId("b")) is Liveness.DEAD
    swim.receive(1, "c:7000", gossip_from("c", upd("b", 2, Liveness.SUSPECT, "d")))  # it was alive after
    assert swim.liveness(NodeId("b")) is Liveness.SUSPECT
    # A message from the member itself at a higher incarnation is its own alive claim.
    swim.receive(1, "b:7000", gossip_from("b", incarnation=3))
    assert swim.liveness(NodeId("b")) is Liveness.ALIVE
    assert [e.liveness for e in swim.drain_events() if isinstance(e, MemberEvent)] == [
        Liveness.SUSPECT,
        Liveness.ALIVE,
        Liveness.DEAD,
        Liveness.SUSPECT,
        Liveness.ALIVE,
    ]
    # Claims about members not in our table are ignored.
    swim.receive(1, "c:7000", gossip_from("c", upd("stranger", 0, Liveness.DEAD, "c")))
    assert swim.liveness(NodeId("stranger")) is None


def test_lone_suspicion_waits_the_maximum_and_confirmations_shorten_it() -> None:
    # 5 members: min = 4 * 1 * 0.5 = 2 s, max = 6 * 2 = 12 s, k = 2 confirmations.
    lone = make()
    lone.tick(0.0)
    lone.receive(1.0, "c:7000", gossip_from("c", upd("b", 0, Liveness.SUSPECT, "c")))
    lone.tick(12.9)
    assert lone.liveness(NodeId("b")) is Liveness.SUSPECT
    lone.tick(13.0)
    assert lone.liveness(NodeId("b")) is Liveness.DEAD

    confirmed = make()
    confirmed.tick(0.0)
    confirmed.receive(1.0, "c:7000", gossip_from("c", upd("b", 0, Liveness.SUSPECT, "c")))
    confirmed.receive(1.5, "d:7000", gossip_from("d", upd("b", 0, Liveness.SUSPECT, "d")))
    confirmed.receive(1.6, "e:7000", gossip_from("e", upd("b", 0, Liveness.SUSPECT, "e")))
    confirmed.receive(1.7, "e:7000", gossip_from("e", upd("b", 0, Liveness.SUSPECT, "e")))  # not independent
    assert confirmed.next_deadline() <= 3.0
    confirmed.tick(3.0)
    assert confirmed.liveness(NodeId("b")) is Liveness.DEAD


def test_suspicion_timeout_arithmetic() -> None:
    assert suspicion_timeouts(cluster_size=5, probe_interval=0.5, mult=4, max_mult=6) == (2.0, 12.0)
    low, high = suspicion_timeouts(cluster_size=100, probe_interval=0.5, mult=4, max_mult=6)
    assert low == pytest.approx(4.0) and high == pytest.approx(24.0)
    assert expected_confirmations(cluster_size=2, mult=4) == 0
    assert expected_confirmations(cluster_size=3, mult=4) == 1
    assert expected_confirmations(cluster_size=20, mult=4) == 2
    s = Suspicion(started=10.0, min_timeout=2.0, max_timeout=12.0, k=2, accusers={NodeId("x")})
    assert s.deadline() == 22.0
    assert s.confirm(NodeId("y")) and not s.confirm(NodeId("y"))
    assert 12.0 < s.deadline() < 22.0
    s.confirm(NodeId("z"))
    assert s.deadline() == pytest.approx(12.0)
    s.confirm(NodeId("w"))
    assert s.deadline() == pytest.approx(12.0)  # never below the minimum
    assert Suspicion(started=0.0, min_timeout=2.0, max_timeout=12.0, k=0, accusers={NodeId("x")}).deadline() == 2.0


def test_pings_to_a_doubted_member_carry_our_claim_and_dead_members_get_reconnect_pings() -> None:
    swim = make()
    swim.tick(0.0)
    swim.receive(0.1, "c:7000", gossip_from("c", upd("b", 4, Liveness.DEAD, "c")))
    # b is skipped by the probe round, but every reconnect interval it gets a ping telling it what we think.
    now = 0.1
    reconnects: list[Outgoing] = []
    probed = set()
    while now < 5.0:
        now = swim.next_deadline()
        for o in swim.tick(now):
            if isinstance(o.message, Ping):
                if o.message.target == "b":
                    reconnects.append(o)
                else:
                    probed.add(o.message.target)
                    swim.receive(now, o.address, ack_from(o.message.target, o.message.seq))
    assert "b" not in probed and len(reconnects) == 5
    first = reconnects[0].message
    assert first.updates[0] == upd("b", 4, Liveness.DEAD, "c")
    # b answers one of them after refuting (incarnation 5): its ack alone brings it back.
    swim.receive(now, "b:7000", ack_from("b", first.seq, incarnation=5, updates=(upd("b", 5, Liveness.ALIVE),)))
    assert swim.liveness(NodeId("b")) is Liveness.ALIVE


def test_updates_are_piggybacked_a_bounded_number_of_times() -> None:
    swim = make(max_piggyback=2)
    swim.tick(0.0)
    swim.receive(
        0.1,
        "c:7000",
        gossip_from(
            "c",
            upd("b", 0, Liveness.SUSPECT, "c"),
            upd("d", 0, Liveness.SUSPECT, "c"),
            upd("e", 0, Liveness.SUSPECT, "c"),
        ),
    )
    limit = 4 * 1  # retransmit_mult * ceil(log10(5 + 1))
    carried: dict[str, int] = {}
    for i in range(40):
        (o,) = swim.receive(
            0.2, "c:7000", Ping(seq=100 + i, source=NodeId("c"), source_incarnation=0, table_version=3, target=ME)
        )
        assert len(o.message.updates) <= 2
        for u in o.message.updates:
            carried[u.node_id] = carried.get(u.node_id, 0) + 1
    assert carried == {"b": limit, "d": limit, "e": limit}


def test_newer_table_version_is_reported_once_and_then_spread() -> None:
    swim = make()
    swim.tick(0.0)
    swim.receive(0.1, "c:7000", gossip_from("c", table_version=2))
    assert swim.drain_events() == []
    swim.receive(0.1, "c:7000", gossip_from("c", table_version=9))
    swim.receive(0.1, "d:7000", gossip_from("d", table_version=9))
    assert swim.drain_events() == [TableVersionEvent(version=9, source=NodeId("c"))]
    assert swim.table_version == 3 and swim.newest_table_version == 9
    (o,) = swim.receive(
        0.2, "c:7000", Ping(seq=1, source=NodeId("c"), source_incarnation=0, table_version=3, target=ME)
    )
    assert o.message.table_version == 9


def test_set_table_drops_members_even_mid_probe() -> None:
    swim = make()
    now, ping, _ = run_until_probe(swim)
    smaller = MemberTable(version=4, members=[m for m in TABLE.members if m.node_id != ping.target])
    swim.set_table(smaller)
    assert ping.target not in swim.view() and swim.table_version == 4
    swim.tick(now + 0.5)
    assert swim.drain_events() == []


def test_view_includes_ourselves_and_members_in_filters() -> None:
    swim = make()
    swim.tick(0.0)
    swim.receive(0.1, "c:7000", gossip_from("c", upd("b", 0, Liveness.SUSPECT, "c")))
    view = swim.view()
    assert view[ME].liveness is Liveness.ALIVE and view[ME].address == addr(ME)
    assert view[NodeId("b")].since == 0.1
    assert swim.members_in(Liveness.ALIVE) == {ME, NodeId("c"), NodeId("d"), NodeId("e")}
    assert swim.members_in(Liveness.SUSPECT) == {NodeId("b")}


def test_a_failed_probe_accuses_only_the_incarnation_it_probed() -> None:
    swim = make()
    now, ping, _ = run_until_probe(swim)
    # While our probe is unanswered, the target refutes some other suspicion and we hear it through gossip.
    other = next(n for n in OTHERS if n != ping.target)
    swim.receive(now + 0.1, addr(other), gossip_from(other, upd(ping.target, 1, Liveness.ALIVE)))
    swim.tick(now + 0.2)
    swim.tick(now + 0.5)
    assert swim.liveness(ping.target) is Liveness.ALIVE  # our silence predates its refutation
    assert [e for e in swim.drain_events() if isinstance(e, MemberEvent)] == []


def test_a_target_that_spoke_to_us_during_the_probe_is_not_accused() -> None:
    swim = make()
    now, ping, _ = run_until_probe(swim)
    swim.receive(now + 0.3, addr(ping.target), gossip_from(ping.target))  # no ack, but it is talking to us
    swim.tick(now + 0.5)
    assert swim.liveness(ping.target) is Liveness.ALIVE and swim.health_score == 0


def test_every_message_to_a_doubted_member_carries_our_claim() -> None:
    swim = make()
    swim.tick(0.0)
    swim.receive(0.1, "c:7000", gossip_from("c", upd("b", 2, Liveness.SUSPECT, "c")))
    (ack,) = swim.receive(
        0.2, "b:7000", Ping(seq=3, source=NodeId("b"), source_incarnation=2, table_version=3, target=ME)
    )
    assert ack.message.updates[0] == upd("b", 2, Liveness.SUSPECT, "c")
    (ack,) = swim.receive(
        0.2, "c:7000", Ping(seq=4, source=NodeId("c"), source_incarnation=0, table_version=3, target=ME)
    )
    assert all(u.node_id != "c" for u in ack.message.updates)  # c is not doubted: no claim about it


def test_sync_exchanges_whole_views_and_a_remote_death_is_only_a_suspicion_here() -> None:
    swim = make(sync_interval=5.0)
    now = 0.0
    swim.tick(now)
    syncs: list[Outgoing] = []
    while now < 11.0:
        now = swim.next_deadline()
        for o in swim.tick(now):
            if isinstance(o.message, Sync):
                syncs.append(o)
            elif isinstance(o.message, Ping):
                swim.receive(now, o.address, ack_from(o.message.target, o.message.seq))
    assert len(syncs) == 2 and not syncs[0].message.reply
    assert {u.node_id for u in syncs[0].message.updates} == {ME, *OTHERS}
    # A peer's view says b is dead: here b only becomes suspect (it may refute), and we answer with our view.
    view = (upd("b", 0, Liveness.DEAD, "c"), upd("c", 0, Liveness.ALIVE), upd("zz", 0, Liveness.DEAD, "c"))
    out = swim.receive(
        now, "c:7000", Sync(source=NodeId("c"), source_incarnation=0, table_version=3, updates=view, reply=False)
    )
    assert swim.liveness(NodeId("b")) is Liveness.SUSPECT
    (answer,) = [o for o in out if isinstance(o.message, Sync)]
    assert answer.address == "c:7000" and answer.message.reply
    assert upd("b", 0, Liveness.SUSPECT, "c") in answer.message.updates
    # A reply is merged but not answered.
    reply = Sync(
        source=NodeId("d"),
        source_incarnation=0,
        table_version=3,
        updates=(upd("b", 0, Liveness.DEAD, "d"),),
        reply=True,
    )
    assert of_type(swim.receive(now, "d:7000", reply), Sync) == []
    assert swim.liveness(NodeId("b")) is Liveness.SUSPECT  # two independent views: the timer got shorter


def test_relays_and_incarnations_are_bounded() -> None:
    swim = make()
    swim.tick(0.0)
    for i in range(1100):
        req = PingReq(
            seq=i,
            source=NodeId("b"),
            source_incarnation=0,
            table_version=3,
            target=NodeId("c"),
            target_address="c:7000",
        )
        swim.receive(0.1, "b:7000", req)
    assert len(swim._relays) == 1024
    swim.receive(0.1, "b:7000", gossip_from("b", upd(ME, 2**63 - 1, Liveness.DEAD, "b")))
    assert swim.incarnation == 0  # cannot be outbid on the wire: ignored
