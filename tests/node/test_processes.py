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

    def __init__(self, data: Path, port: int, join: str = "") -> None:
        self.data, self.port, self.join = data, port, join
        self.address = f"127.0.0.1:{port}"
        self.log = data.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile: Any = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
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


async def start_cluster(tmp_path: Path, procs: list[Proc], n: int = 3) -> list[Proc]:
    first = Proc(tmp_path / "n0", free_port())
    procs.append(first)
    first.start()
    await first.wait_serving()
    for i in range(1, n):
        p = Proc(tmp_path / f"n{i}", free_port(), join=first.address)
        procs.append(p)
        p.start()
        await p.wait_serving()
    return procs


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
