"""The trio driver under virtual time, on the in-test fake network: every scenario of the issue."""

from __future__ import annotations

import pytest
import trio

from borough.errors import ConfigError, RemoteProtocolError
from borough.ring.members import Member
from borough.ring.membership import DETECTION_BOUND, MemberEvent, Swim, TableVersionEvent
from borough.ring.membership_driver import open_membership
from borough.ring.messages import Liveness, Ping, Sync, encode_message

from .fakenet import address_of, make_table, node_name, open_cluster
from .swimsim import assert_no_flapping


@pytest.mark.parametrize(("n", "seed"), [(3, 1), (5, 2), (20, 3)])
async def test_crashed_node_is_declared_dead_by_every_live_node_within_the_bound(
    autojump_clock: trio.abc.Clock, n: int, seed: int
) -> None:
    async with open_cluster(n, seed=seed) as cluster:
        await trio.sleep(10)
        assert cluster.member_events() == []
        assert cluster.net.delivered > 10 * n
        victim = node_name(n - 1)
        crashed_at = trio.current_time()
        cluster.crash(victim)
        await trio.sleep(DETECTION_BOUND)
        for obs in cluster.live():
            assert cluster.liveness(obs, victim) is Liveness.DEAD, obs
        done = cluster.first_time_all(victim, Liveness.DEAD, cluster.live(), since=crashed_at)
        assert done is not None and done - crashed_at <= DETECTION_BOUND
        # Nobody else was ever doubted.
        assert {e.node_id for _, _, e in cluster.member_events()} == {victim}


async def test_node_behind_a_lossy_link_is_never_declared_dead(autojump_clock: trio.abc.Clock) -> None:
    async with open_cluster(5, seed=4) as cluster:
        lossy = node_name(0)
        cluster.net.loss[address_of(lossy)] = 0.10  # both directions of every message to or from it
        await trio.sleep(600)  # ten simulated minutes
        for _, obs, e in cluster.member_events():
            assert e.liveness is not Liveness.DEAD, (obs, e)
        for obs in cluster.live():
            for subject in cluster.live():
                assert cluster.liveness(obs, subject) is not Liveness.DEAD


async def test_partitioned_minority_is_suspected_and_returns_after_heal_without_flapping(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_cluster(5, seed=5) as cluster:
        majority = [node_name(i) for i in range(3)]
        minority = [node_name(3), node_name(4)]
        await trio.sleep(5)
        cluster.net.partition(majority, minority)
        await trio.sleep(30)
        for obs in majority:
            for subject in minority:
                assert cluster.liveness(obs, subject) is not Liveness.ALIVE
        for obs in minority:
            for subject in majority:
                assert cluster.liveness(obs, subject) is not Liveness.ALIVE
        healed_at = trio.current_time()
        cluster.net.heal()
        await trio.sleep(DETECTION_BOUND)
        for obs in cluster.live():
            for subject in cluster.live():
                assert cluster.liveness(obs, subject) is Liveness.ALIVE, (obs, subject)
        settled_at = trio.current_time()
        await trio.sleep(120)
        # No flapping: once a belief is back to ALIVE after the heal it stays there, and then all is quiet.
        assert cluster.member_events(since=settled_at) == []
        assert_no_flapping(cluster.member_events(since=healed_at))


async def test_short_partition_is_suspected_but_nobody_dies(autojump_clock: trio.abc.Clock) -> None:
    async with open_cluster(5, seed=6) as cluster:
        await trio.sleep(5)
        cluster.net.partition([node_name(0), node_name(1), node_name(2)], [node_name(3), node_name(4)])
        await trio.sleep(2.0)  # shorter than a lone suspicion's timeout
        cluster.net.heal()
        await trio.sleep(30)
        kinds = {e.liveness for _, _, e in cluster.member_events()}
        assert Liveness.SUSPECT in kinds
        assert Liveness.DEAD not in kinds
        for obs in cluster.live():
            for subject in cluster.live():
                assert cluster.liveness(obs, subject) is Liveness.ALIVE


async def test_twenty_nodes_converge_on_the_same_view(autojump_clock: trio.abc.Clock) -> None:
    async with open_cluster(20, seed=7) as cluster:
        await trio.sleep(5)
        crashed = [node_name(4), node_name(11)]
        for victim in crashed:
            cluster.crash(victim)
        cluster.net.partition([node_name(i) for i in range(15)], [node_name(i) for i in range(15, 20)])
        await trio.sleep(20)
        cluster.net.heal()
        await trio.sleep(20)
        views = {obs: {s: v for s, v in cluster.drivers[obs].view().items() if s != obs} for obs in cluster.live()}
        for obs, view in views.items():
            for subject, v in view.items():
                expected = Liveness.DEAD if subject in crashed else Liveness.ALIVE
                assert v.liveness is expected, (obs, subject, v)
                if subject not in crashed:
                    # Incarnations spread lazily (a member refutes only what reached it), but never ahead.
                    assert v.incarnation <= cluster.drivers[subject].core.incarnation
        # Identical beliefs about every third party on every live node.
        for subject in cluster.table.node_ids():
            beliefs = {view[subject].liveness for obs, view in views.items() if subject != obs}
            assert len(beliefs) == 1, (subject, beliefs)


async def test_newer_table_version_reaches_every_node_quickly(autojump_clock: trio.abc.Clock) -> None:
    async with open_cluster(10, seed=8) as cluster:
        await trio.sleep(2)
        changed_at = trio.current_time()
        cluster.drivers[node_name(0)].set_table(cluster.table.with_member(cluster.table[node_name(1)]))
        await trio.sleep(3)
        seen = {
            obs: t
            for t, obs, e in cluster.events
            if isinstance(e, TableVersionEvent) and e.version == cluster.table.version + 1
        }
        assert set(seen) == set(cluster.live()) - {node_name(0)}
        assert max(seen.values()) - changed_at < 2.0


async def test_restarted_node_refutes_its_death_and_comes_back(autojump_clock: trio.abc.Clock) -> None:
    async with open_cluster(5, seed=9) as cluster:
        await trio.sleep(3)
        victim = node_name(2)
        cluster.crash(victim)
        await trio.sleep(DETECTION_BOUND)
        assert all(cluster.liveness(o, victim) is Liveness.DEAD for o in cluster.live())
        await cluster.start_node(victim)  # a fresh process: incarnation 0, below the one it was declared dead at
        await trio.sleep(5)
        for obs in cluster.live():
            for subject in cluster.live():
                assert cluster.liveness(obs, subject) is Liveness.ALIVE, (obs, subject)
        assert cluster.drivers[victim].core.incarnation >= 1
        assert all(cluster.drivers[obs].live() == set(cluster.live()) for obs in cluster.live())


async def test_deliver_rejects_garbage_and_changes_nothing(autojump_clock: trio.abc.Clock) -> None:
    sent: list[tuple[str, object]] = []
    core = Swim(node_name(0), address_of(node_name(0)), rng=__import__("random").Random(1), table=make_table(3))
    async with open_membership(core, lambda a, m: sent.append((a, m)) or True) as driver:
        before = driver.view()
        with pytest.raises(RemoteProtocolError):
            driver.deliver("x:1", [1, 2, 3])
        with pytest.raises(RemoteProtocolError):
            driver.deliver("x:1", b"\x00garbage")
        assert driver.view() == before and driver.received == 0
        ping = Ping(seq=7, source=node_name(1), source_incarnation=0, table_version=1, target=node_name(0))
        n = len(sent)
        driver.deliver(address_of(node_name(1)), encode_message(ping))
        acks = [m for a, m in sent[n:] if a == address_of(node_name(1))]
        assert acks and acks[0][0] == 2 and acks[0][1] == 7  # an Ack echoing seq 7, sent at once
        sync = Sync(source=node_name(2), source_incarnation=0, table_version=1, updates=(), reply=False)
        driver.deliver(address_of(node_name(2)), sync)  # decoded messages of every kind are accepted as they are
        assert sent[-1][0] == address_of(node_name(2)) and sent[-1][1][0] == 6
    driver.deliver(address_of(node_name(1)), ping)  # after close: ignored, no error
    assert driver.received == 2


async def test_events_channel_is_bounded_and_counts_drops(autojump_clock: trio.abc.Clock) -> None:
    core = Swim(node_name(0), address_of(node_name(0)), rng=__import__("random").Random(2), table=make_table(6))
    async with open_membership(core, lambda a, m: False, events_capacity=2) as driver:
        await trio.sleep(60)  # nobody answers: every member goes suspect, then dead (10 events)
        assert driver.send_failures == driver.sent > 0
        got = []
        while True:
            try:
                got.append(driver.events.receive_nowait())
            except trio.WouldBlock:
                break
        assert len(got) == 2 and all(isinstance(e, MemberEvent) for e in got)
        assert driver.dropped_events == 8
        assert all(v.liveness is Liveness.DEAD for k, v in driver.view().items() if k != node_name(0))


async def test_open_membership_refuses_bad_settings() -> None:
    core = Swim(node_name(0), address_of(node_name(0)), rng=__import__("random").Random(3), table=make_table(2))
    with pytest.raises(ConfigError, match="tick_interval"):
        async with open_membership(core, lambda a, m: True, tick_interval=0):
            pass


async def test_set_table_adds_and_removes_probed_members(autojump_clock: trio.abc.Clock) -> None:
    async with open_cluster(3, seed=10) as cluster:
        await trio.sleep(2)
        d0 = cluster.drivers[node_name(0)]
        smaller = cluster.table.without(node_name(2))
        d0.set_table(smaller)
        assert set(d0.view()) == {node_name(0), node_name(1)} and d0.core.table_version == smaller.version
        bigger = smaller.with_member(Member(node_id=node_name(7), address=address_of(node_name(7))))
        d0.set_table(bigger)
        await trio.sleep(DETECTION_BOUND * 3)
        # n07 never existed: it is probed, suspected and declared dead; nobody else is.
        assert d0.view()[node_name(7)].liveness is Liveness.DEAD
        assert d0.view()[node_name(1)].liveness is Liveness.ALIVE
