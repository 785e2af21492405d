"""``borough serve`` with the hot path's functions timed where they run: each call's wall time, by function.

Run by ``bench/step_times.py`` in place of ``python -m borough serve``. The first SIGUSR2 starts a window (what was
timed before is dropped); the second writes, as one JSON line to the file named by ``BOROUGH_TIMES_OUT``, each
timed function's calls in the window and their durations in microseconds (the last ``KEPT`` of them). A timed
function's time includes the timed functions it calls. Each timing costs about a microsecond, so what it shows is
the node's own cost with that added; nothing else differs from a normal node.
"""

from __future__ import annotations

import collections
import functools
import importlib
import json
import os
import runpy
import signal
import sys
import time
from typing import Any

#: (module, class or None, function, other modules that imported the function by name and call it from there)
TIMED: list[tuple[str, str | None, str, tuple[str, ...]]] = [
    ("borough.wire.codec", "FrameCodec", "next_event", ()),
    ("borough.wire.mux", "MuxConnection", "_dispatch", ()),
    ("borough.wire.mux", "MuxConnection", "send_message_frame", ()),
    ("borough.wire.mux", None, "_send_now", ()),
    ("borough.node.outbox", "RaftOutbox", "receive", ()),
    ("borough.node.outbox", "RaftOutbox", "flush", ()),
    ("borough.node.quick", "QuickCalls", "try_call", ()),
    ("borough.node.quick", "QuickCalls", "_answer_write", ()),
    ("borough.node.rounds", "Rounds", "_round", ()),
    ("borough.node.turns", "Turns", "prepare", ()),
    ("borough.node.turns", "Turns", "finish", ()),
    ("borough.node.turns", "Turns", "_feed", ()),
    ("borough.raft.rawnode", "RawNode", "step", ()),
    ("borough.raft.rawnode", "RawNode", "ready", ()),
    ("borough.raft.rawnode", "RawNode", "advance", ()),
    ("borough.raft.ready_plan", None, "plan_ready", ("borough.node.turns",)),
    ("borough.node.persist", None, "ready_batch", ("borough.node.turns",)),
    ("borough.node.statemachine", "KvStateMachine", "apply", ()),
    ("borough.store.group_commit", "GroupCommit", "submit", ()),
    ("borough.store.base", "Store", "write", ()),
    ("borough.store.leveldb", "LevelDBStore", "_engine_commit", ()),
]
KEPT = 200_000  # durations kept per function (the latest)

durations: dict[str, collections.deque[float]] = {}
calls: collections.Counter[str] = collections.Counter()


def timed(name: str, fn: Any) -> Any:
    kept = durations[name] = collections.deque(maxlen=KEPT)
    clock = time.perf_counter

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            kept.append(clock() - started)
            calls[name] += 1

    return wrapper


for module_name, class_name, fn_name, importers in TIMED:
    module = importlib.import_module(module_name)
    owner = getattr(module, class_name) if class_name else module
    name = f"{class_name}.{fn_name}" if class_name else fn_name
    wrapped = timed(name, getattr(owner, fn_name))
    setattr(owner, fn_name, wrapped)
    for importer in importers:
        setattr(importlib.import_module(importer), fn_name, wrapped)

windows = 0


def snapshot(signum: int, frame: Any) -> None:
    global windows
    windows += 1
    if windows == 1:
        for kept in durations.values():
            kept.clear()
        calls.clear()
        return
    out = {name: {"calls": calls[name], "us": [round(d * 1e6, 2) for d in kept]} for name, kept in durations.items()}
    with open(os.environ["BOROUGH_TIMES_OUT"], "w") as f:
        f.write(json.dumps(out) + "\n")


signal.signal(signal.SIGUSR2, snapshot)
sys.argv = ["borough", *sys.argv[1:]]
runpy.run_module("borough", run_name="__main__")
