"""Frames for the live-port fuzzer (``test_live_fuzz.py``): valid frames of every kind a node takes, and the
mutations a hostile peer applies to them.

Everything here is pure (no trio, no sockets) and driven by one ``random.Random``, so the frames a worker sends
are a function of its seed. Valid frames come from the project's own encoders (the codec's HELLO, ``encode_call``
of real operations, Raft messages in the outbox's ``["raft", [[partition, message, to_inc, frm_inc]]]`` frame,
SWIM messages in ``["swim", message]``), then are mutated at two levels:

- structure (``Mutator.mutate_value``): a field replaced by a huge integer, another type, a deep nest or a long
  string; fields swapped, dropped, duplicated or added. The result is still CBOR, so a peer that frames it
  properly gets it past the codec to the node's own validators.
- bytes (``Mutator.mutate_bytes`` and ``Mutator.hostile_bytes``): bit flips, truncation, garbage, lengths over the
  frame limit, zero lengths, deep nesting and items the decoder must refuse, repeated frames.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Final

import attrs
import cbor2

from borough.node.protocol import Call as RequestOp
from borough.node.protocol import (
    FindLeader,
    Get,
    Hosted,
    Info,
    Join,
    ListPartitions,
    Locate,
    Members,
    Scan,
    SendSnapshot,
    Write,
    encode_call,
)
from borough.node.records import Delete, Put, ScanRange
from borough.raft import messages as raft
from borough.raft.records import ConfState, Entry, SnapshotMeta
from borough.ring import messages as swim
from borough.wire import codec as c

MAX_FRAME: Final = 8 * 1024 * 1024  # the nodes' default max_frame_size

#: Integers at and around every bound a validator might check, and far past them.
HUGE_INTS: Final = (
    -1, 0, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**200, -(2**63),
    -(2**64) - 1, -(2**300),
)  # fmt: skip


@attrs.frozen(kw_only=True)
class Seeds:
    """Valid payloads to start from: a HELLO map, call bodies, and MESSAGE bodies (Raft and SWIM frames)."""

    hello: dict[str, Any]
    calls: tuple[list[Any], ...]
    messages: tuple[list[Any], ...]


def hello_payload(*, node_id: str | None, address: str | None, cluster_id: str | None) -> dict[str, Any]:
    """The HELLO map our own codec sends for this identity (taken from its encoded frame)."""
    codec = c.FrameCodec(c.Role.DIALER, max_frame_size=MAX_FRAME)
    frame = codec.send(
        c.Hello(cluster_id=cluster_id, node_id=node_id, address=address, window=256 * 1024, max_frame_size=MAX_FRAME)
    )
    sid, kind, payload = cbor2.loads(frame[4:])
    assert (sid, kind) == (0, c.Kind.HELLO) and isinstance(payload, dict)
    return payload


def make_seeds(
    *,
    me: str | None,
    members: Sequence[tuple[str, str]],
    partitions: Sequence[str],
    junk_partitions: Sequence[str],
    junk_keys: Sequence[str],
    to: str,
    address: str | None = None,
    cluster_id: str | None = None,
) -> Seeds:
    """Valid frames a peer calling itself ``me`` (None: a client) could send to member ``to`` of the cluster of
    ``members`` ((node id, address) pairs). Writes name only ``junk_keys`` (in ``partitions`` and
    ``junk_partitions``), so a workload on other keys is not touched by them; nothing marks a member dead or
    leaving. The HELLO claims ``address`` (a node's SWIM frames are taken only from a peer that claims one)."""
    ids = [node_id for node_id, _ in members]
    sender = me or "mallory"
    value = cbor2.dumps({"evil": 1})
    all_parts = [*partitions, *junk_partitions, "_system"]
    calls: list[list[Any]] = []
    for p in all_parts:
        key = junk_keys[len(calls) % len(junk_keys)]
        jp = junk_partitions[len(calls) % len(junk_partitions)]
        calls += [
            encode_call(p, Get(key, "linearizable"), 5.0),
            encode_call(p, Get(key, "stale"), None),
            encode_call(p, Scan(ScanRange(gte=key, lt=key + "~"), 10, "linearizable"), 5.0),
            encode_call(p, Info(), 5.0),
            encode_call(p, FindLeader(), 5.0),
            encode_call(jp, Write((Put(key, value), Delete(key + "-d"))), 5.0),
            encode_call(p, RequestOp({"op": "evil", "n": 1}), 5.0),
        ]
    target = next((node_id for node_id in ids if node_id != me), "n0")  # a member other than the sender
    snapshot = raft.InstallSnapshot(
        frm=target, to=target, term=7, meta=SnapshotMeta(index=99, term=6, conf_state=ConfState(voters=tuple(ids)))
    )
    calls += [
        encode_call("_system", Join(target, "127.0.0.1:1"), 5.0),  # on another member's behalf: refused
        encode_call("_system", Join("x" * 40, "127.0.0.1:2"), 5.0),  # not the sender's own id: refused
        encode_call("_system", Locate(junk_partitions[0], False), 5.0),
        encode_call("_system", Members(), 5.0),
        encode_call("_system", ListPartitions(None, 100), 5.0),
        encode_call("_system", Hosted(), 5.0),
        encode_call(partitions[0], SendSnapshot(raft.encode_message(snapshot), 1, 2), 5.0),
    ]
    messages: list[list[Any]] = []
    for node_id in [to]:
        entry = Entry(term=5, index=11, data=cbor2.dumps([["put", junk_keys[0], value]]))
        raft_msgs: list[raft.Message] = [
            raft.AppendRequest(frm=sender, to=node_id, term=5, prev_index=10, prev_term=4, commit=10, entries=[entry]),
            raft.AppendResponse(frm=sender, to=node_id, term=5, index=10, reject=True, hint_index=3, hint_term=2),
            raft.Heartbeat(frm=sender, to=node_id, term=5, commit=3, seq=9),
            raft.HeartbeatResponse(frm=sender, to=node_id, term=5, seq=9),
            raft.VoteRequest(frm=sender, to=node_id, term=6, last_index=100, last_term=5, pre_vote=True),
            raft.VoteResponse(frm=sender, to=node_id, term=6, pre_vote=True, reject=False),
            raft.TimeoutNow(frm=sender, to=node_id, term=5),
            raft.ReadIndexRequest(frm=sender, to=node_id, term=5, context=b"ctx"),
            raft.ReadIndexResponse(frm=sender, to=node_id, term=5, index=4, context=b"ctx"),
        ]
        items = [[p, raft.encode_message(m), 1, 2] for p in all_parts for m in raft_msgs]
        messages += [["raft", items[i : i + 4]] for i in range(0, len(items), 4)]
        update = swim.Update(node_id=node_id, incarnation=3, liveness=swim.Liveness.ALIVE)
        head = {"seq": 5, "source": sender, "source_incarnation": 1, "table_version": 4, "updates": (update,)}
        swim_msgs: list[swim.SwimMessage] = [
            swim.Ping(**head, target=node_id),
            swim.Ack(**head),
            swim.PingReq(**head, target=node_id, target_address="127.0.0.1:1"),
            swim.Nack(**head),
            swim.Gossip(**head),
            swim.Sync(**head, reply=False),
        ]
        messages += [["swim", swim.encode_message(m)] for m in swim_msgs]
    hello = hello_payload(node_id=me, address=address, cluster_id=cluster_id)
    return Seeds(hello=hello, calls=tuple(calls), messages=tuple(messages))


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def encode_frame(sid: int, kind: int, payload: Any) -> bytes:
    """A frame as the codec would lay it out (no size check: a mutated frame may be over the limit on purpose)."""
    return frame(cbor2.dumps([sid, kind, payload]))


def _deep(depth: int, leaf: bytes, rng: random.Random) -> bytes:
    opener = rng.choice([b"\x81", b"\x9f", b"\xa1\x00"])  # [x], indefinite [x ...], {0: x}
    closer = b"\xff" if opener == b"\x9f" else b""
    return opener * depth + leaf + closer * depth


class Mutator:
    """Mutations drawn from ``rng``; every method returns a new value and changes nothing it is given."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # ------------------------------------------------------------------ structure

    def wrong_value(self) -> Any:
        """A value of a random type, shape or size that no field of any frame expects."""
        r = self.rng
        choice = r.randrange(12)
        if choice == 0:
            return r.choice(HUGE_INTS)
        if choice == 1:
            return r.choice([float("nan"), float("inf"), -0.0, 1e308, 0.5])
        if choice == 2:
            return r.choice([None, True, False])
        if choice == 3:
            return "".join(chr(r.randrange(32, 0x3000)) for _ in range(r.randrange(0, 40)))
        if choice == 4:
            return "A" * r.choice([1025, 70_000, 300_000])
        if choice == 5:
            return r.randbytes(r.choice([0, 1, 8, 1000, 200_000]))
        if choice == 6:
            nest: Any = r.choice([0, "x", b""])
            for _ in range(r.choice([10, 63, 64, 65, 200])):
                nest = [nest]
            return nest
        if choice == 7:
            return {r.choice(["op", "key", 1, b"k", "magic"]): r.choice(HUGE_INTS) for _ in range(r.randrange(4))}
        if choice == 8:
            return [r.choice(HUGE_INTS) for _ in range(r.choice([0, 3, 17, 5000]))]
        if choice == 9:
            return list(range(r.choice([1000, 60_000])))  # many items in one frame
        if choice == 10:
            return {i: i for i in range(r.choice([5, 2000]))}
        return r.choice(["", "_system", "raft", "swim", "put", "del", "sys.join", "linearizable", "stale"])

    def mutate_value(self, obj: Any, rounds: int | None = None) -> Any:
        """``obj`` with 1-3 structural mutations at random places (lists and maps are copied on the way down)."""
        for _ in range(rounds if rounds is not None else self.rng.choice([1, 1, 1, 2, 3])):
            obj = self._mutate_once(obj)
        return obj

    def _mutate_once(self, obj: Any) -> Any:
        r = self.rng
        # Descend into a random child with probability growing with the container's size.
        if isinstance(obj, list) and obj and r.random() < 0.75:
            i = r.randrange(len(obj))
            copy = list(obj)
            copy[i] = self._mutate_once(copy[i])
            return copy
        if isinstance(obj, dict) and obj and r.random() < 0.7:
            key = r.choice(list(obj))
            copy_map = dict(obj)
            copy_map[key] = self._mutate_once(copy_map[key])
            return copy_map
        return self._mutate_here(obj)

    def _mutate_here(self, obj: Any) -> Any:
        r = self.rng
        if isinstance(obj, list) and obj:
            op = r.randrange(6)
            copy = list(obj)
            if op == 0 and len(copy) > 1:  # swap two fields
                i, j = r.sample(range(len(copy)), 2)
                copy[i], copy[j] = copy[j], copy[i]
                return copy
            if op == 1:  # drop a field
                del copy[r.randrange(len(copy))]
                return copy
            if op == 2:  # duplicate a field
                i = r.randrange(len(copy))
                copy.insert(i, copy[i])
                return copy
            if op == 3:  # an extra field
                copy.append(self.wrong_value())
                return copy
            if op == 4:  # repeat the whole list many times over (up to about 1 MiB encoded)
                size = len(cbor2.dumps(copy))
                return copy * max(2, min(r.choice([2, 50, 2000]), (1 << 20) // max(1, size)))
            return self.wrong_value()
        if isinstance(obj, dict) and obj:
            copy_map = dict(obj)
            op = r.randrange(4)
            if op == 0:
                del copy_map[r.choice(list(copy_map))]
                return copy_map
            if op == 1:
                copy_map[r.choice(["magic", "version", "node", "x", 0])] = self.wrong_value()
                return copy_map
            if op == 2:
                a, b = r.choice(list(copy_map)), r.choice(list(copy_map))
                copy_map[a], copy_map[b] = copy_map[b], copy_map[a]
                return copy_map
            return self.wrong_value()
        if type(obj) is int:
            return r.choice([obj + 1, obj - 1, -obj, obj ^ (1 << r.randrange(70)), r.choice(HUGE_INTS)])
        if type(obj) is str and obj and r.random() < 0.5:
            data = bytearray(obj.encode())
            data[r.randrange(len(data))] ^= 1 << r.randrange(8)
            return data.decode(errors="replace")
        if type(obj) is bytes and obj and r.random() < 0.5:
            return self.mutate_bytes(obj, frame_prefix=False)
        return self.wrong_value()

    # ------------------------------------------------------------------ bytes

    def mutate_bytes(self, data: bytes, *, frame_prefix: bool = True) -> bytes:
        """``data`` with bit flips, a truncation, an insertion or a splice; with ``frame_prefix`` the 4-byte length
        is left alone half the time (so the node reads the mangled body as one frame)."""
        r = self.rng
        start = 4 if frame_prefix and r.random() < 0.5 else 0
        buf = bytearray(data)
        if len(buf) <= start:
            return bytes(buf) + r.randbytes(4)
        op = r.randrange(5)
        if op == 0:
            for _ in range(r.choice([1, 1, 2, 4, 8])):
                buf[r.randrange(start, len(buf))] ^= 1 << r.randrange(8)
        elif op == 1:
            del buf[r.randrange(start, len(buf)) :]
        elif op == 2:
            at = r.randrange(start, len(buf) + 1)
            buf[at:at] = r.randbytes(r.randrange(1, 16))
        elif op == 3:
            at = r.randrange(start, len(buf))
            buf[at] = r.choice([0x00, 0x1B, 0x3B, 0x5B, 0x7B, 0x9B, 0xBB, 0xC2, 0xD8, 0xDF, 0xFF, 0x9F, 0xBF])
        else:
            i, j = sorted(r.sample(range(start, len(buf) + 1), 2)) if len(buf) - start >= 2 else (start, len(buf))
            buf[i:j] = buf[i:j][::-1]
        if frame_prefix and start == 4 and op in (1, 2):
            buf[:4] = (len(buf) - 4).to_bytes(4, "big")  # keep the prefix honest about the mangled body
        return bytes(buf)

    def hostile_bytes(self, valid: bytes) -> list[bytes]:
        """Chunks for one attack beside mutating a frame: repeats, oversize or zero lengths, garbage, deep
        nesting, CBOR the decoder must refuse, or a valid frame dripped a byte at a time."""
        r = self.rng
        choice = r.randrange(9)
        if choice == 0:
            return [valid * r.choice([2, 10, 100])]
        if choice == 1:
            return [r.choice([MAX_FRAME + 1, 2**31 - 1, 2**32 - 1]).to_bytes(4, "big") + r.randbytes(64)]
        if choice == 2:
            return [b"\x00\x00\x00\x00" + valid]
        if choice == 3:
            return [r.randbytes(r.choice([1, 3, 100, 5000]))]
        if choice == 4:
            depth = r.choice([65, 1000, 100_000])
            return [frame(b"\x83\x00\x09" + _deep(depth, b"\x00", r))]
        if choice == 5:
            payload = r.choice(
                [
                    b"\xc2\x5a\x00\x10\x00\x00" + r.randbytes(1 << 20),  # a 1 MiB bignum
                    b"\xd8\x1e\x82\x00\x01",  # tag 30 (a fraction)
                    b"\xd9\xff\xff\x00",  # an unknown tag
                    b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # a byte string claiming 2**64 bytes
                    b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00",  # an array claiming 2**32 items
                    b"\x7f\x61a\x41b\xff",  # a text string with a byte-string chunk
                    b"\xa2\x00\x00\x00\x01",  # a map with a repeated key
                    b"\xf9\x7e\x00",  # a half-precision NaN
                    b"\x1f",  # reserved additional information
                ]
            )
            return [frame(b"\x83\x00\x09" + payload)]
        if choice == 6:
            return [valid[i : i + 1] for i in range(min(len(valid), 64))] + [valid[64:]]
        if choice == 7:
            return [valid[:-1]]  # one byte short: the node waits for the rest (then the next frame misaligns it)
        return [encode_frame(r.choice([0, 1, 2, 3, 2**62, 2**64 - 1]), r.randrange(-2, 20), self.wrong_value())]
