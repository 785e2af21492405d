"""``Replicas``: the node's table of replicas, over a recording host (see ``replica_harness``): starting them from
the store, from a directory record or empty for a leader's first message (holding its messages meanwhile),
finding the leader, deleting a removed replica's data, and the ticker."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

import borough.node.arrivals as arrivals_module
from borough.config import NodeConfig
from borough.errors import NotFound, NotLeader, Unavailable
from borough.kv import encode_value
from borough.node.records import DirectoryRecord
from borough.node.registry import Replicas
from borough.raft.messages import AppendRequest, AppendResponse, Heartbeat, HeartbeatResponse, VoteRequest
from borough.raft.records import ConfState, HardState, Tombstone

from .replica_harness import FakeHost, Sent, Written, bootstrap, open_host, prefill, settle, wait_until

CONFIG = NodeConfig(data_dir=None, tick_interval=0.1, request_timeout=5.0)


@dataclass(eq=False)
class Directory:
    """The partition directory as ``find_record`` sees it; ``gate`` (when set) holds every lookup."""

    records: dict[str, DirectoryRecord] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    gate: trio.Event | None = None

    def add(self, name: str, *voters: str) -> None:
        self.records[name] = DirectoryRecord(name=name, voters=voters, table_version=1)  # type: ignore[arg-type]

    async def find(self, name: str) -> DirectoryRecord:
        self.lookups.append(name)
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        if name not in self.records:
            raise NotFound(name, partition="_system")
        return self.records[name]


@dataclass(eq=False)
class Node:
    host: FakeHost
    replicas: Replicas
    directory: Directory
    nursery: trio.Nursery


@asynccontextmanager
async def open_node(
    *,
    prepare: Callable[[FakeHost], Any] | None = None,
    on_deleted: Callable[[str], None] = lambda name: None,
    on_tick: Callable[[int], None] | None = None,
    known: bool = False,
) -> AsyncIterator[Node]:
    async with open_host("a") as host, trio.open_nursery() as nursery:
        if prepare is not None:
            await prepare(host)
        directory = Directory()
        replicas = Replicas(
            host=host, config=CONFIG, rng=random.Random(7), nursery=nursery, find_record=directory.find,
            known_record=directory.records.get if known else lambda name: None, on_deleted=on_deleted, on_tick=on_tick,
        )  # fmt: skip
        yield Node(host, replicas, directory, nursery)
        nursery.cancel_scope.cancel()


def sent_in(host: FakeHost, partition: str, kind: type) -> list[Any]:
    return [m for e in host.events if isinstance(e, Sent) and e.partition == partition for m in e.messages
            if isinstance(m, kind)]  # fmt: skip


def put(key: str, value: Any) -> bytes:
    return cbor2.dumps([["put", key, encode_value(value)]])


# --- starting replicas ---------------------------------------------------------------------------------------------


async def test_resume_starts_every_replica_the_store_holds(autojump_clock: trio.testing.MockClock) -> None:
    async def prepare(host: FakeHost) -> None:
        await prefill(host, 5, partition="p")
        await bootstrap(host, ["a"], "q")

    async with open_node(prepare=prepare) as node:
        replicas = node.replicas
        replicas.resume()
        assert sorted(replicas) == ["p", "q"] and len(replicas) == 2
        p, q = replicas["p"], replicas["q"]
        assert p.applied == 5 and p.status().commit == 5
        replicas.resume()  # already running: nothing restarted
        assert replicas["p"] is p and replicas["q"] is q
        q.campaign()
        await wait_until(lambda: q.is_leader)  # its driver runs
        await q.propose(put("k", 1))
        assert node.host.store.get("q", "k") == 1
        assert node.directory.lookups == []


async def test_local_bootstraps_from_the_directory_record_and_appoints_the_first_voter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_node() as node:
        node.directory.add("p", "a", "b", "c")  # this node owns p: it is appointed p's first leader
        node.directory.add("q", "b", "a", "c")  # a voter of q, but not its first
        p = await node.replicas.local("p")
        q = await node.replicas.local("q")
        await settle()
        store = node.host.store
        assert store.snapshot_meta("p").conf_state == ConfState(voters=["a", "b", "c"])
        assert store.snapshot_meta("q").conf_state == ConfState(voters=["a", "b", "c"])
        # Every initial voter starts at term 1 having voted for the record's first voter: p's owner leads term 1
        # with no election (its appends go out, no vote request), and q's replica here waits for b.
        hard = store.hard_state("p")
        assert (hard.term, hard.vote) == (1, "a") and p.is_leader and p.term == 1
        assert {m.to for m in sent_in(node.host, "p", AppendRequest)} == {"b", "c"}
        assert sent_in(node.host, "p", VoteRequest) == []
        hard = store.hard_state("q")
        assert (hard.term, hard.vote) == (1, "b") and not q.is_leader
        assert sent_in(node.host, "q", VoteRequest) == [] and sent_in(node.host, "q", AppendRequest) == []
        assert node.replicas.get("p") is p and node.replicas.get("q") is q
        assert await node.replicas.local("p") is p  # found, not created again
        assert node.directory.lookups == ["p", "q"]


async def test_concurrent_lookups_create_one_replica(autojump_clock: trio.testing.MockClock) -> None:
    async with open_node() as node:
        node.directory.add("p", "a")
        found: list[Any] = []
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(lambda: _append(found, node.replicas.local("p")))
        assert len(found) == 3 and found[0] is found[1] is found[2]
        assert len(node.replicas) == 1
        await wait_until(lambda: found[0].is_leader)


async def _append(out: list[Any], awaitable: Any) -> None:
    out.append(await awaitable)


async def test_local_refuses_a_partition_this_node_holds_no_replica_of(autojump_clock: trio.testing.MockClock) -> None:
    async with open_node() as node:
        node.directory.add("p", "b", "c")  # registered, without this node
        with pytest.raises(NotLeader):
            await node.replicas.local("p")
        with pytest.raises(NotLeader):
            await node.replicas.local("never-registered")
        assert len(node.replicas) == 0 and node.host.store.replicas() == []
        with pytest.raises(NotFound):
            await node.replicas.local("never-registered", empty_ok=True)  # not even empty: nobody registered it
        empty = await node.replicas.local("p", empty_ok=True)  # to receive the leader's log or snapshot
        assert node.replicas["p"] is empty
        assert empty.status().conf_state == ConfState() and empty.status().last_index == 0


async def test_leader_names_the_leader_and_its_address(autojump_clock: trio.testing.MockClock) -> None:
    addresses = {"b": "b:7000"}
    async with open_node() as node:
        node.directory.add("p", "b", "a", "c")
        node.directory.add("q", "a")
        replica = await node.replicas.local("p")
        replica.deliver(Heartbeat(frm="b", to="a", term=3, commit=0))
        await wait_until(lambda: replica.leader == "b")
        with pytest.raises(NotLeader) as info:
            await node.replicas.leader("p", addresses.get)
        assert (info.value.leader, info.value.leader_address) == ("b", "b:7000")
        q = await node.replicas.local("q")
        await wait_until(lambda: q.is_leader)
        assert await node.replicas.leader("q", addresses.get) is q


async def test_a_write_to_a_group_being_created_rides_with_its_first_leaders_first_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The ring owner's replica of a new group is handed to a write (``electing_ok``) before it has taken the
    lead it is appointed to: the write waits in the queue, and the new leader's first append carries it with the
    empty entry of its term (one append and one sync instead of two). The appointment is made durable before that
    append leaves: the first Ready writes term 1 and the vote again, synced, and sends its appends after."""
    async with open_node() as node:
        node.directory.add("p", "a", "b", "c")
        replica = await node.replicas.leader("p", {}.get, electing_ok=True)
        assert replica.electing and not replica.is_leader
        waiter = replica.propose_nowait(put("k", 1))
        await wait_until(lambda: len(sent_in(node.host, "p", AppendRequest)) == 2)
        assert replica.is_leader and not replica.electing and replica.term == 1
        assert sent_in(node.host, "p", VoteRequest) == []
        for append in sent_in(node.host, "p", AppendRequest):
            assert [e.index for e in append.entries] == [1, 2] and append.entries[0].data == b""
        events = node.host.events
        first_append = next(i for i, e in enumerate(events) if isinstance(e, Sent) and e.partition == "p")
        assert any(
            isinstance(e, Written) and e.sync and e.last_index == 2 and e.hard_state == HardState(term=1, vote="a")
            for e in events[:first_append]
        )  # (term 1, the vote and the entries durable before anyone hears of the term)
        replica.deliver(AppendResponse(frm="b", to="a", term=1, index=2))
        with trio.fail_after(5):
            await waiter.wait()
        assert node.host.store.get("p", "k") == 1


async def test_a_write_waiting_for_a_lost_first_election_is_refused_as_not_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # (A group made from its directory record appoints its first leader, which never loses: this is a group
    # whose replica was made with no appointment, at term 0, whose first leader is elected.)
    async with open_node() as node:
        node.directory.add("p", "a", "b", "c")
        (await node.replicas.bootstrap("p", ["a", "b", "c"], sync=False)).campaign()
        replica = await node.replicas.leader("p", {}.get, electing_ok=True)
        assert replica.electing
        waiter = replica.propose_nowait(put("k", 1))
        await settle()
        # Another voter won the term (it heard from a quorum first): this replica follows it, the write is refused.
        replica.deliver(Heartbeat(frm="b", to="a", term=1, commit=0))
        with trio.fail_after(5), pytest.raises(NotLeader) as info:
            await waiter.wait()
        assert info.value.provably_not_run and not replica.electing
        with pytest.raises(NotLeader):
            replica.propose_nowait(put("k", 2))  # no longer electing: refused at once


# --- a leader's first message --------------------------------------------------------------------------------------


async def test_messages_for_an_unknown_partition_are_held_until_its_replica_exists(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arrivals_module, "PENDING_MESSAGES", 2)
    async with open_node() as node:
        node.directory.add("p", "b", "c", "d")
        node.directory.gate = trio.Event()
        for seq in (1, 2, 3):
            node.replicas.deliver("p", Heartbeat(frm="b", to="a", term=4, commit=0, seq=seq))
        await settle()
        assert "p" not in node.replicas and node.directory.lookups == ["p"]  # one creation for all three
        node.directory.gate.set()
        await wait_until(lambda: "p" in node.replicas)
        replica = node.replicas["p"]
        await wait_until(lambda: replica.leader == "b")
        assert replica.term == 4
        await settle()
        assert [m.seq for m in sent_in(node.host, "p", HeartbeatResponse)] == [1, 2]  # the third was beyond the bound
        node.replicas.deliver("p", Heartbeat(frm="b", to="a", term=4, commit=0, seq=9))  # straight to the replica
        await settle()
        assert [m.seq for m in sent_in(node.host, "p", HeartbeatResponse)] == [1, 2, 9]


async def test_held_partitions_are_bounded(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arrivals_module, "PENDING_PARTITIONS", 1)
    async with open_node() as node:
        node.directory.add("p", "b", "c", "d")
        node.directory.add("q", "b", "c", "d")
        node.directory.gate = trio.Event()
        node.replicas.deliver("p", Heartbeat(frm="b", to="a", term=1, commit=0, seq=1))
        node.replicas.deliver("q", Heartbeat(frm="b", to="a", term=1, commit=0, seq=1))  # no room: dropped
        await settle()
        assert node.directory.lookups == ["p"]
        node.directory.gate.set()
        await wait_until(lambda: "p" in node.replicas)
        await trio.sleep(1)
        assert "q" not in node.replicas
        node.replicas.deliver("q", Heartbeat(frm="b", to="a", term=1, commit=0, seq=2))  # room again (Raft resends)
        await wait_until(lambda: "q" in node.replicas)


async def test_a_message_meant_for_a_deleted_replica_does_not_create_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def deleted(host: FakeHost) -> None:
        batch = host.store.write_batch()
        batch.destroy("p", Tombstone(term=4, incarnation=3))
        await host.committer.commit(batch)

    async with open_node(prepare=deleted) as node:
        node.directory.add("p", "b", "c", "d")
        node.replicas.deliver("p", Heartbeat(frm="b", to="a", term=4, commit=0), 3, 0)  # for the deleted one
        await settle()
        assert "p" not in node.replicas and node.replicas.arrivals.dropped_stale == 1 and node.directory.lookups == []
        with pytest.raises(Unavailable, match="deleted"):
            await node.replicas.for_snapshot("p", 2)
        node.replicas.deliver("p", Heartbeat(frm="b", to="a", term=5, commit=0), 4, 0)  # a later incarnation
        await wait_until(lambda: "p" in node.replicas)
        replica = node.replicas["p"]
        assert replica.incarnations.own() == 4
        await wait_until(lambda: replica.leader == "b")
        assert await node.replicas.for_snapshot("p", 4) is replica


async def test_messages_naming_a_partition_nobody_registered_create_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_node() as node:
        for i in range(20):
            node.replicas.deliver(f"junk-{i}", Heartbeat(frm="b", to="a", term=7, commit=0))
        await trio.sleep(1)
        assert len(node.replicas) == 0 and node.host.store.replicas() == []
        assert sorted(node.directory.lookups) == sorted(f"junk-{i}" for i in range(20))
        with pytest.raises(NotFound):
            await node.replicas.for_snapshot("junk-0", 0)
        assert len(node.replicas) == 0


async def test_a_replica_that_fails_is_restarted_from_disk_and_the_others_keep_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_node() as node:
        node.directory.add("p", "a")
        node.directory.add("q", "a")
        p, q = await node.replicas.local("p"), await node.replicas.local("q")
        await wait_until(lambda: p.is_leader and q.is_leader)
        await p.propose(b"\x80")  # an empty write batch, applied
        applied = p.applied

        def broken(entries: Any) -> Any:
            raise RuntimeError("a bug in one partition")

        p.machine.apply = broken  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            await p.propose(b"\x80")  # committed, but applying it fails: the replica stops
        assert node.replicas.failures == 1 and "p" not in node.replicas
        await q.propose(b"\x80")  # the other partition never noticed
        await wait_until(lambda: "p" in node.replicas, within=5)  # restarted from disk after the backoff
        again = node.replicas["p"]
        assert again is not p
        node.nursery.start_soon(node.replicas.tick_forever)
        await wait_until(lambda: again.is_leader)  # its durable state intact: it elects itself again
        assert again.applied >= applied
        await again.propose(b"\x80")  # and serves writes
        assert node.replicas.failures == 1


async def test_a_term_no_group_could_reach_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    async with open_node() as node:
        node.directory.add("p", "a", "b", "c")
        replica = await node.replicas.local("p")
        node.replicas.deliver("p", Heartbeat(frm="b", to="a", term=(1 << 63) - 1, commit=0))
        await settle()
        assert replica.term < 10 and node.replicas.dropped_terms == 1
        node.replicas.deliver("p", Heartbeat(frm="b", to="a", term=5, commit=0))  # an ordinary term still counts
        await wait_until(lambda: replica.term == 5)


# --- deletion and the ticker ---------------------------------------------------------------------------------------


async def test_a_removed_replica_is_deleted_leaving_a_tombstone_before_it_leaves_the_table(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str, bool, Tombstone | None, list[str]]] = []
    holder: list[Node] = []

    def on_deleted(name: str) -> None:
        node = holder[0]
        seen.append((name, name in node.replicas, node.host.store.tombstone(name), node.host.store.replicas()))

    async with open_node(on_deleted=on_deleted) as node:
        holder.append(node)
        node.directory.add("p", "a")
        replica = await node.replicas.local("p")
        await wait_until(lambda: replica.is_leader)
        await replica.propose(put("k", 1))
        term, last = replica.term, replica.status().last_index
        replica.remove()
        await wait_until(lambda: bool(seen))
        [(name, still_listed, tombstone, stored)] = seen
        assert name == "p" and still_listed  # deleted first, then out of the table
        assert tombstone is not None and (tombstone.term, tombstone.vote, tombstone.last_index) == (term, "a", last)
        assert stored == []
        await wait_until(lambda: "p" not in node.replicas)
        again = node.replicas.start("p")  # created afresh, it resumes the old term and vote
        assert again is not replica and again.term == term and again.status().last_index == 0


async def test_the_ticker_ticks_every_running_clock_each_interval(autojump_clock: trio.testing.MockClock) -> None:
    reports: list[tuple[float, int]] = []
    async with open_node(on_tick=lambda n: reports.append((trio.current_time(), n))) as node:
        start = trio.current_time()
        ticks: dict[str, int] = {"p": 0, "q": 0, "r": 0}
        clocks = node.replicas.clocks
        for name in ticks:
            node.replicas.start(name)
            assert name in clocks  # a new replica's clock runs
            clocks.run(name, lambda late=0, name=name: ticks.__setitem__(name, ticks[name] + 1))
        clocks.stop("r", clocks._running["r"])  # as when r's core quiesces
        with trio.move_on_after(0.35):
            await node.replicas.tick_forever()
        assert [n for _, n in reports] == [2, 2, 2]
        assert [round(t - start, 6) for t, _ in reports] == [0.1, 0.2, 0.3]
        assert ticks == {"p": 3, "q": 3, "r": 0}


async def test_a_voter_whose_record_is_known_here_makes_its_replica_with_no_task_or_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The owner's first append reaches another initial voter that knows the record already (``_system`` sends
    it to every node at once): the replica is made in the call that delivers the message, from the record (term 1,
    the owner's vote), with no lookup, and answers the append."""
    async with open_node(known=True) as node:
        node.directory.add("p", "b", "a", "c")
        append = AppendRequest(frm="b", to="a", term=1, prev_index=0, prev_term=0, entries=[], commit=0)
        node.replicas.deliver("p", append, 0, 0)
        assert "p" in node.replicas  # (the first batch was written at once: no synced write was in flight)
        assert node.directory.lookups == []
        hard = node.host.store.hard_state("p")
        assert (hard.term, hard.vote) == (1, "b")
        await wait_until(lambda: any(m.to == "b" for m in sent_in(node.host, "p", AppendResponse)))
        assert node.replicas["p"].leader == "b"


async def test_a_voter_made_while_the_disk_is_busy_starts_once_its_first_batch_is_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_node(known=True) as node:
        node.directory.add("p", "b", "a", "c")
        node.directory.add("q", "b", "c", "a")
        node.host.committer.hold()  # (a slow disk: what is handed to the group commit waits)
        for name in ("p", "q"):
            node.replicas.deliver(name, Heartbeat(frm="b", to="a", term=1, commit=0), 0, 0)
        node.replicas.deliver("p", Heartbeat(frm="b", to="a", term=1, commit=0), 0, 0)  # (held with the first)
        await settle()
        assert "p" not in node.replicas and "q" not in node.replicas and node.host.committer.waiting == 2
        node.host.committer.release()
        await wait_until(lambda: "p" in node.replicas and "q" in node.replicas)
        assert node.directory.lookups == []
        await wait_until(lambda: node.replicas["q"].leader == "b" and node.replicas["p"].leader == "b")
        answers = [m for m in sent_in(node.host, "p", HeartbeatResponse) if m.to == "b"]
        assert len(answers) == 2  # both held heartbeats reached the replica
