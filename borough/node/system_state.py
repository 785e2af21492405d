"""The ``_system`` partition's state machine: the member table and the partition directory.

``_system`` is a Raft group like any other; this module is what its replicas apply. It owns the commands that
change the member table (join, change a member's state) and the directory (register a partition exactly once),
their CBOR list form, and the in-memory view each ``_system`` replica keeps. It is deterministic and pure: it
turns a command into key/value writes and a result, and knows nothing of Raft, trio or the network. Because the
state lives in the partition's key/value data, snapshots and restarts carry it with no extra work.

A partition's directory record is written once, by the first ``register`` that Raft orders; every later
``register`` of the same name returns the existing record. That compare-and-set, ordered by one Raft log, is
what makes two groups for one partition impossible.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from borough.errors import RemoteProtocolError
from borough.ids import NodeId
from borough.kv import encode_value
from borough.node.records import DirectoryRecord
from borough.ring.members import Member, MemberState, MemberTable

__all__ = [
    "MEMBERS_KEY",
    "SYSTEM",
    "Refused",
    "SystemState",
    "join_command",
    "register_command",
    "register_many_command",
    "state_command",
]

SYSTEM = "_system"
MEMBERS_KEY = "members"
_DIR_PREFIX = "d/"


@attrs.frozen(slots=True)
class Refused:
    """A command that changed nothing, and why (only a bug or a corrupt log produces one)."""

    reason: str


def join_command(node_id: str, address: str) -> list[Any]:
    return ["join", node_id, address]


def state_command(node_id: str, state: MemberState, *, expected: MemberState | None = None) -> list[Any]:
    """Set ``node_id``'s state. With ``expected``, only if the member is in that state when the command is
    applied: a decision taken on an older table (the failure detector's "this ACTIVE member is dead") must not
    overwrite a change Raft ordered before it (a decommission's LEAVING)."""
    if expected is None:
        return ["state", node_id, int(state)]
    return ["state", node_id, int(state), int(expected)]


def register_command(name: str, voters: Iterable[str], table_version: int) -> list[Any]:
    return ["register", name, list(voters), table_version]


#: Most partitions one ``register_many`` command registers (its entry stays far below a Raft message's limit).
MAX_REGISTER_BATCH = 1024


def register_many_command(records: Iterable[tuple[str, Iterable[str], int]]) -> list[Any]:
    """Register many partitions in one entry (bulk creation): ``(name, voters, table_version)`` each. Applied as
    that many ``register`` commands in order; the result is the list of their results."""
    return ["register_many", [[name, list(voters), version] for name, voters, version in records]]


class SystemState:
    """One ``_system`` replica's view: the member table and the directory, kept equal to its applied data."""

    def __init__(self, members: MemberTable | None = None, directory: dict[str, DirectoryRecord] | None = None):
        self.members = members if members is not None else MemberTable()
        self.directory: dict[str, DirectoryRecord] = directory if directory is not None else {}

    @classmethod
    def load(cls, items: Iterable[tuple[Any, Any]]) -> SystemState:
        """Rebuild the view from the partition's key/value data (after a restart or a snapshot install)."""
        state = cls()
        for key, value in items:
            if key == MEMBERS_KEY:
                state.members = MemberTable.from_list(value)
            elif isinstance(key, str) and key.startswith(_DIR_PREFIX):
                record = DirectoryRecord.from_list(value)
                state.directory[record.name] = record
        return state

    def apply(self, command: Any) -> tuple[list[list[Any]], Any]:
        """Apply one committed command: return the key/value ops to persist and the command's result.

        The result is the member table (join, state) or the partition's directory record (register). A malformed
        command (which only a bug or a corrupt log could produce) changes nothing and returns ``Refused``, so one
        bad entry can never wedge the group."""
        if not isinstance(command, list) or not command or not isinstance(command[0], str):
            return [], Refused(f"malformed _system command {command!r:.100}")
        kind = command[0]
        try:
            if kind == "join" and len(command) == 3:
                return self._join(NodeId(str(command[1])), str(command[2]))
            if kind == "state" and len(command) in (3, 4):
                expected = MemberState(int(command[3])) if len(command) == 4 else None
                return self._set_state(NodeId(str(command[1])), MemberState(int(command[2])), expected)
            if kind == "register" and len(command) == 4:
                record = DirectoryRecord.from_list(command[1:])  # the rule ``load`` will read it back with
                return self._register(record.name, list(record.voters), record.table_version)
            if kind == "register_many" and len(command) == 2 and isinstance(command[1], list):
                return self._register_many(command[1])
        except (ValueError, KeyError, TypeError, RemoteProtocolError) as exc:
            return [], Refused(f"_system command {kind!r} refused: {exc}")
        return [], Refused(f"unknown _system command {command!r:.100}")

    def _write_members(self, table: MemberTable) -> list[list[Any]]:
        self.members = table
        return [["put", MEMBERS_KEY, encode_value(table.to_list())]]

    def _join(self, node_id: NodeId, address: str) -> tuple[list[list[Any]], Any]:
        current = self.members.get(node_id)
        # A member being decommissioned stays LEAVING when it restarts and announces itself: the drain goes on.
        leaving = current is not None and current.state is MemberState.LEAVING
        state = MemberState.LEAVING if leaving else MemberState.ACTIVE
        if current is not None and current.address == address and current.state is state:
            return [], self.members
        table = self.members.with_member(Member(node_id=node_id, address=address, state=state))
        return self._write_members(table), table

    def _set_state(
        self, node_id: NodeId, state: MemberState, expected: MemberState | None = None
    ) -> tuple[list[list[Any]], Any]:
        current = self.members[node_id]
        if current.state is state or (expected is not None and current.state is not expected):
            return [], self.members  # already so, or no longer in the state the change was decided on
        table = self.members.with_state(node_id, state)
        return self._write_members(table), table

    def _register_many(self, items: list[Any]) -> tuple[list[list[Any]], Any]:
        if len(items) > MAX_REGISTER_BATCH:
            return [], Refused(f"register_many of {len(items)} partitions: at most {MAX_REGISTER_BATCH} at once")
        ops: list[list[Any]] = []
        results: list[Any] = []
        for item in items:
            # Each item is checked on its own: one malformed item is refused alone, the others stand.
            try:
                record = DirectoryRecord.from_list(item)
            except (ValueError, KeyError, TypeError, RemoteProtocolError) as exc:
                results.append(Refused(f"register_many: item refused: {exc}"))
                continue
            new_ops, result = self._register(record.name, list(record.voters), record.table_version)
            ops += new_ops
            results.append(result)
        return ops, results

    def _register(self, name: str, voters: list[NodeId], version: int) -> tuple[list[list[Any]], Any]:
        existing = self.directory.get(name)
        if existing is not None:
            return [], existing
        if not voters:
            return [], Refused(f"partition {name!r} needs at least one voter")
        record = DirectoryRecord(name=name, voters=tuple(voters), table_version=version)
        self.directory[name] = record
        return [["put", _DIR_PREFIX + name, encode_value(record.to_list())]], record
