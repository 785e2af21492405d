"""The directory (``borough.node.directory.Directory``): which member table is newest (fetched or the local
``_system`` replica's), addresses (self, the table, learned ones, and refreshing on a miss), cached directory
records, and the order of the targets ``locate`` gives for ``_system`` and for ordinary partitions."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from borough.errors import NotFound, Unavailable
from borough.ids import NodeId
from borough.node.directory import Directory
from borough.node.protocol import Locate, Members, Op
from borough.node.records import DirectoryRecord
from borough.node.routing import Target
from borough.node.system_state import SYSTEM, SystemState
from borough.ring.members import Member, MemberState, MemberTable

SELF = Target("n1", "n1:1")


def table(version: int, *members: tuple[str, str] | tuple[str, str, MemberState]) -> MemberTable:
    return MemberTable(
        version=version,
        members=[
            Member(node_id=m[0], address=m[1], state=m[2] if len(m) == 3 else MemberState.ACTIVE) for m in members
        ],
    )


def record(name: str, *voters: str) -> DirectoryRecord:
    return DirectoryRecord(name=name, voters=tuple(NodeId(v) for v in voters), table_version=1)


class SystemCalls:
    """The routed ``_system`` call: answers scripted per op type, every op recorded."""

    def __init__(self, answers: dict[type[Op], Any] | None = None) -> None:
        self.answers = dict(answers or {})
        self.ops: list[Op] = []

    async def __call__(self, op: Op) -> Any:
        await trio.lowlevel.checkpoint()
        self.ops.append(op)
        answer = self.answers[type(op)]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def make(
    calls: SystemCalls | None = None,
    *,
    local: SystemState | None = None,
    seeds: tuple[str, ...] = (),
    self_target: Target | None = SELF,
    misses: list[None] | None = None,
) -> Directory:
    return Directory(
        system_call=calls if calls is not None else SystemCalls(),
        seeds=seeds,
        local_system=lambda: local,
        self_target=self_target,
        on_miss=(lambda: misses.append(None)) if misses is not None else (lambda: None),
    )


# --- the member table -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fetched", "local", "newest"), [(3, 5, "local"), (5, 3, "fetched"), (4, 4, "fetched")])
def test_members_is_the_newer_of_the_fetched_and_the_local_table(fetched: int, local: int, newest: str) -> None:
    fetched_table = table(fetched, ("a", "a:fetched"))
    local_state = SystemState(members=table(local, ("a", "a:local")))
    directory = make(local=local_state)
    directory.set_members(fetched_table)
    assert directory.members == (local_state.members if newest == "local" else fetched_table)
    assert directory.address_of("a") == f"a:{newest}"


def test_set_members_never_goes_back_to_an_older_table() -> None:
    directory = make(local=None)
    directory.set_members(table(4, ("a", "a:4")))
    directory.set_members(table(2, ("a", "a:2")))
    assert directory.members.version == 4 and directory.address_of("a") == "a:4"
    directory.set_members(table(5, ("a", "a:5")))
    assert directory.members.version == 5 and directory.address_of("a") == "a:5"


def test_address_of_self_the_table_and_learned_addresses_and_a_miss() -> None:
    misses: list[None] = []
    directory = make(misses=misses)
    directory.set_members(table(1, ("n2", "n2:1")))
    directory.learn_address("n3", "n3:9")
    directory.learn_address(None, "client:1")  # a client has no node id: nothing to learn
    directory.learn_address("n4", None)
    assert directory.address_of("n1") == "n1:1"
    assert directory.address_of("n2") == "n2:1"
    assert directory.address_of("n3") == "n3:9"
    assert misses == []
    assert directory.address_of("n4") is None
    assert misses == [None]
    assert directory.learned == {"n3": "n3:9"}


def test_the_member_table_wins_over_a_learned_address() -> None:
    directory = make()
    directory.learn_address("n2", "n2:old")
    directory.set_members(table(1, ("n2", "n2:1")))
    assert directory.address_of("n2") == "n2:1"


# --- records --------------------------------------------------------------------------------------------------------


async def test_a_record_is_fetched_once_and_then_cached() -> None:
    calls = SystemCalls({Locate: record("p", "n2", "n3")})
    directory = make(calls)
    assert await directory.record("p", create=True) == record("p", "n2", "n3")
    assert await directory.record("p", create=False) == record("p", "n2", "n3")
    assert calls.ops == [Locate("p", True)]


async def test_a_missing_record_without_create_is_not_found_and_not_cached() -> None:
    calls = SystemCalls({Locate: None})
    directory = make(calls)
    with pytest.raises(NotFound) as info:
        await directory.record("p", create=False)
    assert (info.value.key, info.value.partition) == ("p", SYSTEM)
    calls.answers[Locate] = record("p", "n2")
    assert await directory.record("p", create=True) == record("p", "n2")
    assert calls.ops == [Locate("p", False), Locate("p", True)]


async def test_a_record_in_the_local_system_replica_needs_no_call() -> None:
    calls = SystemCalls()
    local = SystemState(directory={"p": record("p", "n1", "n2")})
    directory = make(calls, local=local)
    assert await directory.record("p", create=False) == record("p", "n1", "n2")
    assert calls.ops == []
    assert directory.records == {"p": record("p", "n1", "n2")}


# --- targets --------------------------------------------------------------------------------------------------------


async def test_system_targets_self_first_then_ring_members_seeds_and_learned_without_duplicates() -> None:
    local = SystemState(
        members=table(
            3,
            ("n1", "n1:1"),
            ("n3", "n3:1"),
            ("n2", "n2:1"),
            ("n4", "n4:1", MemberState.DEAD),
            ("n5", "n5:1", MemberState.JOINING),
        )
    )
    directory = make(local=local, seeds=("seed:1", "n2:1", "seed:2"))
    directory.learn_address("n9", "n9:1")
    directory.learn_address("n3", "n3:1")
    directory.learn_address("n6", "n6:1")
    targets = await directory.locate(SYSTEM, create=True)
    assert targets == [
        SELF,
        Target("n2", "n2:1"),
        Target("n3", "n3:1"),
        Target(None, "seed:1"),
        Target(None, "seed:2"),
        Target("n6", "n6:1"),
        Target("n9", "n9:1"),
    ]


async def test_locate_system_on_a_node_without_a_system_replica_starts_with_the_table() -> None:
    directory = make(local=None, seeds=("seed:1",))
    directory.set_members(table(2, ("n2", "n2:1"), ("n3", "n3:1")))
    targets = await directory.locate(SYSTEM, create=False)
    assert targets == [Target("n2", "n2:1"), Target("n3", "n3:1"), Target(None, "seed:1")]


async def test_locate_refreshes_the_member_table_when_a_voters_address_is_unknown() -> None:
    calls = SystemCalls({Locate: record("p", "n3", "n2"), Members: table(6, ("n2", "n2:1"), ("n3", "n3:1"))})
    misses: list[None] = []
    directory = make(calls, misses=misses)
    directory.set_members(table(5, ("n2", "n2:1")))
    # The record's voters come first, then the rest of the ring's replica set of the newest table.
    located = await directory.locate("p", create=True)
    assert calls.ops == [Locate("p", True), Members()]
    assert directory.members.version == 6
    assert located == [Target("n3", "n3:1"), Target("n2", "n2:1")]
    assert len(misses) == 1
    # Known now: the next lookup neither fetches the record nor the table.
    assert await directory.locate("p", create=True) == located
    assert len(calls.ops) == 2


async def test_locate_goes_with_what_it_knows_when_the_refresh_fails() -> None:
    calls = SystemCalls({Locate: record("p", "n2", "n3"), Members: Unavailable("no quorum")})
    directory = make(calls)
    directory.set_members(table(1, ("n2", "n2:1")))
    assert await directory.locate("p", create=False) == [Target("n2", "n2:1")]
    assert calls.ops == [Locate("p", False), Members()]


def test_seeds_are_kept_once_in_order() -> None:
    directory = make(seeds=("s:1", "s:2", "s:1"))
    assert directory.seeds == ["s:1", "s:2"]
    directory.add_seed("s:2")
    directory.add_seed("s:3")
    directory.add_seed("s:3")
    assert directory.seeds == ["s:1", "s:2", "s:3"]
