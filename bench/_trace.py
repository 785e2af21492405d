"""Stamps for ``bench/timeline.py``: wraps the socket reads and writes the wire makes (``os.read``/``os.write`` as
``borough.wire.mux`` calls them), trio's wait for a readable socket, and the store engine's write, recording the
monotonic time of each as ``(ns, kind, detail)``. ``install()`` patches this process; ``take()`` returns what was
recorded since the last call and starts afresh."""

from __future__ import annotations

import os
import time
from typing import Any

import trio

events: list[tuple[int, str, int]] = []
_clock = time.monotonic_ns


class _Os:
    """``os`` as ``borough.wire.mux`` sees it, with its reads and writes stamped."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def read(fd: int, n: int) -> bytes:
        data = os.read(fd, n)  # (BlockingIOError: nothing read, nothing stamped)
        events.append((_clock(), "read", len(data)))
        return data

    @staticmethod
    def write(fd: int, blob: Any) -> int:
        events.append((_clock(), "write", len(blob)))
        sent = os.write(fd, blob)
        events.append((_clock(), "wrote", sent))
        return sent


def install() -> None:
    import borough.store.leveldb as leveldb
    import borough.wire.mux as mux

    setattr(mux, "os", _Os())  # noqa: B010 (the module's own name for os, replaced)
    waiting = trio.lowlevel.wait_readable

    async def wait_readable(sock: Any) -> None:
        events.append((_clock(), "wait", 0))
        await waiting(sock)
        events.append((_clock(), "woke", 0))

    trio.lowlevel.wait_readable = wait_readable  # type: ignore[assignment]
    commit = leveldb.LevelDBStore._engine_commit

    def engine_commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        events.append((_clock(), "commit", 0))
        try:
            return commit(self, *args, **kwargs)
        finally:
            events.append((_clock(), "committed", 0))

    leveldb.LevelDBStore._engine_commit = engine_commit  # type: ignore[method-assign]


def _stamp(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name)

    def stamped(*args: Any, **kwargs: Any) -> Any:
        events.append((_clock(), label, 0))
        try:
            return fn(*args, **kwargs)
        finally:
            events.append((_clock(), label + ".", 0))

    setattr(owner, name, stamped)


def install_steps() -> None:
    """Stamp the node's steps too (each round, turn half and its parts, flush): begin as ``name``, end as
    ``name.``."""
    import borough.node.outbox as outbox
    import borough.node.quick as quick
    import borough.node.rounds as rounds
    import borough.node.statemachine as sm
    import borough.node.turns as turns
    import borough.raft.rawnode as rawnode

    _stamp(rounds.Rounds, "_round", "round")
    _stamp(turns.Turns, "prepare", "prepare")
    _stamp(turns.Turns, "finish", "finish")
    _stamp(outbox.RaftOutbox, "receive", "receive")
    _stamp(quick.QuickCalls, "try_call", "call")
    # ... and the parts of a turn's first half: feeding the core, its Ready and plan, the batch with the apply.
    _stamp(turns.Turns, "_feed", "feed")
    _stamp(rawnode.RawNode, "ready", "ready")
    _stamp(turns, "plan_ready", "plan")
    _stamp(turns, "ready_batch", "batch")
    _stamp(sm.KvStateMachine, "apply", "apply")


def install_client() -> None:
    """Stamp each ``Partition.put`` and ``get`` in this process as it starts (``op``) and returns (``op.``)."""
    import borough.partition as partition

    for name in ("put", "get"):
        fn = getattr(partition.Partition, name)

        def stamped(*args: Any, __fn: Any = fn, **kwargs: Any) -> Any:
            async def run() -> Any:
                events.append((_clock(), "op", 0))
                try:
                    return await __fn(*args, **kwargs)
                finally:
                    events.append((_clock(), "op.", 0))

            return run()

        setattr(partition.Partition, name, stamped)


def take() -> list[tuple[int, str, int]]:
    out = list(events)
    events.clear()
    return out
