"""What replicas apply (``borough.node.statemachine``, ``borough.node.system_state``): ordinary partitions turn
committed write commands into key/value ops; ``_system`` applies join, state and register commands to the member
table and the directory (register is a compare-and-set), refuses malformed commands without changing anything,
and rebuilds exactly the same view from its persisted data (``SystemState.load``, ``SystemStateMachine.reload``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from borough.ids import NodeId
from borough.kv import decode_value, encode_value
from borough.node.records import Delete, DirectoryRecord, Put
from borough.node.statemachine import KvStateMachine, SystemStateMachine, encode_command, write_command
from borough.node.system_state import (
    MEMBERS_KEY,
    SYSTEM,
    Refused,
    SystemState,
    join_command,
    register_command,
    register_many_command,
    state_command,
)
from borough.raft.records import Entry, EntryKind
from borough.ring.members import Member, MemberState, MemberTable
from borough.store.memory import MemoryStore


def kv(partition: str) -> KvStateMachine:
    return KvStateMachine(partition, MemoryStore(), now=lambda: 0.0)


def entry(index: int, data: bytes, kind: int = EntryKind.NORMAL) -> Entry:
    return Entry(term=2, index=index, kind=kind, data=data)


def persist(store: MemoryStore, partition: str, ops: Sequence[Sequence[Any]], applied: int) -> None:
    batch = store.write_batch()
    batch.apply(partition, ops, applied)
    store.write(batch)


def loaded(ops: Sequence[Sequence[Any]]) -> SystemState:
    """The view ``SystemState.load`` rebuilds from ``ops`` written to a fresh store's ``_system`` data."""
    store = MemoryStore()
    persist(store, SYSTEM, ops, 1)
    return SystemState.load(store.iterate(SYSTEM))


# --- ordinary partitions --------------------------------------------------------------------------------------------


def test_kv_apply_turns_write_commands_into_ops_in_log_order() -> None:
    first = (Put("a", encode_value(1)), Delete("b"))
    second = (Put(b"b", encode_value("x")), Put("a", encode_value(2)))
    entries = [entry(5, write_command(first, stamp=1.0)), entry(6, write_command(second, stamp=2.0))]
    ops, results = kv("p").apply(entries)
    assert ops == [
        ["put", "a", encode_value(1)],
        ["del", "b"],
        ["put", b"b", encode_value("x")],
        ["put", "a", encode_value(2)],
    ]
    assert results == {}
    store = MemoryStore()
    persist(store, "p", ops, 6)
    assert dict(store.iterate("p")) == {"a": 2, b"b": "x"}


def test_kv_apply_skips_leader_noops_and_conf_changes() -> None:
    write = write_command((Put("k", encode_value(True)),), stamp=1.0)
    entries = [entry(1, b""), entry(2, b"\x82\x01\x02", EntryKind.CONF_CHANGE), entry(3, write), entry(4, b"")]
    ops, _ = kv("p").apply(entries)
    assert ops == [["put", "k", encode_value(True)]]


def test_kv_apply_logs_and_skips_an_undecodable_entry(caplog: pytest.LogCaptureFixture) -> None:
    write = write_command((Delete("z"),), stamp=1.0)
    with caplog.at_level(logging.ERROR, logger="borough.node.statemachine"):
        ops, _ = kv("orders").apply([entry(7, b"\xff\xfe"), entry(8, write)])
    assert ops == [["del", "z"]]
    assert any("orders" in r.getMessage() and "7" in r.getMessage() for r in caplog.records)


# --- _system: the member table --------------------------------------------------------------------------------------


def test_join_adds_an_active_member_and_bumps_the_version() -> None:
    state = SystemState()
    ops, table = state.apply(join_command("n1", "n1:1"))
    assert isinstance(table, MemberTable)
    assert table.version == 1
    assert table[NodeId("n1")] == Member(node_id="n1", address="n1:1", state=MemberState.ACTIVE)
    assert state.members == table
    assert ops == [["put", MEMBERS_KEY, encode_value(table.to_list())]]


def test_joining_again_at_the_same_address_changes_nothing() -> None:
    state = SystemState()
    _, table = state.apply(join_command("n1", "n1:1"))
    ops, again = state.apply(join_command("n1", "n1:1"))
    assert ops == []
    assert again == table and again.version == 1


def test_joining_again_at_a_new_address_updates_it() -> None:
    state = SystemState()
    state.apply(join_command("n1", "n1:1"))
    ops, table = state.apply(join_command("n1", "n1:2"))
    assert table.version == 2
    assert table.address_of("n1") == "n1:2"
    assert decode_value(ops[0][2]) == table.to_list()


def test_a_state_command_marks_a_member_dead_once() -> None:
    state = SystemState()
    state.apply(join_command("n1", "n1:1"))
    state.apply(join_command("n2", "n2:1"))
    ops, table = state.apply(state_command("n2", MemberState.DEAD))
    assert table.version == 3
    assert table[NodeId("n2")].state is MemberState.DEAD
    assert [m.node_id for m in table.ring_members()] == ["n1"]
    assert len(ops) == 1
    assert state.apply(state_command("n2", MemberState.DEAD)) == ([], table)


def test_a_conditional_state_command_changes_only_a_member_still_in_the_expected_state() -> None:
    # The _system leader marks an unreachable member DEAD only if it is still ACTIVE when the command applies: a
    # decommission's LEAVING ordered before it must stay (tests/testing/scenarios/dead-over-leaving-37.json).
    state = SystemState()
    state.apply(join_command("n1", "n1:1"))
    state.apply(join_command("n2", "n2:1"))
    _, leaving = state.apply(state_command("n2", MemberState.LEAVING))
    assert state.apply(state_command("n2", MemberState.DEAD, expected=MemberState.ACTIVE)) == ([], leaving)
    _, table = state.apply(join_command("n2", "n2:1"))  # it announces itself again: still being drained
    assert table[NodeId("n2")].state is MemberState.LEAVING
    ops, table = state.apply(state_command("n1", MemberState.DEAD, expected=MemberState.ACTIVE))
    assert len(ops) == 1 and table[NodeId("n1")].state is MemberState.DEAD


def test_a_dead_member_that_joins_again_is_active() -> None:
    state = SystemState()
    state.apply(join_command("n1", "n1:1"))
    state.apply(state_command("n1", MemberState.DEAD))
    _, table = state.apply(join_command("n1", "n1:1"))
    assert table[NodeId("n1")].state is MemberState.ACTIVE and table.version == 3


# --- _system: the directory -----------------------------------------------------------------------------------------


def test_register_writes_a_record_once_and_answers_it_to_every_later_register() -> None:
    state = SystemState()
    ops, record = state.apply(register_command("p", ["n2", "n1"], 4))
    assert record == DirectoryRecord(name="p", voters=(NodeId("n2"), NodeId("n1")), table_version=4)
    assert ops == [["put", "d/p", encode_value(record.to_list())]]
    # A second register (another caller, other voters, a newer table) loses the compare-and-set.
    ops, again = state.apply(register_command("p", ["n3", "n4", "n5"], 9))
    assert ops == []
    assert again == record
    assert state.directory == {"p": record}


def test_register_with_no_voters_is_refused() -> None:
    state = SystemState()
    ops, result = state.apply(register_command("p", [], 1))
    assert ops == [] and isinstance(result, Refused)
    assert state.directory == {}


def test_a_register_the_loader_would_reject_is_refused() -> None:
    """Whatever apply writes, load must read back (a restart or a snapshot install rebuilds the view from
    the data). A record with an empty voter id is written by apply, and DirectoryRecord.from_list rejects it."""
    state = SystemState()
    ops, result = state.apply(register_command("p", ["n1", ""], 1))
    if not isinstance(result, Refused):
        loaded(ops)  # raises RemoteProtocolError: the _system replica could never reload its own data
    assert isinstance(result, Refused) and ops == []


def test_register_many_registers_each_in_order_and_refuses_a_bad_item_alone() -> None:
    state = SystemState()
    state.apply(register_command("p", ["n1"], 1))
    ops, results = state.apply(
        register_many_command([("q", ["n2"], 3), ("p", ["n9"], 3), ("r", [], 3), ("q", ["n5"], 4)])
    )
    q = DirectoryRecord(name="q", voters=(NodeId("n2"),), table_version=3)
    p = DirectoryRecord(name="p", voters=(NodeId("n1"),), table_version=1)
    assert results[:2] == [q, p] and isinstance(results[2], Refused) and results[3] == q
    assert ops == [["put", "d/q", encode_value(q.to_list())]]
    assert loaded(ops).directory == {"q": q}
    ops, result = state.apply(["register_many", [["s", ["n1"], 1], "junk"]])
    assert isinstance(result[1], Refused) and state.directory["s"].voters == ("n1",)


def test_register_many_of_too_many_partitions_is_refused_whole() -> None:
    state = SystemState()
    ops, result = state.apply(register_many_command((f"p{i}", ["n1"], 1) for i in range(1025)))
    assert ops == [] and isinstance(result, Refused) and state.directory == {}


BAD_COMMANDS: dict[str, Any] = {
    "not a list": {"join": "n1"},
    "empty": [],
    "kind not a string": [1, "n1", "n1:1"],
    "unknown kind": ["leave", "n1"],
    "join too short": ["join", "n1"],
    "join an empty id": ["join", "", "n9:1"],
    "join an overlong address": ["join", "n9", "a" * 600],
    "state of an unknown member": ["state", "n9", 3],
    "state out of range": ["state", "n1", 17],
    "state not a number": ["state", "n1", "dead"],
    "state expecting a state out of range": ["state", "n1", 3, 17],
    "state too long": ["state", "n1", 3, 1, 1],
    "register too long": ["register", "q", ["n1"], 1, "extra"],
    "register voters not iterable": ["register", "q", 5, 1],
    "register version not a number": ["register", "q", ["n1"], "one"],
}


@pytest.mark.parametrize("command", BAD_COMMANDS.values(), ids=BAD_COMMANDS.keys())
def test_a_malformed_or_unknown_command_is_refused_and_changes_nothing(command: Any) -> None:
    state = SystemState()
    state.apply(join_command("n1", "n1:1"))
    state.apply(register_command("p", ["n1"], 1))
    members, directory = state.members, dict(state.directory)
    ops, result = state.apply(command)
    assert isinstance(result, Refused)
    assert ops == []
    assert state.members == members and state.directory == directory


# --- rebuilding the view from the data ------------------------------------------------------------------------------


def test_load_rebuilds_the_view_from_the_persisted_ops() -> None:
    state = SystemState()
    ops: list[Any] = []
    for command in [
        join_command("n1", "n1:1"),
        join_command("n2", "n2:1"),
        register_command("p", ["n1", "n2"], 2),
        state_command("n2", MemberState.LEAVING),
        join_command("n3", "n3:1"),
        register_command("q", ["n3"], 4),
        register_command("p", ["n3"], 4),
    ]:
        ops += state.apply(command)[0]
    view = loaded(ops)
    assert view.members == state.members and view.members.version == 4
    assert view.directory == state.directory and set(view.directory) == {"p", "q"}


def test_the_system_machine_applies_committed_commands_with_results_by_index(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    machine = SystemStateMachine(store, SYSTEM)
    entries = [
        entry(1, b""),
        entry(2, encode_command(join_command("n1", "n1:1"))),
        entry(3, b"\x01\x02", EntryKind.CONF_CHANGE),
        entry(4, b"\xff"),
        entry(5, encode_command(register_command("p", ["n1"], 1))),
        entry(6, encode_command(["nonsense"])),
    ]
    with caplog.at_level(logging.ERROR, logger="borough.node.statemachine"):
        ops, results = machine.apply(entries)
    assert set(results) == {2, 5, 6}
    assert results[2].version == 1
    assert results[5] == DirectoryRecord(name="p", voters=(NodeId("n1"),), table_version=1)
    assert isinstance(results[6], Refused)
    assert any("4" in r.getMessage() for r in caplog.records)
    persist(store, SYSTEM, ops, 6)
    assert SystemStateMachine(store, SYSTEM).state.directory == machine.state.directory


def test_the_system_machine_reloads_after_its_data_is_replaced() -> None:
    store = MemoryStore()
    machine = SystemStateMachine(store, SYSTEM)
    ops, _ = machine.apply([entry(1, encode_command(join_command("n1", "n1:1")))])
    persist(store, SYSTEM, ops, 1)
    other = SystemState()
    new_ops = other.apply(join_command("n7", "n7:1"))[0] + other.apply(join_command("n8", "n8:1"))[0]
    new_ops += other.apply(register_command("z", ["n8"], 2))[0]
    persist(store, SYSTEM, [["del", MEMBERS_KEY], *new_ops], 9)  # as a snapshot install would
    assert machine.state.members.node_ids() == ("n1",)  # not yet reloaded
    machine.reload()
    assert machine.state.members == other.members
    assert machine.state.directory == other.directory


# --- the property ---------------------------------------------------------------------------------------------------

_IDS = st.sampled_from(["n1", "n2", "n3", "n4"])
_COMMANDS = st.one_of(
    st.builds(join_command, _IDS, st.sampled_from(["h1:1", "h2:1", "h3:1"])),
    st.builds(lambda n, s: ["state", n, s], st.one_of(_IDS, st.just("ghost")), st.integers(-1, 4)),
    st.builds(register_command, st.sampled_from(["p", "q", "r"]), st.lists(_IDS, max_size=3), st.integers(0, 20)),
    st.sampled_from([["bogus"], ["join"], "join", [], ["register", "p", ["n1"]]]),
)


@given(st.lists(_COMMANDS, max_size=30))
def test_load_of_the_applied_data_gives_the_same_view(commands: list[Any]) -> None:
    state = SystemState()
    store = MemoryStore()
    for index, command in enumerate(commands, start=1):
        # The command as the log carries it (CBOR), applied, and its ops persisted like the replica does.
        ops, _ = state.apply(cbor2.loads(encode_command(command)))
        persist(store, SYSTEM, ops, index)
    view = SystemState.load(store.iterate(SYSTEM))
    assert view.members == state.members
    assert view.directory == state.directory
