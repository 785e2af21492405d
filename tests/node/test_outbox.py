"""``RaftOutbox``: Raft messages coalesced into one frame per peer on the way out, checked on the way in."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from borough.node.outbox import RaftOutbox
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    Message,
    VoteRequest,
    encode_message,
)
from borough.raft.records import Entry
from borough.wire.records import PeerInfo

PEER = PeerInfo(node_id="b", address="b:1", cluster_id="c1", is_client=False)
ADDRESSES = {"b": "b:1", "c": "c:1"}


def hb(to: str, term: int = 1, frm: str = "a") -> Heartbeat:
    return Heartbeat(frm=frm, to=to, term=term, commit=0, seq=term)


class Wire:
    """What the outbox sent (address, frame), and what it delivered (partition, message)."""

    def __init__(self, accept: bool = True) -> None:
        self.frames: list[tuple[str, Any]] = []
        self.delivered: list[tuple[str, Message]] = []
        self.incarnations: list[tuple[int, int]] = []
        self.members: list[bool] = []
        self.accept = accept

    def send(self, address: str, frame: Any) -> bool:
        self.frames.append((address, frame))
        return self.accept

    def deliver(self, partition: str, message: Message, to_inc: int, frm_inc: int, *, member: bool) -> None:
        self.delivered.append((partition, message))
        self.incarnations.append((to_inc, frm_inc))
        self.members.append(member)


def unstamped(to: str) -> tuple[int, int]:
    return 0, 0


def make_outbox(wire: Wire, node_id: str = "a", addresses: dict[str, str] | None = None) -> RaftOutbox:
    known = ADDRESSES if addresses is None else addresses
    return RaftOutbox(node_id=node_id, send=wire.send, address_of=known.get, deliver=wire.deliver)


# --- outbound ------------------------------------------------------------------------------------------------------


def test_the_messages_of_every_partition_for_one_peer_leave_as_one_frame() -> None:
    wire = Wire()
    outbox = make_outbox(wire)
    append = AppendRequest(frm="a", to="b", term=1, prev_index=0, prev_term=0, commit=0,
                           entries=[Entry(term=1, index=1, data=b"x")])  # fmt: skip
    vote = VoteRequest(frm="a", to="b", term=2, last_index=1, last_term=1)
    outbox.send("p1", [hb("b"), hb("c")], lambda to: {"b": (2, 1), "c": (0, 1)}[to])
    outbox.send("p2", [append], unstamped)
    outbox.send("p3", [vote], unstamped)
    assert wire.frames == []  # nothing leaves before the flush
    outbox.flush()
    assert sorted(wire.frames, key=lambda f: f[0]) == [
        (
            "b:1",
            [
                "raft",
                [
                    ["p1", encode_message(hb("b")), 2, 1],  # each with the incarnations of recipient and sender
                    ["p2", encode_message(append), 0, 0],
                    ["p3", encode_message(vote), 0, 0],
                ],
            ],
        ),
        ("c:1", ["raft", [["p1", encode_message(hb("c")), 0, 1]]]),
    ]
    assert (outbox.frames_sent, outbox.messages_sent) == (2, 4)
    outbox.flush()
    assert len(wire.frames) == 2  # the queue was emptied


def test_a_peer_without_a_known_address_is_skipped_and_not_counted() -> None:
    wire = Wire()
    outbox = make_outbox(wire, addresses={"b": "b:1"})
    outbox.send("p", [hb("b"), hb("z")], unstamped)
    outbox.flush()
    assert [address for address, _ in wire.frames] == ["b:1"]
    assert (outbox.frames_sent, outbox.messages_sent) == (1, 1)
    outbox.flush()
    assert len(wire.frames) == 1  # dropped, not kept for later: Raft retransmits


def test_a_frame_the_transport_refused_is_not_counted() -> None:
    wire = Wire(accept=False)
    outbox = make_outbox(wire)
    outbox.send("p", [hb("b"), hb("b", term=2)], unstamped)
    outbox.flush()
    assert len(wire.frames) == 1
    assert (outbox.frames_sent, outbox.messages_sent) == (0, 0)


async def test_the_flusher_coalesces_what_every_task_sent_in_one_round(autojump_clock: trio.testing.MockClock) -> None:
    wire = Wire()
    outbox = make_outbox(wire)

    async def replica(partition: str) -> None:
        outbox.send(partition, [hb("b")], unstamped)
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.flush_forever)
        await trio.testing.wait_all_tasks_blocked()
        assert wire.frames == []  # idle: nothing to send
        for partition in ("p1", "p2", "p3"):
            nursery.start_soon(replica, partition)
        await trio.testing.wait_all_tasks_blocked()
        assert len(wire.frames) == 1
        [(address, [_, items])] = wire.frames
        assert address == "b:1" and sorted(item[0] for item in items) == ["p1", "p2", "p3"]
        outbox.send("p4", [hb("c")], unstamped)  # a later round: a frame of its own
        await trio.testing.wait_all_tasks_blocked()
        assert [address for address, _ in wire.frames] == ["b:1", "c:1"]
        assert (outbox.frames_sent, outbox.messages_sent) == (2, 4)
        nursery.cancel_scope.cancel()


# --- inbound -------------------------------------------------------------------------------------------------------


def test_frames_from_a_peer_are_delivered_to_their_partitions_in_order() -> None:
    sender_wire, wire = Wire(), Wire()
    sender = make_outbox(sender_wire, node_id="a")
    receiver = make_outbox(wire, node_id="b")
    messages = [hb("b"), AppendResponse(frm="a", to="b", term=1, index=3), hb("b", term=2)]
    sender.send("p1", messages[:2], unstamped)
    sender.send("p2", messages[2:], unstamped)
    sender.flush()
    [(_, frame)] = sender_wire.frames
    receiver.receive(PEER, frame)
    assert wire.delivered == [("p1", messages[0]), ("p1", messages[1]), ("p2", messages[2])]
    assert receiver.dropped_inbound == 0


@pytest.mark.parametrize(
    "frame",
    [None, "raft", ["raft"], ["raft", [], "extra"], ["swim", []], ["raft", ("p", [])], {"raft": []}],
    ids=["none", "string", "short", "long", "other-kind", "items-not-a-list", "dict"],
)
def test_a_malformed_frame_is_dropped_and_counted(frame: Any) -> None:
    wire = Wire()
    outbox = make_outbox(wire, node_id="b")
    outbox.receive(PEER, frame)
    assert wire.delivered == []
    assert outbox.dropped_inbound == 1


def test_malformed_items_are_dropped_and_the_good_ones_delivered() -> None:
    wire = Wire()
    outbox = make_outbox(wire, node_id="b")
    good1, good2, good3 = hb("b", term=1), hb("b", term=2), hb("b", term=3)
    undecodable = encode_message(good1)[:-1]  # a heartbeat with a field missing
    wrong_type = encode_message(good1)
    wrong_type[3] = "1"  # a term that is not an integer
    frame = [
        "raft",
        [
            ["p", encode_message(good1), 0, 0],
            "not a list",
            ["p"],
            ["p", encode_message(good1)],
            ["p", encode_message(good1), 0, 0, "extra"],
            ["p", encode_message(good1), -1, 0],
            ["p", encode_message(good1), 0, 1 << 63],
            ["p", encode_message(good1), True, 0],
            [7, encode_message(good1), 0, 0],
            ["", encode_message(good1), 0, 0],
            ["p", undecodable, 0, 0],
            ["q", encode_message(good2), 3, 2],
            ["p", wrong_type, 0, 0],
            ["p", [99, "a", "b", 1], 0, 0],
            ["r", encode_message(good3), 0, 0],
        ],
    ]
    outbox.receive(PEER, frame)
    assert wire.delivered == [("p", good1), ("q", good2), ("r", good3)]
    assert wire.incarnations == [(0, 0), (3, 2), (0, 0)]
    assert outbox.dropped_inbound == 12


async def test_dropped_messages_are_logged_at_most_once_every_ten_seconds(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile peer resending frames of a hundred malformed items must not become a hundred log lines a frame
    (the logging alone starved the event loop under the live-port fuzzer): they are counted, and reported once a
    ``LOG_EVERY`` with how many were not."""
    outbox = make_outbox(Wire(), node_id="b")
    frame = ["raft", [["p"]] * 100]
    with caplog.at_level(logging.WARNING, logger="borough.node.outbox"):
        for _ in range(50):
            outbox.receive(PEER, frame)
            await trio.sleep(0.1)
        await trio.sleep(10)
        outbox.receive(PEER, frame)
    assert outbox.dropped_inbound == 5100
    assert len(caplog.records) == 2
    assert "4999 more dropped since the last report" in caplog.records[1].getMessage()


def test_a_message_for_another_node_id_is_not_delivered() -> None:
    wire = Wire()
    outbox = make_outbox(wire, node_id="b")
    earlier = hb("b-old")  # meant for an earlier incarnation of this address
    outbox.receive(PEER, ["raft", [["p", encode_message(earlier), 0, 0], ["p", encode_message(hb("b")), 0, 0]]])
    assert wire.delivered == [("p", hb("b"))]
    assert outbox.dropped_inbound == 0  # well formed: not counted as malformed


def test_a_non_member_speaks_for_the_one_group_in_its_own_name_only_and_is_delivered_as_a_non_member() -> None:
    """``_system`` takes Raft traffic from node ids the member table does not list (``roles``): such a peer's
    messages of other groups, and those in another node's name (a member's id: it would be believed about the
    member's term, vote and incarnation), are not delivered; the rest are, marked as a non-member's."""
    wire = Wire()
    outbox = make_outbox(wire, node_id="b")
    stranger = PeerInfo(node_id="x", address="x:1", cluster_id="c1", is_client=False)
    own, forged, other = hb("b", frm="x"), hb("b", frm="a"), hb("b", frm="x", term=2)
    items = [["_system", encode_message(own), 1, 2], ["_system", encode_message(forged), 0, 0]]
    outbox.receive(stranger, ["raft", [*items, ["p", encode_message(other), 0, 0]]], only="_system")
    assert wire.delivered == [("_system", own)] and wire.members == [False]
    outbox.receive(PEER, ["raft", [["_system", encode_message(forged), 0, 0]]])
    assert wire.delivered[1:] == [("_system", forged)] and wire.members[1:] == [True]


def test_appends_of_many_groups_leave_in_frames_under_the_budget_and_a_refused_frame_is_dropped() -> None:
    from borough.errors import LocalProtocolError
    from borough.ids import NodeId
    from borough.node.outbox import RaftOutbox
    from borough.raft.messages import AppendRequest
    from borough.raft.records import Entry

    sent: list[tuple[str, Any]] = []

    def send(address: str, frame: Any) -> bool:
        if len(frame[1]) > 3:
            raise LocalProtocolError("over the frame limit")
        sent.append((address, frame))
        return True

    outbox = RaftOutbox(
        node_id="a", send=send, address_of=lambda n: f"{n}:1", deliver=Wire().deliver, frame_budget=2500
    )
    big = [Entry(term=1, index=i, data=b"x" * 1000) for i in (1, 2)]  # about 2 KB of appends per group
    for g in range(4):
        msg = AppendRequest(frm=NodeId("a"), to=NodeId("b"), term=1, prev_index=0, prev_term=0, commit=0, entries=big)
        outbox.send(f"g{g}", [msg], unstamped)
    outbox.flush()
    assert [len(frame[1]) for _, frame in sent] == [1, 1, 1, 1]  # one group's appends per frame
    # Small messages still share one frame; one the wire refuses is dropped and counted, not raised.
    small = AppendRequest(frm=NodeId("a"), to=NodeId("b"), term=1, prev_index=0, prev_term=0, commit=0)
    for g in range(5):
        outbox.send(f"g{g}", [small], unstamped)
    sent.clear()
    outbox.flush()
    assert sent == [] and outbox.dropped_outbound == 5


def test_the_heartbeats_of_thousands_of_groups_leave_in_frames_the_receiver_accepts() -> None:
    """Thousands of groups woken at once (a node came back, a mass fail-over) must not make a frame over the
    wire's item limit: the receiver would refuse it and close the connection (seen at 10,000 partitions)."""
    import cbor2

    from borough.cbor_budget import check_budget
    from borough.node.outbox import FRAME_ITEMS
    from borough.wire.settings import WireSettings

    wire = Wire()
    outbox = make_outbox(wire)
    for g in range(8000):
        outbox.send(f"partition-{g:05d}", [hb("b", term=g + 1)], lambda to: (7, 3))
    big = [Entry(term=1, index=i, data=b"") for i in range(1, 3001)]  # one append of many tiny entries
    outbox.send("wide", [AppendRequest(frm="a", to="b", term=1, prev_index=0, prev_term=0, commit=0, entries=big)],
                unstamped)  # fmt: skip
    outbox.flush()
    counts = [
        check_budget(cbor2.dumps(frame), max_items=1 << 30, max_depth=64, max_composite_keys=0)
        for _, frame in wire.frames
    ]
    assert len(counts) > 1 and max(counts) <= FRAME_ITEMS < WireSettings().max_frame_items
    assert sum(len(frame[1]) for _, frame in wire.frames) == 8001  # every message left, none twice
