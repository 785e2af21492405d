"""The hostile side of the live-port fuzzer (``test_live_fuzz.py``), run as its own process so that building and
sending mutated frames never starves the legitimate client the test measures::

    python -m security.hostile_peers '{"seed": 1, "seconds": 15, "members": [["id", "127.0.0.1:7000"], ...]}'

(from ``tests/``, with the repository root on ``PYTHONPATH``). It runs for ``seconds``, then prints its
counters as one JSON line and exits 0; any other exit is a bug in the fuzzer.

Peers: ``raw`` TCP connections, each sending a real HELLO (rarely mutated) then shots of valid frames mutated by
``fuzz_frames.Mutator``, reconnecting whenever the node closes the connection; and ``transport`` peers using the
project's own ``Transport`` (which reconnects by itself), whose properly framed messages and calls carry
structurally mutated payloads, so they reach the node's validators past the codec. Identities: clients and
made-up node ids (one claiming a member's address); with ``"insiders": true``, real members' node ids too.
"""

from __future__ import annotations

import collections
import json
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from borough.errors import BoroughError
from borough.wire import codec as c
from borough.wire.network import TcpNetwork
from borough.wire.transport import Identity, open_transport

from .fuzz_frames import Mutator, Seeds, encode_frame, make_seeds

PARTITIONS = ("lf-0", "lf-1", "lf-2")  # the workload's partitions (the test writes only keys of KEYS there)
JUNK_PARTITIONS = ("hx-0", "hx-1")  # hostile writes go only here, or to junk keys of the workload's partitions
JUNK_KEYS = ("zz-hostile-0", "zz-hostile-1")


@attrs.define
class Stats:
    connections: int = 0
    frames: int = 0
    bytes: int = 0
    closed_mid_write: int = 0  # the node closed the connection while we were writing
    stalled: int = 0  # a write that did not finish in 10 s (the node stopped reading)
    messages: int = 0
    calls: int = 0
    call_outcomes: collections.Counter[str] = attrs.field(factory=collections.Counter)


class RawPeer:
    """One hostile TCP connection at a time to ``address``: a HELLO, then shots of mutated frames until the node
    closes it or the shots run out; then it reconnects."""

    def __init__(self, rng: random.Random, address: str, seeds: Seeds, stats: Stats) -> None:
        self.rng = rng
        self.mutator = Mutator(rng)
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.seeds = seeds
        self.stats = stats

    async def run_forever(self) -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError:
                await trio.sleep(0.05)  # the node's backlog is full: back off as any client would
                continue
            self.stats.connections += 1
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(self._drain, stream)
                try:
                    await self._attack(stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self.stats.closed_mid_write += 1
                except trio.TooSlowError:
                    self.stats.stalled += 1
                nursery.cancel_scope.cancel()

    async def _drain(self, stream: trio.SocketStream) -> None:
        # Read what the node says (PINGs, replies, GOAWAY) so it never waits on us; stop at EOF.
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _send(self, stream: trio.SocketStream, chunks: list[bytes]) -> None:
        for chunk in chunks:
            with trio.fail_after(10):
                await stream.send_all(chunk)
            self.stats.frames += 1
            self.stats.bytes += len(chunk)

    async def _attack(self, stream: trio.SocketStream) -> None:
        r, m = self.rng, self.mutator
        hello = self.seeds.hello
        if r.random() < 0.05:
            hello = m.mutate_value(hello)
        hello_frame = encode_frame(0, c.Kind.HELLO, hello)
        if r.random() < 0.03:
            hello_frame = m.mutate_bytes(hello_frame)
        await self._send(stream, [hello_frame])
        if r.random() < 0.03:  # random garbage right after a valid HELLO
            await self._send(stream, [r.randbytes(r.choice([1, 7, 4096]))])
        next_sid = 1
        for _ in range(r.choice([1, 5, 20, 100, 400])):
            kind, sid, payload = self._valid_frame(next_sid)
            if kind is c.Kind.CALL:
                next_sid += 2
            roll = r.random()
            if roll < 0.25:
                chunks = [encode_frame(sid, kind, payload)]
            elif roll < 0.8:
                # The frame's contents mutated, its shape kept: a call's body, a message, a control payload.
                if kind is c.Kind.CALL:
                    payload = [m.mutate_value(payload[0]), payload[1]]
                else:
                    payload = m.mutate_value(payload)
                chunks = [encode_frame(sid, kind, payload)]
            elif roll < 0.85:
                mutated = m.mutate_value([sid, kind, payload])
                chunks = [encode_frame(*mutated)] if isinstance(mutated, list) and len(mutated) == 3 else []
            elif roll < 0.93:
                chunks = [m.mutate_bytes(encode_frame(sid, kind, payload))]
            else:
                chunks = m.hostile_bytes(encode_frame(sid, kind, payload))
            await self._send(stream, chunks)
            await trio.sleep(r.random() * 0.004)  # pace the shots: a flood is a different test

    def _valid_frame(self, next_sid: int) -> tuple[c.Kind, int, Any]:
        r = self.rng
        roll = r.random()
        if roll < 0.45:
            return c.Kind.CALL, next_sid, [r.choice(self.seeds.calls), {}]
        if roll < 0.85:
            return c.Kind.MESSAGE, 0, r.choice(self.seeds.messages)
        last = max(1, next_sid - 2)
        return r.choice(
            [
                (c.Kind.PING, 0, r.randrange(2**64)),
                (c.Kind.PONG, 0, r.randrange(2**64)),
                (c.Kind.WINDOW, last, 65536),
                (c.Kind.DATA, last, r.randbytes(100)),
                (c.Kind.END, last, None),
                (c.Kind.RESET, last, {"type": "Timeout", "message": "evil", "fields": {}}),
                (c.Kind.STOP, last, None),
                (c.Kind.OPEN, next_sid, {"name": "evil"}),
                (c.Kind.GOAWAY, 0, "bye"),
                (c.Kind.HELLO, 0, self.seeds.hello),
            ]
        )


async def _random_bytes(rng: random.Random, n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield rng.randbytes(rng.choice([1, 1000, 70_000]))


async def transport_peer(rng: random.Random, identity: Identity, seeds: dict[str, Seeds], stats: Stats) -> None:
    """Properly framed, structurally mutated messages and calls (some with a stream attached) to every node."""
    m = Mutator(rng)
    async with open_transport(TcpNetwork(), identity=identity, rng=random.Random(rng.getrandbits(64))) as transport:
        while True:
            address = rng.choice(list(seeds))
            if rng.random() < 0.6:
                body = rng.choice(seeds[address].messages)
                if rng.random() < 0.85:
                    body = m.mutate_value(body)
                try:
                    transport.send(address, body)
                    stats.messages += 1
                except BoroughError as exc:  # over the frame limit: refused before sending
                    stats.call_outcomes[f"send:{type(exc).__name__}"] += 1
                await trio.sleep(rng.random() * 0.004)
                continue
            body = rng.choice(seeds[address].calls)
            if rng.random() < 0.85:
                body = m.mutate_value(body)
            streams = {"data": _random_bytes(rng, rng.randrange(3))} if rng.random() < 0.2 else None
            stats.calls += 1
            with trio.move_on_after(3):
                try:
                    await transport.call(address, body, streams=streams)
                    stats.call_outcomes["ok"] += 1
                except BoroughError as exc:
                    stats.call_outcomes[type(exc).__name__] += 1
                    await trio.sleep(0.01)


async def run(config: dict[str, Any]) -> Stats:
    seed: int = config["seed"]
    members: list[tuple[str, str]] = [(m[0], m[1]) for m in config["members"]]
    addresses = [address for _, address in members]
    insiders: bool = config.get("insiders", False)
    stats = Stats()

    def seeds(me: str | None, to: str, address: str | None = None) -> Seeds:
        return make_seeds(
            me=me,
            members=members,
            partitions=PARTITIONS,
            junk_partitions=JUNK_PARTITIONS,
            junk_keys=JUNK_KEYS,
            to=to,
            address=address,
        )

    with trio.move_on_after(config["seconds"]):
        async with trio.open_nursery() as nursery:
            for i in range(config.get("raw", 6)):
                rng = random.Random(f"{seed}-raw-{i}")
                claimed: str | None = None
                if insiders:
                    # Half of them also claim the member's own address, so their SWIM frames are taken too.
                    me, own = members[i % len(members)]
                    claimed = own if i % 2 else None
                else:
                    me = None if i % 3 == 0 else f"mallory-{i}"
                to, target = members[(i + 1) % len(members)]  # never a member's own id to itself
                nursery.start_soon(RawPeer(rng, target, seeds(me, to, claimed), stats).run_forever)
            for i in range(config.get("transport", 3)):
                rng = random.Random(f"{seed}-transport-{i}")
                address: str | None
                if insiders:
                    me, address = members[i % len(members)][0], None
                else:
                    # One claims a member's address: it must get none of that member's traffic.
                    me, address = (None if i == 0 else f"eve-{i}"), (addresses[1] if i == 2 else None)
                identity = Identity(node_id=me, address=address)
                targets = {address: seeds(me, to) for to, address in members if to != me}
                nursery.start_soon(transport_peer, rng, identity, targets, stats)
    return stats


def main() -> None:
    stats = trio.run(run, json.loads(sys.argv[1]))
    print(json.dumps(attrs.asdict(stats)), flush=True)


if __name__ == "__main__":
    main()
