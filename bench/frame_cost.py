"""CPU per Raft frame on each side of the wire, in one process, without sockets or an event loop.

Receiving: the frame codec turning the bytes of one node-to-node frame into its event (``decode``), and that plus
the outbox checking and decoding the Raft item it carries (``receive``; the replica's own work is left out).
Sending: the outbox queueing one message and the frame being encoded as the transport does (``send``). Two
frames: a leader's append of one 160-byte entry, and a follower's answer. Each figure is the best of many runs of
this thread's CPU time, so it moves less with the machine's load than wall-clock figures; compare two trees by
running this file against each (``--root``), alternating.

    .venv/bin/python bench/frame_cost.py                     # this tree
    .venv/bin/python bench/frame_cost.py --root /path/to/other/tree
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _best(fn: Callable[[], object], number: int, repeat: int) -> float:
    runs = timeit.repeat(fn, number=number, repeat=repeat, timer=time.thread_time)
    return min(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(ROOT), help="the tree whose borough to measure")
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    sys.path.insert(0, args.root)

    from borough.node.outbox import RaftOutbox
    from borough.raft.messages import AppendRequest, AppendResponse, Message, encode_message
    from borough.raft.records import Entry, EntryKind, NodeId
    from borough.wire import codec as c
    from borough.wire.records import PeerInfo

    limit = 8 << 20
    sender = c.FrameCodec(c.Role.DIALER, max_frame_size=limit)
    receiver = c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=limit)
    hello = c.Hello(cluster_id="x", node_id="n1", address="127.0.0.1:1", window=1 << 20, max_frame_size=limit)
    receiver.receive_data(sender.send(hello))
    receiver.next_event()
    leader, follower = NodeId("node-a"), NodeId("node-b")
    append = AppendRequest(
        frm=leader,
        to=follower,
        term=3,
        prev_index=100,
        prev_term=3,
        commit=99,
        entries=[Entry(term=3, index=101, kind=EntryKind.NORMAL, data=b"x" * 160)],
    )
    answer = AppendResponse(frm=follower, to=leader, term=3, index=101)
    peer = PeerInfo(node_id="node-a", address="127.0.0.1:1", cluster_id="x", is_client=False, role="node")

    def nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    print(f"borough from {args.root}; CPU per frame, best of {args.repeat} x {args.number}")
    for name, msg in (("append", append), ("answer", answer)):
        to = msg.to
        outbox = RaftOutbox(node_id=to, send=lambda _a, _m: True, address_of=lambda _n: "a", deliver=nothing)
        frame = c.encode_message_frame(["raft", [["p0", encode_message(msg), 5, 7]]], limit)

        def decode(frame: bytes = frame) -> object:
            receiver.receive_data(frame)
            return receiver.next_event()

        def receive(frame: bytes = frame, outbox: RaftOutbox = outbox) -> None:
            receiver.receive_data(frame)
            event = receiver.next_event()
            assert isinstance(event, c.Message)
            outbox.receive(peer, event.body)

        def send(msg: Message = msg, outbox: RaftOutbox = outbox) -> None:
            outbox.send("p0", [msg], lambda _to: (5, 7))
            queued, outbox._queued = outbox._queued, {}
            for frames in queued.values():
                for f in frames:
                    c.encode_message_frame(["raft", f.items], limit)

        figures = {
            what: _best(fn, args.number, args.repeat)
            for what, fn in (("decode", decode), ("receive", receive), ("send", send))
        }
        print(f"  {name:7s} " + "  ".join(f"{what} {us:6.2f} us" for what, us in figures.items()))


if __name__ == "__main__":
    main()
