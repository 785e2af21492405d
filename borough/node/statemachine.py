"""What a replica applies: committed log entries turned into key/value writes and per-entry results.

This module owns the command format in the Raft log and the two state machines behind it: ordinary
partitions (a command is a list of ``["put", key, encoded_value]`` / ``["del", key]`` ops, applied atomically;
every op was checked by ``borough.node.protocol`` before it entered the log)
and ``_system`` (member table and directory, see ``borough.system``). It knows nothing of Raft roles, trio or
the network; the replica driver hands it committed entries and writes what it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import cbor2

from borough.node.records import WriteOp
from borough.node.system_state import SystemState
from borough.raft.records import Entry, EntryKind
from borough.store.base import Store

__all__ = ["KvStateMachine", "StateMachine", "SystemStateMachine", "encode_command", "write_command"]

logger = logging.getLogger(__name__)


def encode_command(command: Any) -> bytes:
    """A ``_system`` command (see ``borough.node.system_state``) as a log entry."""
    return cbor2.dumps(command)


def write_command(ops: Iterable[WriteOp]) -> bytes:
    """The log entry of an ordinary partition's write: its checked ops, applied atomically in order."""
    return cbor2.dumps([op.to_list() for op in ops])


class StateMachine(Protocol):
    def apply(self, entries: Sequence[Entry]) -> tuple[list[Any], dict[int, Any]]:
        """The key/value ops that applying ``entries`` produces, and each command's result by index."""
        ...

    def reload(self) -> None:
        """The partition's data was replaced (a snapshot was installed): rebuild any in-memory view."""
        ...


class KvStateMachine:
    """An ordinary partition: each entry is a batch of puts and deletes, applied in order."""

    def __init__(self, partition: str) -> None:
        self.partition = partition

    def apply(self, entries: Sequence[Entry]) -> tuple[list[Any], dict[int, Any]]:
        ops: list[Any] = []
        for entry in entries:
            if entry.kind != EntryKind.NORMAL or not entry.data:
                continue  # a conf change (the core handles it) or a leader's no-op
            try:
                command = cbor2.loads(entry.data)
            except Exception:
                # Only a corrupt log or a bug writes this; skipping keeps every replica identical.
                logger.error("partition %r: undecodable command at index %d skipped", self.partition, entry.index)
                continue
            if isinstance(command, list):
                ops.extend(command)
        return ops, {}

    def reload(self) -> None:
        pass


class SystemStateMachine:
    """``_system``: member table and partition directory, with an in-memory view for lookups."""

    def __init__(self, store: Store, partition: str) -> None:
        self.store = store
        self.partition = partition
        self.state = SystemState()
        self.reload()

    def reload(self) -> None:
        self.state = SystemState.load(self.store.iterate(self.partition))

    def apply(self, entries: Sequence[Entry]) -> tuple[list[Any], dict[int, Any]]:
        ops: list[Any] = []
        results: dict[int, Any] = {}
        for entry in entries:
            if entry.kind != EntryKind.NORMAL or not entry.data:
                continue
            try:
                command = cbor2.loads(entry.data)
            except Exception:
                logger.error("_system: undecodable command at index %d skipped", entry.index)
                continue
            new_ops, result = self.state.apply(command)
            ops.extend(new_ops)
            results[entry.index] = result
        return ops, results
