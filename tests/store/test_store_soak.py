"""Soak: a child process runs a random workload on LevelDB and is SIGKILLed at a random moment, again and again.
What the next open finds must be exactly the state after some whole round at or after the last round reported
synced (a replay of the same seed in a MemoryStore says what each round's state is, byte for byte)."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import settings

from borough.store import LevelDBStore, MemoryStore
from borough.store import encoding as enc

from .workload import dump, run_round

ROOT = pathlib.Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import random, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from borough.store import LevelDBStore
    from store.workload import run_round

    store = LevelDBStore.open({path!r})
    rng = random.Random({seed})
    for n in range(1, 20_000):  # the parent kills us long before; the bound makes sure we stop anyway
        if run_round(store, rng, n):
            print(n, flush=True)
    """
)


def comparable(items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    # The id counter may run ahead of a round's state (an install begun in a round cut short by the kill).
    return [kv for kv in items if kv[0] != enc.META_NEXT_ID]


def kill_and_check(tmp_path: pathlib.Path, seed: int) -> None:
    path = str(tmp_path / f"data-{seed}")
    rng = random.Random(seed)
    kill_after = rng.randint(1, 60)
    script = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), path=path, seed=seed)
    acked = 0
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            for count, line in enumerate(child.stdout, 1):
                acked = int(line)
                if count >= kill_after:
                    os.kill(child.pid, signal.SIGKILL)
                    break
        finally:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, f"seed {seed}: the child stopped before it was killed"

    store = LevelDBStore.open(path)  # collects the garbage a crash left
    try:
        found = comparable(dump(store))
    finally:
        store.close()
    replay = MemoryStore()
    replay_rng = random.Random(seed)
    for n in range(1, 20_000):
        run_round(replay, replay_rng, n)
        if n >= acked and comparable(dump(replay)) == found:
            return
        if n > acked + 500:
            break
    pytest.fail(f"seed {seed}: the data dir matches no round at or after round {acked}, the last reported synced")


@pytest.mark.soak
def test_sigkilled_workloads_recover_to_a_whole_round(tmp_path: pathlib.Path) -> None:
    runs = max(2, settings().max_examples // 25)  # 2 in CI, 800 with BOROUGH_SOAK=1
    base = int(os.environ.get("BOROUGH_SOAK_SEED", "1"))
    for seed in range(base, base + runs):
        kill_and_check(tmp_path, seed)
