"""Random fault schedules over the simulated network: cuts (one way or both), partitions, isolation, killed
connections and heals, while three nodes exchange messages and calls with streams. Every call must succeed or
fail with ``Unavailable`` (never another error, never a hang past its deadline); once the network heals, calls
between every pair succeed again. Hypothesis prints the schedule that fails."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from borough import errors
from borough.wire.mux import IncomingCall, PeerInfo, Reply
from borough.wire.settings import WireSettings
from borough.wire.simnet import SimNetwork
from borough.wire.transport import Identity, open_transport

from .helpers import chunks, collect

NAMES = ["n1", "n2", "n3"]
SETTINGS = WireSettings(
    keepalive_interval=0.3,
    liveness_timeout=1.0,
    idle_timeout=5.0,
    connect_timeout=0.5,
    backoff_initial=0.05,
    backoff_max=0.4,
    window=8192,
    data_frame_size=2048,
)

faults = st.lists(
    st.tuples(
        st.sampled_from(["cut", "cut1", "partition", "isolate", "kill", "heal", "latency"]),
        st.sampled_from(NAMES),
        st.sampled_from(NAMES),
        st.floats(0.0, 1.5),
    ),
    max_size=8,
)


async def _scenario(seed: int, schedule: list[tuple[str, str, str, float]]) -> None:
    sim = SimNetwork(seed=seed)

    async def on_call(peer: PeerInfo, call: IncomingCall) -> Any:
        n = len(await collect(call.streams["up"])) if "up" in call.streams else 0
        return Reply({"n": n}, streams={"down": chunks(b"d" * call.body, 1000)})

    received: dict[str, list[Any]] = {name: [] for name in NAMES}
    outcomes: list[str] = []

    async with trio.open_nursery() as root:
        transports = {}
        for i, name in enumerate(NAMES):
            transports[name] = await root.start(_run_node, sim, name, on_call, received[name], random.Random(i))

        async def traffic(src: str, dst: str) -> None:
            t = transports[src]
            for k in range(10):
                t.send(f"{dst}:1", [src, k])
                try:
                    with trio.fail_after(3):
                        async with await t.call(f"{dst}:1", 3000, streams={"up": chunks(b"u" * 5000, 999)}) as reply:
                            assert reply.body == {"n": 5000}
                            assert await collect(reply.streams["down"]) == b"d" * 3000
                    outcomes.append("ok")
                except errors.Unavailable:
                    outcomes.append("unavailable")
                except trio.BrokenResourceError:
                    outcomes.append("broken stream")  # the link failed while reading the reply stream
                except trio.TooSlowError:
                    # A call may only outlast its deadline if the link is dead and not yet detected (< liveness).
                    outcomes.append("deadline")
                await trio.sleep(0.1)

        async def chaos() -> None:
            for op, a, b, delay in schedule:
                await trio.sleep(delay)
                if op == "cut":
                    sim.cut(a, b)
                elif op == "cut1":
                    sim.cut(a, b, one_way=True)
                elif op == "partition":
                    sim.partition([a], [n for n in NAMES if n != a])
                elif op == "isolate":
                    sim.isolate(a)
                elif op == "kill":
                    sim.kill_connections(a, b)
                elif op == "heal":
                    sim.heal()
                else:
                    # Up to 30 ms +- 15 ms one way: a dial (two round trips) stays within connect_timeout. A link
                    # slower than that can never connect, which is the settings' doing, not a wire failure.
                    sim.set_latency(a, b, delay / 50, delay / 100)

        async with trio.open_nursery() as n:
            n.start_soon(chaos)
            for src in NAMES:
                for dst in NAMES:
                    if src != dst:
                        n.start_soon(traffic, src, dst)
        sim.heal()
        # After healing, every pair can talk again within liveness + backoff.
        for src in NAMES:
            for dst in NAMES:
                if src != dst:
                    with trio.fail_after(10):
                        while True:
                            try:
                                await transports[src].call(f"{dst}:1", 10)
                                break
                            except errors.Unavailable:
                                await trio.sleep(0.2)
        # A dead link is noticed within the liveness timeout, so no call ever runs into its 3 s deadline.
        assert "deadline" not in outcomes, outcomes
        if not schedule:
            assert set(outcomes) == {"ok"}
        root.cancel_scope.cancel()


async def _run_node(
    sim: SimNetwork,
    name: str,
    on_call: Any,
    inbox: list[Any],
    rng: random.Random,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with open_transport(
        sim.host(name),
        identity=Identity(node_id=name, cluster_id="c"),
        listen=f"{name}:1",
        on_message=lambda peer, m: inbox.append(m),
        on_call=on_call,
        settings=SETTINGS,
        rng=rng,
    ) as transport:
        task_status.started(transport)
        await trio.sleep_forever()


@pytest.mark.soak
@settings(max_examples=max(5, settings.default.max_examples // 5))  # each example is a whole cluster run
@given(st.integers(0, 2**32), faults)
def test_random_fault_schedules(seed: int, schedule: list[tuple[str, str, str, float]]) -> None:
    trio._core._run._r.seed(seed)
    trio.run(_scenario, seed, schedule, clock=trio.testing.MockClock(autojump_threshold=0))
