"""The live-port fuzzer of issue 14 ("Safe to expose"): three real ``borough serve`` processes on 127.0.0.1
serve a linearizability-checked workload while hostile connections send them mutated valid frames.

The hostile peers (``hostile_peers.py``, a process of their own) are, in the first test, what anyone who reaches
the port can be without being a member: clients, and processes claiming made-up node ids (one also claiming a
member's address). Raw TCP connections send a real HELLO and then valid frames (calls of every operation, Raft
and SWIM frames, stream frames) mutated by ``fuzz_frames``: bit flips, truncation, field swaps, huge integers,
wrong types, deep nesting, repeats, garbage, lengths over the frame limit. Connections through the project's own
``Transport`` send the same payloads, structurally mutated but properly framed, so they reach the nodes' own
validators. Every hostile connection reconnects when closed. At the end: every process is alive, each answers a
legitimate get within its deadline, the workload's history is linearizable (``borough.testing.check``), no
acknowledged write was lost (``borough.testing.lost_writes``), no node grew past ``MAX_RSS_BYTES``, no node
logged a traceback, and each exits 0 on SIGTERM.

The second test sends the same frames under the real members' node ids, so they pass the role check and reach
the Raft and SWIM decoders, the replicas and the failure detector. A member is trusted (forged messages may be
believed), so only the crash checks apply there.

CI runs a 15 s budget per test (about 20 s each with start-up and checks)::

    .venv/bin/python -m pytest tests/security/test_live_fuzz.py

A long run by hand (``BOROUGH_SOAK=1`` alone gives 600 s; ``-s`` shows the counters). A failure names its seed;
``BOROUGH_FUZZ_SEED`` replays that seed's mutations (not the scheduling around them)::

    BOROUGH_FUZZ_SECONDS=600 BOROUGH_FUZZ_SEED=1 .venv/bin/python -m pytest tests/security/test_live_fuzz.py -s
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import borough
from borough.testing import NOT_FOUND, ClientOps, History, Status, check, lost_writes
from tests.registers import final_read, register_workload

from .hostile_peers import PARTITIONS

pytestmark = [pytest.mark.soak, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
SOAK = os.environ.get("BOROUGH_SOAK") == "1"
SECONDS = float(os.environ.get("BOROUGH_FUZZ_SECONDS", "600" if SOAK else "15"))
SEED = int(os.environ.get("BOROUGH_FUZZ_SEED") or random.SystemRandom().randrange(2**32))

KEYS = ("r0", "r1", "r2", "r3")  # the workload's registers: (partition, key) for these keys in PARTITIONS
CLIENTS = 3
#: Memory any node may reach under the fuzzer; far above a healthy node's, far below a leak's over minutes.
MAX_RSS_BYTES = 1024 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """One ``borough serve`` process; its stdout and stderr go to a log file."""

    def __init__(self, data: Path, join: str = "") -> None:
        self.data, self.join = data, join
        self.address = f"127.0.0.1:{free_port()}"
        self.log = data.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "borough", "serve", "--listen", self.address, "--data", str(self.data)]
        if self.join:
            args += ["--join", self.join]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=out, env=env, cwd=ROOT)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_serving(self) -> None:
        with trio.fail_after(30):
            while "serving at" not in self.output():
                if not self.alive:
                    raise AssertionError(f"node {self.address} exited early:\n{self.output()[-4000:]}")
                await trio.sleep(0.05)

    def sample_rss(self) -> None:
        if self.proc is None:
            return
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        if match:
            self.peak_rss = max(self.peak_rss, int(match.group(1)) * 1024)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code of the SIGTERM, if it took."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
                return None
        return self.proc.returncode


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    made: list[Proc] = []
    yield made
    for p in made:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(timeout=20)


async def start_cluster(tmp_path: Path, procs: list[Proc], n: int = 3) -> list[Proc]:
    for i in range(n):
        p = Proc(tmp_path / f"n{i}", join=procs[0].address if procs else "")
        procs.append(p)
        p.start()
        await p.wait_serving()
    return procs


class HostilePeers:
    """The hostile peers (``hostile_peers.py``) in a process of their own, so that building mutated frames never
    starves the legitimate client; it runs for its budget, then prints its counters and exits 0."""

    def __init__(self, tmp_path: Path, config: dict[str, Any]) -> None:
        self.out = tmp_path / "hostile.out"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "security.hostile_peers", json.dumps(config)]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT / "tests")

    async def finished(self) -> dict[str, Any]:
        """Its counters, once it has exited (bound the wait with a cancel scope)."""
        await trio.to_thread.run_sync(self.proc.wait, abandon_on_cancel=True)
        text = self.out.read_text(errors="replace")
        assert self.proc.returncode == 0, f"the hostile peers failed (a bug in the fuzzer):\n{text[-6000:]}"
        stats: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
        return stats

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


def describe(stats: dict[str, Any]) -> str:
    outcomes = collections.Counter(stats["call_outcomes"])
    top = ", ".join(f"{k} {n}" for k, n in outcomes.most_common(8))
    return (
        f"raw: {stats['connections']} connections, {stats['frames']} frames, {stats['bytes'] / 1e6:.1f} MB, "
        f"{stats['closed_mid_write']} closed by the node mid-write, {stats['stalled']} stalled; transport: "
        f"{stats['messages']} messages, {stats['calls']} calls ({top})"
    )


# ------------------------------------------------------------------------------------------------ legitimate side


async def monitor(procs: list[Proc]) -> None:
    while True:
        for p in procs:
            p.sample_rss()
        await trio.sleep(0.5)


def tracebacks(log: str) -> list[str]:
    """Each traceback in a node's log, with the line that introduced it."""
    lines = log.splitlines()
    return ["\n".join(lines[max(0, i - 1) : i + 25]) for i, line in enumerate(lines) if "Traceback (most" in line]


# ------------------------------------------------------------------------------------------------ the test


async def test_hostile_connections_with_mutated_frames_kill_no_node_and_break_no_history(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """Clients and non-members (what anyone who reaches the port can be): the full set of checks."""
    await _replayable(_run(tmp_path, procs, insiders=False), tmp_path)


async def test_mutated_raft_and_swim_frames_from_members_kill_no_node(tmp_path: Path, procs: list[Proc]) -> None:
    """Peers claiming the real members' node ids (on plain TCP anyone can; under TLS, any holder of a node
    certificate): their Raft, SWIM and snapshot frames pass the role check and reach the decoders, the replicas
    and the failure detector. A member is trusted, so forged messages may be believed and the history is not
    checked; but whatever a member sends, no node may die or log a traceback."""
    await _replayable(_run(tmp_path, procs, insiders=True), tmp_path)


async def _replayable(run: Awaitable[None], tmp_path: Path) -> None:
    try:
        await run
    except BaseException as exc:
        exc.add_note(
            f"live fuzz seed {SEED}: replay with BOROUGH_FUZZ_SEED={SEED} BOROUGH_FUZZ_SECONDS={SECONDS:g}; "
            f"node logs in {tmp_path}"
        )
        raise


async def _run(tmp_path: Path, procs: list[Proc], *, insiders: bool) -> None:
    who = "insiders" if insiders else "outsiders"
    print(f"\nlive fuzz ({who}): seed {SEED}, {SECONDS:g} s, logs in {tmp_path}")
    cluster = await start_cluster(tmp_path, procs)
    addresses = [p.address for p in cluster]
    history = History()
    stop = trio.Event()
    final: dict[tuple[str, str], object] = {}
    async with trio.open_nursery() as outer:
        outer.start_soon(monitor, cluster)
        async with borough.open_client(addresses, request_timeout=5.0, seed=SEED) as client:
            with trio.fail_after(60):  # the workload's partitions exist before the fuzzing starts
                for partition in PARTITIONS:
                    await client.partition(partition).put("ready", True)
                members = [[m.node_id, m.address] for m in await client.members()]
            assert len(members) == 3, members
            clients = [ClientOps(client, history, f"c{i}", timeout=5.0) for i in range(CLIENTS)]
            config = {"seed": SEED, "seconds": SECONDS, "members": members, "insiders": insiders}
            peers = HostilePeers(tmp_path, config)
            try:
                async with trio.open_nursery() as nursery:
                    for i, ops in enumerate(clients):
                        rng = random.Random(f"{SEED}-client-{i}")
                        nursery.start_soon(register_workload, ops, rng, stop, PARTITIONS, KEYS)
                    with trio.fail_after(SECONDS + 60):
                        stats = await peers.finished()
                    during = [op for op in history if op.status is Status.OK]
                    stop.set()
            finally:
                peers.kill()
            dead = [p.address for p in cluster if not p.alive]
            assert not dead, f"nodes died under the fuzzer: {dead}\n{describe(stats)}"
            if not insiders:
                # Each node answers a legitimate get within its deadline.
                for p in cluster:
                    async with borough.open_client([p.address], request_timeout=10.0) as one:
                        with trio.fail_after(15):
                            await one.partition(PARTITIONS[0]).get("ready")
                final_ops = ClientOps(client, history, "final", timeout=10.0)
                final = {(p, k): await final_read(final_ops, p, k) for p in PARTITIONS for k in KEYS}
        outer.cancel_scope.cancel()

    ok = [op for op in history if op.status is Status.OK]
    unknown = [op for op in history if op.status is Status.UNKNOWN]
    print(
        f"live fuzz ({who}): {describe(stats)}\nworkload: {len(history)} operations, {len(ok)} ok ({len(during)} "
        f"during the fuzzing), {len(unknown)} unknown; peak RSS "
        + ", ".join(f"{p.address} {p.peak_rss / 2**20:.0f} MiB" for p in cluster)
    )
    if not insiders:
        assert during, "no workload operation succeeded while the hostile peers ran"
        result = check(history)
        assert result.ok, f"{result.outcome.value}: {result.explanation}"
        assert lost_writes(history, final) == [], final
        assert all(v is NOT_FOUND or isinstance(v, str) for v in final.values()), final
    await _stop_and_check_logs(cluster)


async def _stop_and_check_logs(cluster: list[Proc]) -> None:
    for p in cluster:
        assert p.peak_rss < MAX_RSS_BYTES, f"{p.address} reached {p.peak_rss / 2**20:.0f} MiB"
    found = {p.address: tracebacks(p.output()) for p in cluster}
    assert not any(found.values()), "tracebacks in the node logs:\n" + "\n\n".join(
        f"--- {address}\n" + "\n\n".join(tbs[:3]) for address, tbs in found.items() if tbs
    )
    codes = {p.address: p.stop() for p in cluster}
    assert all(code == 0 for code in codes.values()), f"exit codes after SIGTERM: {codes}"
    found = {p.address: tracebacks(p.output()) for p in cluster}
    assert not any(found.values()), "tracebacks while shutting down:\n" + "\n\n".join(
        f"--- {address}\n" + "\n\n".join(tbs[:3]) for address, tbs in found.items() if tbs
    )
