"""Bulk registration (``borough.node.registrar``): partitions created together share one ``_system`` entry, a
lone one is proposed at once, a failed proposal fails its batch only, and a name asked twice is asked once."""

from __future__ import annotations

from typing import Any

import cbor2
import trio

from borough.errors import NotLeader, Unavailable
from borough.node.registrar import Registrar
from borough.node.system_state import MAX_REGISTER_BATCH, SystemState


class FakeSystem:
    """Applies each proposed command to a ``SystemState`` after ``delay`` seconds, or fails the first ``fail``."""

    def __init__(self, delay: float = 0.01, fail: int = 0) -> None:
        self.state = SystemState()
        self.commands: list[Any] = []
        self.delay = delay
        self.fail = fail

    async def propose(self, data: bytes) -> Any:
        command = cbor2.loads(data)
        self.commands.append(command)
        await trio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise NotLeader("_system", None)
        return self.state.apply(command)[1]


async def test_concurrent_registrations_share_entries_and_each_gets_its_record(
    autojump_clock: trio.testing.MockClock,
) -> None:
    system = FakeSystem()
    results: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        registrar = Registrar(nursery)

        async def create(name: str) -> None:
            results[name] = await registrar.register(system.propose, name, ("n1", "n2"), 7)

        for i in range(2500):
            nursery.start_soon(create, f"p{i}")
    assert len(results) == 2500
    assert all(r.name == name and r.voters == ("n1", "n2") and r.table_version == 7 for name, r in results.items())
    # 2,500 callers, at most MAX_REGISTER_BATCH a batch: three entries, not 2,500.
    assert [len(c[1]) for c in system.commands] == [
        MAX_REGISTER_BATCH,
        MAX_REGISTER_BATCH,
        2500 - 2 * MAX_REGISTER_BATCH,
    ]
    assert registrar.entries == 3 and registrar.registered == 2500


async def test_a_lone_registration_goes_at_once_and_later_ones_wait_for_the_one_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    system = FakeSystem(delay=1.0)
    async with trio.open_nursery() as nursery:
        registrar = Registrar(nursery)
        nursery.start_soon(registrar.register, system.propose, "a", ("n1",), 1)
        await trio.sleep(0.5)
        assert [c[1] for c in system.commands] == [[["a", ["n1"], 1]]]
        for name in ("b", "c", "b"):
            nursery.start_soon(registrar.register, system.propose, name, ("n1",), 1)
        await trio.sleep(0.4)
        assert len(system.commands) == 1  # b and c wait for a's entry, then go together (b once)
    assert [sorted(c[1]) for c in system.commands[1:]] == [[["b", ["n1"], 1], ["c", ["n1"], 1]]]  # (any order)
    assert set(system.state.directory) == {"a", "b", "c"}


async def test_a_failed_proposal_fails_its_batch_and_the_next_batch_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    system = FakeSystem(delay=1.0, fail=1)
    outcomes: dict[str, Any] = {}

    async def create(registrar: Registrar, name: str) -> None:
        try:
            outcomes[name] = await registrar.register(system.propose, name, ("n1",), 1)
        except NotLeader as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        registrar = Registrar(nursery)
        nursery.start_soon(create, registrar, "a")
        await trio.sleep(0.5)
        nursery.start_soon(create, registrar, "b")
    assert isinstance(outcomes["a"], NotLeader)
    assert outcomes["b"].name == "b"


async def test_callers_waiting_when_the_node_stops_fail_instead_of_hanging(
    autojump_clock: trio.testing.MockClock,
) -> None:
    system = FakeSystem(delay=10.0)
    errors: list[BaseException] = []

    async def create(registrar: Registrar, name: str) -> None:
        try:
            await registrar.register(system.propose, name, ("n1",), 1)
        except Exception as exc:
            errors.append(exc)

    async with trio.open_nursery() as outer, trio.open_nursery() as node:
        registrar = Registrar(node)
        outer.start_soon(create, registrar, "a")
        await trio.sleep(1)
        outer.start_soon(create, registrar, "b")
        await trio.sleep(1)
        node.cancel_scope.cancel()
    assert len(errors) == 2
    assert all(isinstance(e, Unavailable) and "stopped while registering" in str(e) for e in errors)
