"""Real processes: ``borough serve`` nodes on 127.0.0.1, written to through ``borough.open_client``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import borough

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """One ``borough serve`` process; its stderr goes to a file we can read."""

    def __init__(self, data: Path, port: int, join: str = "", env: dict[str, str] | None = None) -> None:
        self.data, self.port, self.join = data, port, join
        self.env = env or {}
        self.address = f"127.0.0.1:{port}"
        self.log = data.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile: Any = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **self.env)
        args = [sys.executable, "-m", "borough", "serve", "--listen", self.address, "--data", str(self.data)]
        if self.join:
            args += ["--join", self.join]
        self.close_log()
        self.logfile = open(self.log, "ab")  # noqa: SIM115 - closed in close_log()
        self.proc = subprocess.Popen(args, stdout=self.logfile, stderr=self.logfile, env=env, cwd=ROOT)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_serving(self) -> None:
        with trio.fail_after(30):
            while "serving at" not in self.output():
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"node exited early:\n{self.output()}")
                await trio.sleep(0.05)

    def close_log(self) -> None:
        if self.logfile is not None:
            self.logfile.close()
            self.logfile = None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.close_log()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    made: list[Proc] = []
    yield made
    for p in made:
        try:
            p.stop()
        finally:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()


async def start_cluster(
    tmp_path: Path, procs: list[Proc], n: int = 3, env: dict[str, str] | None = None, *, kind: type[Proc] = Proc
) -> list[Proc]:
    """``n`` nodes (``kind``: how each process is started), the first bootstrapping, the rest joining it."""
    first = kind(tmp_path / "n0", free_port(), env=env)
    procs.append(first)
    first.start()
    await first.wait_serving()
    for i in range(1, n):
        await add_proc(tmp_path, procs, i, first.address, env, kind=kind)
    return procs


async def add_proc(
    tmp_path: Path, procs: list[Proc], i: int, join: str, env: dict[str, str] | None = None, *, kind: type[Proc] = Proc
) -> Proc:
    p = kind(tmp_path / f"n{i}", free_port(), join=join, env=env)
    procs.append(p)
    p.start()
    await p.wait_serving()
    return p


async def test_three_processes_survive_a_sigkill_and_restart_without_losing_acknowledged_writes(
    tmp_path: Path, procs: list[Proc]
) -> None:
    cluster = await start_cluster(tmp_path, procs)
    acked: dict[tuple[str, str], int] = {}
    async with borough.open_client([p.address for p in cluster]) as client:
        with trio.fail_after(60):
            for i in range(60):
                part = f"part{i % 6}"
                await client.partition(part).put(f"k{i}", i)
                acked[(part, f"k{i}")] = i
        victim = cluster[1]
        victim.kill()  # SIGKILL: no cleanup at all
        with trio.fail_after(60):
            for i in range(60, 90):
                part = f"part{i % 6}"
                await client.partition(part).put(f"k{i}", i)
                acked[(part, f"k{i}")] = i
        victim.start()
        await victim.wait_serving()
        with trio.fail_after(60):
            for (part, key), value in acked.items():
                assert await client.partition(part).get(key) == value
    # Every replica converges: read each partition's data from the restarted node's own replica too.
    async with borough.open_client([victim.address]) as client:
        with trio.fail_after(60):
            for part in {p for p, _ in acked}:
                items = dict([kv async for kv in client.partition(part).iterator()])
                assert items == {k: v for (p, k), v in acked.items() if p == part}


async def test_a_data_dir_of_another_cluster_is_refused_with_a_clear_message(tmp_path: Path, procs: list[Proc]) -> None:
    cluster = await start_cluster(tmp_path, procs, n=1)
    stranger = Proc(tmp_path / "stranger", free_port())
    procs.append(stranger)
    stranger.start()
    await stranger.wait_serving()
    stranger.stop()
    # Restarted on its own data dir but told to join the other cluster: refused, and the process exits.
    stranger.join = cluster[0].address
    stranger.start()
    assert stranger.proc is not None
    returncode = await trio.to_thread.run_sync(stranger.proc.wait, 30)
    assert returncode != 0
    out = stranger.output()
    assert "belongs to cluster" in out and "another data dir" in out, out


async def test_partitions_end_on_three_live_nodes_as_nodes_join_leave_and_die(
    tmp_path: Path, procs: list[Proc]
) -> None:
    # Three nodes, clients writing; a 4th and a 5th join, one node is decommissioned and stopped, one is
    # SIGKILLed for good: every partition ends with three voters on live members, nothing acknowledged lost.
    env = {"BOROUGH_DEAD_AFTER": "4"}
    cluster = await start_cluster(tmp_path, procs, env=env)
    names = [f"part{i}" for i in range(8)]
    acked: dict[tuple[str, str], int] = {}
    stop = trio.Event()

    async def writer(client: borough.Client) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            part, key = names[n % len(names)], f"k{n % 4}"
            try:
                with trio.fail_after(10):
                    await client.partition(part).put(key, n)
                acked[(part, key)] = n
            except (borough.Unavailable, borough.Timeout, trio.TooSlowError):
                pass  # outcome unknown: a later acknowledged write of the key decides
            await trio.sleep(0.01)

    async with borough.open_client([p.address for p in cluster]) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, client)
            await trio.sleep(1)
            for i in (3, 4):
                await add_proc(tmp_path, procs, i, cluster[0].address, env)
                await trio.sleep(2)
            table = await client.members()
            ids = {m.address: m.node_id for m in table}
            leaving, dead = procs[1], procs[2]
            with trio.fail_after(120):
                await client.decommission(ids[leaving.address])
            leaving.stop()
            dead.kill()
            live = {ids[p.address] for p in procs if p not in (leaving, dead)}
            with trio.fail_after(180):
                while True:
                    infos = [await client.partition(name).info() for name in names]
                    if all(
                        len(i.peers) == 3
                        and {p.node_id for p in i.peers} <= live
                        and sorted(p.role for p in i.peers) == ["leader", "voter", "voter"]
                        for i in infos
                    ):
                        break
                    await trio.sleep(1)
            stop.set()
        with trio.fail_after(60):
            for (part, key), value in acked.items():
                got = await client.partition(part).get(key)
                assert got >= value, f"{part}/{key}: acknowledged {value}, read {got}"
