"""Handlers that are transactions (issue 18) with real processes: the counter-and-audit example on three nodes
(``bench/_txn_server.py``: ``borough.serve`` with the counter handler), 16 client tasks on 10 partitions, one
node SIGKILLed midway and restarted. No request raises; each counter equals the number of acknowledged requests
to its partition; the audit partition holds exactly one record per increment."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import borough
from tests.node.test_processes import ROOT, Proc, procs, start_cluster  # noqa: F401 - procs is a fixture

pytestmark = pytest.mark.e2e


class CounterProc(Proc):
    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **self.env)
        args = [sys.executable, str(ROOT / "bench" / "_txn_server.py"), self.address, str(self.data)]
        args += [self.join] if self.join else []
        self.close_log()
        self.logfile = open(self.log, "ab")  # noqa: SIM115 - closed in close_log()
        self.proc = subprocess.Popen(args, stdout=self.logfile, stderr=self.logfile, env=env, cwd=ROOT)


async def test_counter_and_audit_with_three_processes_and_a_sigkill(tmp_path: Path, procs: list[Proc]) -> None:  # noqa: F811
    await start_cluster(tmp_path, procs, kind=CounterProc)
    names = [f"acct{i}" for i in range(10)]
    acked: dict[str, list[int]] = {name: [] for name in names}
    errors: list[str] = []
    stop = trio.Event()

    async def client_task(client: borough.Client, n: int) -> None:
        rng = random.Random(n)
        seq = 0
        while not stop.is_set():
            seq += 1
            name = names[rng.randrange(len(names))]
            try:
                with trio.fail_after(60):
                    reply = await client.request(name, {"audit": True, "id": f"c{n}-{seq}"})
            except (borough.BoroughError, trio.TooSlowError) as exc:
                errors.append(f"{name}: {exc!r}")
            else:
                acked[name].append(reply["count"])

    async with borough.open_client([p.address for p in procs]) as client:
        async with trio.open_nursery() as nursery:
            for n in range(16):
                nursery.start_soon(client_task, client, n)
            await trio.sleep(3)
            victim = procs[1]
            victim.kill()  # SIGKILL, with requests in flight on the partitions it leads
            await trio.sleep(3)
            victim.start()
            await victim.wait_serving()
            await trio.sleep(2)
            stop.set()
        assert not errors, errors[:5]
        assert sum(map(len, acked.values())) > 50
        await check_counters(client, acked)


async def check_counters(client: borough.Client, acked: dict[str, list[int]]) -> None:
    """Each partition's counter equals the requests acknowledged to it (the counts they answered are 1..counter:
    each ran once), and the audit partition ends with exactly one record per increment. ``acked`` has every
    partition the requests went to, acknowledged or not."""
    total = sum(map(len, acked.values()))
    with trio.fail_after(60):
        while True:  # effects owed by a killed leader are sent by the next one
            audit = [k async for k in client.partition("audit").iterator(values=False)]
            if len(audit) >= total:
                break
            await trio.sleep(0.5)
    for name, counts in acked.items():
        counter = await client.partition(name).get("counter", 0)
        assert sorted(counts) == list(range(1, counter + 1)), name
        records = [k for k in audit if isinstance(k, str) and k.startswith(f"{name}/")]
        assert records == [f"{name}/{n:08d}" for n in range(1, counter + 1)], name
    assert len(audit) == total
