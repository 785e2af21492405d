"""``Snapshots``: streaming a replica's applied state to a follower beside one call, and receiving one.

The sending side runs over a real (not running) leader replica whose store holds applied data, with a fake
``call`` that drains or forwards the stream; the receiving side stages into a running empty replica, whose core
decides whether to install. One test runs the whole path inside a live group (see ``replica_harness``).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

import borough.node.snapshots as snapshots_module
from borough.errors import Overloaded, RemoteProtocolError, StorageError, Timeout, Unavailable
from borough.node.protocol import SendSnapshot
from borough.node.replica import Replica
from borough.node.snapshots import Snapshots
from borough.raft.confchange import ConfChange
from borough.raft.messages import Heartbeat, InstallSnapshot, encode_message
from borough.raft.records import ConfState, SnapshotMeta
from borough.store.snapshot import SnapshotInstall

from .replica_harness import (
    PARTITION,
    FakeHost,
    make_replica,
    open_group,
    open_host,
    prefill,
    run_replica,
    settle,
    wait_until,
)

P = PARTITION
N = 12  # entries (and keys) the leader's store holds
META = SnapshotMeta(index=N, term=1, conf_state=ConfState(voters=["a"]))
LEN = struct.Struct(">I")

Streams = Mapping[str, trio.abc.ReceiveStream] | None


def snap_op(to: str = "b", term: int = 1, meta: SnapshotMeta = META) -> SendSnapshot:
    return SendSnapshot(encode_message(InstallSnapshot(frm="a", to=to, term=term, meta=meta)))


class PieceStream(trio.abc.ReceiveStream):
    """Hands out ``data`` ``piece`` bytes at a time, then end of stream."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self.data = data
        self.piece = piece

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        out, self.data = self.data[: self.piece], self.data[self.piece :]
        return out

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        (size,) = LEN.unpack_from(data)
        out.append(data[4 : 4 + size])
        data = data[4 + size :]
    return out


async def never_called(name: str, to_inc: int) -> Replica:
    raise AssertionError(f"no replica should be looked up (asked for {name!r})")


async def unused_call(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the receiving side makes no calls")


# --- the sending side ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Sender:
    host: FakeHost
    replica: Replica
    reports: list[tuple[str, bool]] = field(default_factory=list)


@asynccontextmanager
async def open_sender(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sender]:
    """A leader's replica over a store holding N applied entries; its ``report_snapshot`` calls are recorded."""
    async with open_host("a") as host:
        await prefill(host, N)
        replica = make_replica(host)
        sender = Sender(host, replica)
        monkeypatch.setattr(replica, "report_snapshot", lambda to, ok: sender.reports.append((to, ok)))
        yield sender


def make_snapshots(
    nursery: trio.Nursery,
    call: Callable[..., Awaitable[Any]],
    *,
    node_id: str = "a",
    address_of: Callable[[str], str | None] = lambda node: f"{node}:1",
    find_replica: Callable[[str, int], Awaitable[Replica]] = never_called,
    timeout: float = 1.0,
    **options: Any,
) -> Snapshots:
    return Snapshots(
        node_id=node_id,
        call=call,
        address_of=address_of,
        find_replica=find_replica,
        nursery=nursery,
        timeout=timeout,
        **options,
    )


def request(to: str = "b") -> InstallSnapshot:
    """What a leader's Ready carries: stream to ``to`` (its meta is the compaction point, replaced on sending)."""
    return InstallSnapshot(frm="a", to=to, term=1, meta=SnapshotMeta(index=0, term=0, conf_state=ConfState()))


async def test_a_transfer_frames_several_chunks_that_arrive_in_any_pieces(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots_module, "CHUNK_BYTES", 40)
    captured: list[tuple[str, Any, bytes]] = []

    async def call(address: str, body: Any, *, streams: Mapping[str, AsyncIterator[bytes]]) -> None:
        data = b"".join([piece async for piece in streams["data"]])
        captured.append((address, body, data))

    async with open_sender(monkeypatch) as sender, open_receiver() as receiver, trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, call)
        snapshots.start_send(sender.replica, request())
        await wait_until(lambda: bool(sender.reports))
        assert sender.reports == [("b", True)] and snapshots.sent == 1
        [(address, body, data)] = captured
        assert address == "b:1"
        name, partition, args, _left = body
        assert (name, partition) == ("snap", P)
        chunks = frames(data)
        assert len(chunks) >= 3
        # The message describes exactly the state the chunks captured: the applied index N, not the request's.
        await receiver.snapshots.receive(partition, SendSnapshot(*args), {"data": PieceStream(data, piece=7)})
        await wait_until(lambda: receiver.replica.applied == N)
        assert dict(receiver.host.store.iterate(P)) == {f"k{i}": i for i in range(1, N + 1)}
        assert receiver.host.store.snapshot_meta(P) == META
        assert receiver.snapshots.received == 1
        nursery.cancel_scope.cancel()


async def test_one_transfer_per_follower_and_a_bounded_number_at_once(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    running: list[str] = []
    most = 0
    calls: list[str] = []
    gate = trio.Event()

    async def call(address: str, body: Any, *, streams: Mapping[str, AsyncIterator[bytes]]) -> None:
        nonlocal most
        calls.append(address)
        running.append(address)
        most = max(most, len(running))
        try:
            async for _ in streams["data"]:
                pass
            await gate.wait()
        finally:
            running.remove(address)

    followers = [f"f{i}" for i in range(snapshots_module.SEND_CONCURRENCY + 2)]
    async with open_sender(monkeypatch) as sender, trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, call)
        snapshots.start_send(sender.replica, request("f0"))
        snapshots.start_send(sender.replica, request("f0"))  # the same follower: the first transfer covers it
        for to in followers[1:]:
            snapshots.start_send(sender.replica, request(to))
        await trio.sleep(1)
        assert most == len(running) == snapshots_module.SEND_CONCURRENCY
        gate.set()
        await wait_until(lambda: len(sender.reports) == len(followers))
        assert sorted(calls) == sorted(f"{to}:1" for to in followers)
        assert sorted(sender.reports) == [(to, True) for to in followers]
        snapshots.start_send(sender.replica, request("f0"))  # done: a new transfer to f0 may start
        await wait_until(lambda: len(sender.reports) == len(followers) + 1)
        assert calls.count("f0:1") == 2


async def test_a_failed_call_is_reported_to_the_replica(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def call(address: str, body: Any, *, streams: Mapping[str, AsyncIterator[bytes]]) -> None:
        await trio.lowlevel.checkpoint()
        raise Unavailable("the follower went away")

    async with open_sender(monkeypatch) as sender, trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, call)
        snapshots.start_send(sender.replica, request())
        await wait_until(lambda: bool(sender.reports))
        assert sender.reports == [("b", False)] and snapshots.sent == 0


async def test_a_follower_without_a_known_address_is_reported_at_once(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def call(address: str, body: Any, *, streams: Mapping[str, AsyncIterator[bytes]]) -> None:
        calls.append(address)

    async with open_sender(monkeypatch) as sender, trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, call, address_of=lambda node: None)
        snapshots.start_send(sender.replica, request())
        await settle()
        assert sender.reports == [("b", False)] and calls == []


async def test_a_transfer_that_hangs_is_given_up_and_reported(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def call(address: str, body: Any, *, streams: Mapping[str, AsyncIterator[bytes]]) -> None:
        await trio.sleep_forever()

    async with open_sender(monkeypatch) as sender, trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, call, timeout=2.0)
        start = trio.current_time()
        snapshots.start_send(sender.replica, request())
        await wait_until(lambda: bool(sender.reports))
        assert sender.reports == [("b", False)]
        assert trio.current_time() - start == pytest.approx(12.0, abs=0.05)  # six request timeouts


# --- the receiving side --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Receiver:
    host: FakeHost
    replica: Replica
    snapshots: Snapshots
    installs: list[SnapshotInstall] = field(default_factory=list)


@asynccontextmanager
async def open_receiver(**options: Any) -> AsyncIterator[Receiver]:
    """An empty replica of P on node b (as created for a leader's first message), its driver running;
    ``options`` go to ``Snapshots``."""
    async with open_host("b") as host, trio.open_nursery() as nursery:
        replica = make_replica(host)
        await nursery.start(run_replica, replica)

        async def find(name: str, to_inc: int) -> Replica:
            assert name == P
            await trio.lowlevel.checkpoint()
            return replica

        snapshots = make_snapshots(nursery, unused_call, node_id="b", find_replica=find, **options)
        receiver = Receiver(host, replica, snapshots)
        begin = replica.begin_install

        def recording_begin(begun: SnapshotInstall | None = None) -> SnapshotInstall:
            install = begin(begun)
            receiver.installs.append(install)
            return install

        replica.begin_install = recording_begin  # type: ignore[method-assign]
        yield receiver
        nursery.cancel_scope.cancel()


async def framed_snapshot(chunk_bytes: int = 40) -> bytes:
    """The framed stream a leader holding N applied entries sends (several chunks)."""
    async with open_host("a") as host:
        await prefill(host, N)
        out = b""
        for chunk in host.store.snapshot_chunks(P, max_chunk_bytes=chunk_bytes):
            out += LEN.pack(len(chunk)) + chunk
        return out


async def test_a_truncated_stream_is_refused_and_its_install_aborted(autojump_clock: trio.testing.MockClock) -> None:
    data = await framed_snapshot()
    async with open_receiver() as receiver:
        with pytest.raises(RemoteProtocolError, match="middle of a chunk"):
            await receiver.snapshots.receive(P, snap_op(), {"data": PieceStream(data[:-5])})
        [install] = receiver.installs
        with pytest.raises(StorageError, match="aborted"):
            install.add_chunk(b"")
        await trio.sleep(1)
        assert receiver.replica.applied == 0 and list(receiver.host.store.iterate(P)) == []
        assert receiver.snapshots.received == 0


async def test_a_stream_that_stops_between_chunks_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    """Ending cleanly after a whole chunk but before the last one is a truncation too: the staged data is
    incomplete and must never be offered to the core (whose Ready would then fail to install it)."""
    data = await framed_snapshot()
    first = frames(data)[0]
    async with open_receiver() as receiver:
        with pytest.raises(RemoteProtocolError):
            await receiver.snapshots.receive(P, snap_op(), {"data": PieceStream(LEN.pack(len(first)) + first)})
        await trio.sleep(1)
        assert receiver.replica.applied == 0 and list(receiver.host.store.iterate(P)) == []
        # The replica still runs: a complete stream is installed.
        await receiver.snapshots.receive(P, snap_op(), {"data": PieceStream(data)})
        await wait_until(lambda: receiver.replica.applied == N, within=5)


async def test_an_oversized_chunk_header_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with open_receiver() as receiver:
        header = LEN.pack(snapshots_module.MAX_CHUNK_BYTES + 1)
        with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
            await receiver.snapshots.receive(P, snap_op(), {"data": PieceStream(header + b"\0" * 64)})
        [install] = receiver.installs
        with pytest.raises(StorageError, match="aborted"):
            install.add_chunk(b"")


@pytest.mark.parametrize(
    "message",
    [
        encode_message(InstallSnapshot(frm="a", to="c", term=1, meta=META)),  # for another node
        encode_message(Heartbeat(frm="a", to="b", term=1)),  # not a snapshot
        ["not", "a", "message"],
    ],
    ids=["another-node", "heartbeat", "malformed"],
)
async def test_a_call_without_an_install_snapshot_for_this_node_is_refused(
    autojump_clock: trio.testing.MockClock, message: Any
) -> None:
    async with trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, unused_call, node_id="b")  # find_replica fails the test if called
        with pytest.raises(RemoteProtocolError):
            await snapshots.receive(P, SendSnapshot(message), {"data": PieceStream(b"")})
        assert snapshots.received == 0


@pytest.mark.parametrize("streams", [None, {}, {"other": PieceStream(b"")}], ids=["none", "empty", "misnamed"])
async def test_a_call_without_a_data_stream_is_refused(
    autojump_clock: trio.testing.MockClock, streams: Streams
) -> None:
    async with trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, unused_call, node_id="b")
        with pytest.raises(RemoteProtocolError, match="'data' stream"):
            await snapshots.receive(P, snap_op(), streams)


async def test_a_restarted_transfer_replaces_the_unfinished_one(autojump_clock: trio.testing.MockClock) -> None:
    data = await framed_snapshot()
    first = frames(data)[0]
    async with open_receiver() as receiver, trio.open_nursery() as nursery:
        send, recv = trio.testing.memory_stream_one_way_pair()
        returned = trio.Event()

        async def stalled() -> None:
            try:
                await receiver.snapshots.receive(P, snap_op(), {"data": recv})
            except RemoteProtocolError:
                pass  # (an incomplete stream may be refused as such: either way it must change nothing)
            returned.set()

        nursery.start_soon(stalled)
        await send.send_all(LEN.pack(len(first)) + first)  # one chunk, then the old stream stalls
        await settle()
        assert len(receiver.installs) == 1
        await receiver.snapshots.receive(P, snap_op(), {"data": PieceStream(data)})
        old, new = receiver.installs
        with pytest.raises(StorageError, match="aborted"):
            old.add_chunk(b"")
        await wait_until(lambda: receiver.replica.applied == N, within=5)
        assert dict(receiver.host.store.iterate(P)) == {f"k{i}": i for i in range(1, N + 1)}
        # The old stream ends: its (replaced) data goes nowhere and changes nothing.
        await send.aclose()
        with trio.fail_after(5):
            await returned.wait()
        await trio.sleep(1)
        assert receiver.replica.applied == N
        assert dict(receiver.host.store.iterate(P)) == {f"k{i}": i for i in range(1, N + 1)}


async def test_a_corrupt_chunk_is_refused_and_its_install_aborted(autojump_clock: trio.testing.MockClock) -> None:
    data = await framed_snapshot()
    first = frames(data)[0]
    corrupt = first[:-1] + bytes([first[-1] ^ 0xFF])  # the CRC no longer matches
    async with open_receiver() as receiver:
        with pytest.raises(RemoteProtocolError, match="checksum"):
            await receiver.snapshots.receive(P, snap_op(), {"data": PieceStream(LEN.pack(len(corrupt)) + corrupt)})
        [install] = receiver.installs
        with pytest.raises(StorageError, match="aborted"):
            install.add_chunk(b"")
        assert receiver.replica.applied == 0 and list(receiver.host.store.iterate(P)) == []


async def test_a_refused_offer_does_not_abort_the_next_transfer(autojump_clock: trio.testing.MockClock) -> None:
    """The core ignores a snapshot of a stale term (no Ready follows); a new transfer then begins, and an
    unrelated Ready arrives while it streams: that Ready must not drop the new transfer's staged data."""
    data = await framed_snapshot()
    first = frames(data)[0]
    async with open_receiver() as receiver, trio.open_nursery() as nursery:
        replica = receiver.replica
        replica.deliver(Heartbeat(frm="a", to="b", term=2, commit=0))
        await wait_until(lambda: replica.term == 2)
        await receiver.snapshots.receive(P, snap_op(term=1), {"data": PieceStream(data)})  # stale: ignored
        await trio.sleep(0.5)
        assert replica.applied == 0
        send, recv = trio.testing.memory_stream_one_way_pair()
        outcome: list[BaseException | None] = []

        async def transfer() -> None:
            try:
                await receiver.snapshots.receive(P, snap_op(term=2), {"data": recv})
                outcome.append(None)
            except StorageError as exc:
                outcome.append(exc)

        nursery.start_soon(transfer)
        await send.send_all(LEN.pack(len(first)) + first)
        await settle()
        replica.deliver(Heartbeat(frm="a", to="b", term=2, commit=0))  # a Ready (the heartbeat's answer)
        await settle()
        await send.send_all(data[len(first) + 4 :])
        await send.aclose()
        await wait_until(lambda: bool(outcome))
        assert outcome == [None]
        await wait_until(lambda: replica.applied == N, within=5)


# --- the whole path ------------------------------------------------------------------------------------------------


async def test_a_new_learner_behind_the_compacted_log_receives_a_snapshot(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots_module, "CHUNK_BYTES", 64)
    async with open_group(["a", "b"], voters=["a"], snapshot_every=4) as g:
        leader = await g.wait_leader()
        follower = g.replicas["b"]
        frames_sent: list[int] = []
        receivers: dict[str, Snapshots] = {}

        async def call(address: str, body: Any, *, streams: Mapping[str, AsyncIterator[bytes]]) -> None:
            _name, partition, args, _left = body
            send, recv = trio.testing.memory_stream_one_way_pair()
            count = 0

            async def pump() -> None:
                nonlocal count
                async for piece in streams["data"]:
                    count += 1
                    await send.send_all(piece)
                await send.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump)
                await receivers[address].receive(partition, SendSnapshot(*args), {"data": recv})
            frames_sent.append(count)

        async def find(name: str, to_inc: int) -> Replica:
            await trio.lowlevel.checkpoint()
            return follower

        sending = make_snapshots(g.nursery, call)
        receivers["b:1"] = make_snapshots(g.nursery, unused_call, node_id="b", find_replica=find)
        g.hosts["a"].on_snapshot = sending.start_send
        for i in range(10):
            await leader.propose(f"k{i}".encode())
        assert g.hosts["a"].store.first_index(P) > 2  # compacted
        await leader.propose_conf_change(ConfChange.add_learner("b"))
        await wait_until(lambda: follower.applied == leader.applied, within=10)
        assert sending.sent == 1 and receivers["b:1"].received == 1
        assert frames_sent and frames_sent[0] >= 3
        expected = dict(g.hosts["a"].store.iterate(P))
        assert len(expected) == 10
        assert dict(g.hosts["b"].store.iterate(P)) == expected
        assert "b" in follower.status().conf_state.learners
        await leader.propose(b"after")
        await wait_until(lambda: follower.applied == leader.applied)
        assert g.hosts["b"].store.get(P, "after") == leader.applied


async def test_the_node_wide_byte_rate_spaces_chunks_out(autojump_clock: trio.testing.MockClock) -> None:

    rate = snapshots_module.ByteRate(1_000_000)
    start = trio.current_time()
    done: list[float] = []

    async def send(n: int) -> None:
        for _ in range(n):
            await rate.take(500_000)
            done.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:  # two streams share one budget
        nursery.start_soon(send, 2)
        nursery.start_soon(send, 2)
    assert sorted(done) == pytest.approx([0.0, 0.5, 1.0, 1.5])


async def test_an_unbounded_byte_rate_never_waits(autojump_clock: trio.testing.MockClock) -> None:

    rate = snapshots_module.ByteRate(0)
    start = trio.current_time()
    for _ in range(100):
        await rate.take(10**9)
    assert trio.current_time() == start


async def test_receives_past_the_bound_wait_their_turn_and_past_as_many_more_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[float] = []
    release = trio.Event()

    async def slow_find(name: str, to_inc: int) -> Replica:
        started.append(trio.current_time())
        await release.wait()
        raise Unavailable("never mind")

    async with trio.open_nursery() as nursery:
        snapshots = Snapshots(
            node_id="b", call=unused_call, address_of=lambda n: None, find_replica=slow_find, nursery=nursery,
            timeout=5.0, max_receives=1,
        )  # fmt: skip

        async def receive() -> None:
            with pytest.raises(Unavailable):
                await snapshots.receive(P, snap_op("b"), {"data": PieceStream(b"")})

        nursery.start_soon(receive)
        await wait_until(lambda: len(started) == 1)
        nursery.start_soon(receive)  # waits for the slot, its stream unread
        await trio.sleep(1)
        assert len(started) == 1
        with pytest.raises(Overloaded, match="receiving 1 snapshots already and as many wait"):
            await snapshots.receive(P, snap_op("b"), {"data": PieceStream(b"")})
        release.set()  # the first ends: the waiting one gets its turn
        await wait_until(lambda: len(started) == 2)
    assert started[1] - started[0] == pytest.approx(1.0, abs=0.05)


async def test_a_stream_waits_for_a_receive_slot_no_longer_than_it_may_go_without_moving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        snapshots = Snapshots(
            node_id="b", call=unused_call, address_of=lambda n: None, find_replica=never_called, nursery=nursery,
            timeout=1.0, max_receives=1,
        )  # fmt: skip
        await snapshots._receiving.acquire()  # a long transfer, still moving, holds the only slot
        start = trio.current_time()
        with pytest.raises(Overloaded, match="for 6 s"):
            await snapshots.receive(P, snap_op("b"), {"data": PieceStream(b"")})
        assert trio.current_time() - start == pytest.approx(6.0)
        assert snapshots._waiting == 0


async def test_received_chunks_keep_to_the_node_wide_byte_budget(autojump_clock: trio.testing.MockClock) -> None:
    """The receiving side has its own budget (a joining node receives from every sender at once): taking in a
    chunk waits until the chunks before it fit in the budget, which holds the senders back through the
    stream's flow control."""
    data = await framed_snapshot()
    sizes = [len(chunk) for chunk in frames(data)]
    rate = 20.0
    async with open_receiver(bytes_per_second=rate) as receiver:
        start = trio.current_time()
        await receiver.snapshots.receive(P, snap_op(), {"data": PieceStream(data, piece=1000)})
        # The first chunk goes at once; each later one waits for the bytes before it. The whole takes longer
        # than a stream may go without a chunk (6 s): a slow transfer that moves on is never given up.
        took = trio.current_time() - start
        assert took == pytest.approx(sum(sizes[:-1]) / rate, abs=0.01) and took > 6
        await wait_until(lambda: receiver.replica.applied == N)
        assert receiver.snapshots.received == 1 and receiver.snapshots.bytes_received == sum(sizes)


async def test_an_offloaded_receive_writes_its_chunks_in_worker_threads(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In production beginning an install and each chunk's decoding and staging write run off the event loop
    (they write to the store, and can wait for its lock behind a synced write)."""
    threads: list[tuple[str, int]] = []
    add_chunk = SnapshotInstall.add_chunk

    def recording_add_chunk(install: SnapshotInstall, chunk: Any) -> bool:
        threads.append(("add", threading.get_ident()))
        return add_chunk(install, chunk)

    monkeypatch.setattr(SnapshotInstall, "add_chunk", recording_add_chunk)
    data = await framed_snapshot()
    # The clock would jump ahead (to the stream's idle deadline) whenever every task waits, as they do for a
    # worker thread: let it jump only after real time without anything to do.
    autojump_clock.autojump_threshold = 0.5
    async with open_receiver(offload=True) as receiver:
        store = receiver.host.store
        begin = store.begin_snapshot_install

        def recording_begin(partition: str) -> SnapshotInstall:
            threads.append(("begin", threading.get_ident()))
            return begin(partition)

        monkeypatch.setattr(store, "begin_snapshot_install", recording_begin)
        await receiver.snapshots.receive(P, snap_op(), {"data": PieceStream(data, piece=64)})
        await wait_until(lambda: receiver.replica.applied == N)
        assert dict(store.iterate(P)) == {f"k{i}": i for i in range(1, N + 1)}
    assert [what for what, _ in threads] == ["begin"] + ["add"] * len(frames(data))
    assert threading.get_ident() not in {thread for _, thread in threads}


async def test_a_peer_window_narrows_when_the_peer_refuses_and_widens_as_transfers_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    windows = snapshots_module.PeerWindows(3)
    holding: list[str] = []
    release = {name: trio.Event() for name in ("t1", "t2", "t3", "t4", "c1")}

    async def transfer(name: str, peer: str) -> None:
        async with windows.slot(peer):
            holding.append(name)
            await release[name].wait()
            holding.remove(name)

    async with trio.open_nursery() as nursery:
        for name in ("t1", "t2"):
            nursery.start_soon(transfer, name, "b")
        await settle()
        assert sorted(holding) == ["t1", "t2"] and windows.window("b") == 3
        windows.refused("b")  # a third transfer was refused while these two ran: two at once is what b takes
        assert windows.window("b") == 2
        nursery.start_soon(transfer, "t3", "b")
        nursery.start_soon(transfer, "c1", "c")  # another peer's window is its own
        await settle()
        assert sorted(holding) == ["c1", "t1", "t2"]
        release["t1"].set()  # t1 ends (not as a completed transfer): t3 takes its place
        await settle()
        assert sorted(holding) == ["c1", "t2", "t3"]
        windows.completed("b")  # one transfer b finished: not yet a window's worth
        nursery.start_soon(transfer, "t4", "b")
        await settle()
        assert windows.window("b") == 2 and sorted(holding) == ["c1", "t2", "t3"]
        windows.completed("b")  # two, as many as the window holds: room for one more
        await settle()
        assert windows.window("b") == 3 and sorted(holding) == ["c1", "t2", "t3", "t4"]
        for event in release.values():
            event.set()
    assert windows.window("b") == 3 and windows._peers == {}


async def test_a_refused_transfer_is_reported_and_narrows_that_peers_window(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def call(address: str, body: Any, *, streams: Mapping[str, AsyncIterator[bytes]]) -> None:
        calls.append(address)
        await trio.lowlevel.checkpoint()
        raise Overloaded("b is receiving 4 snapshots already; the leader retries later")

    async with open_sender(monkeypatch) as sender, trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, call)
        snapshots.start_send(sender.replica, request())
        await wait_until(lambda: bool(sender.reports))
        assert sender.reports == [("b", False)] and calls == ["b:1"]
        assert snapshots._windows.window("b") == 1 and snapshots._windows.window("c") == 4


class StallingStream(PieceStream):
    """Hands out ``data`` like ``PieceStream``, then waits for ever instead of ending."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self.data:
            await trio.sleep_forever()
        return await super().receive_some(max_bytes)


async def test_a_stream_that_stops_moving_is_given_up_and_its_install_aborted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server sets no deadline on a snapshot call (a big partition may take long at the byte rate): the
    receiver gives a stream up once no chunk arrived for SNAPSHOT_TIMEOUTS request timeouts (6 s here)."""
    data = await framed_snapshot()
    first = LEN.unpack_from(data)[0] + 4
    async with open_receiver() as receiver:
        start = trio.current_time()
        with pytest.raises(Timeout, match="moved no chunk for 6 s"):
            await receiver.snapshots.receive(P, snap_op(), {"data": StallingStream(data[: first + 10], piece=5)})
        assert trio.current_time() - start == pytest.approx(6.0)
        [install] = receiver.installs
        with pytest.raises(StorageError, match="aborted"):
            install.add_chunk(b"")
        assert receiver.snapshots.received == 0


async def test_a_long_transfer_that_keeps_moving_is_not_given_up(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots_module, "CHUNK_BYTES", 40)
    chunks: list[float] = []

    async def call(address: str, body: Any, *, streams: Mapping[str, AsyncIterator[bytes]]) -> None:
        async for _ in streams["data"]:
            chunks.append(trio.current_time())

    async with open_sender(monkeypatch) as sender, trio.open_nursery() as nursery:
        snapshots = make_snapshots(nursery, call, bytes_per_second=10)  # 40-byte chunks: one each 4 s
        start = trio.current_time()
        snapshots.start_send(sender.replica, request())
        await wait_until(lambda: bool(sender.reports))
        assert sender.reports == [("b", True)]
        assert len(chunks) >= 3 and chunks[-1] - start > 6  # longer in all than the 6 s without progress allowed
