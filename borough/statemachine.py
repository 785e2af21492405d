"""What a replica applies: committed log entries turned into key/value writes and per-entry results.

This module owns the command format in the Raft log and the two state machines behind it: ordinary
partitions (a command is a list of ``["put", key, encoded_value]`` / ``["del", key]`` ops, applied atomically)
and ``_system`` (member table and directory, see ``borough.system``). It knows nothing of Raft roles, trio or
the network; the replica driver hands it committed entries and writes what it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import cbor2

from borough.raft.records import Entry, EntryKind
from borough.store import Store
from borough.system import SystemState

__all__ = ["KvStateMachine", "StateMachine", "SystemStateMachine", "check_ops", "encode_command"]

logger = logging.getLogger(__name__)


def encode_command(command: Any) -> bytes:
    return cbor2.dumps(command)


def check_ops(ops: Any, *, max_key_bytes: int, max_value_bytes: int) -> list[list[Any]]:
    """Validate a write command's ops as they arrive from a caller, before they may enter the log.

    Returns the ops as lists; raises ValueError/TypeError saying what is wrong. Everything that enters the log
    has passed this check, so applying can never fail on a malformed op."""
    if not isinstance(ops, list) or not ops:
        raise ValueError("a write needs a non-empty list of ops")
    checked: list[list[Any]] = []
    for op in ops:
        if not isinstance(op, list) or not op:
            raise ValueError(f"an op must be ['put', key, value] or ['del', key], not {op!r:.80}")
        key = op[1] if len(op) > 1 else None
        if type(key) not in (str, bytes) or not key:
            raise TypeError(f"a key must be a non-empty str or bytes, not {key!r:.60}")
        kb = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
        if len(kb) > max_key_bytes:
            raise ValueError(f"key of {len(kb)} bytes exceeds max_key_bytes={max_key_bytes}")
        if op[0] == "put" and len(op) == 3:
            if type(op[2]) is not bytes or not op[2]:
                raise TypeError("a put's value must be CBOR-encoded bytes")
            if len(op[2]) > max_value_bytes:
                raise ValueError(f"value of {len(op[2])} bytes exceeds max_value_bytes={max_value_bytes}")
        elif not (op[0] == "del" and len(op) == 2):
            raise ValueError(f"an op must be ['put', key, value] or ['del', key], not {op!r:.80}")
        checked.append(op)
    return checked


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
