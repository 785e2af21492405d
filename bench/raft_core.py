"""Benchmark of the sans-IO Raft core: a 3-member cluster of cores, in-memory storage, no I/O.

Each cycle the leader takes P proposals, then every member handles its Ready (persist to memory, route
messages, apply committed entries, advance) and steps the messages addressed to it. Replication is pipelined,
so an entry commits a couple of cycles after it is proposed. Reports committed entries per second (entries
applied by the leader) and CPU microseconds per committed entry, for P = 1 and P = 64.

Run from the worktree root: /work/venv/bin/python bench/raft_core.py [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from borough.raft.config import RaftConfig  # noqa: E402
from borough.raft.memory_storage import MemoryLogStorage  # noqa: E402
from borough.raft.messages import Message  # noqa: E402
from borough.raft.rawnode import RawNode  # noqa: E402
from borough.raft.records import ConfState, NodeId  # noqa: E402

IDS = [NodeId("n1"), NodeId("n2"), NodeId("n3")]
PAYLOAD = b"x" * 64


class Cluster:
    def __init__(self) -> None:
        conf = ConfState(voters=IDS)
        self.storage = {i: MemoryLogStorage(conf) for i in IDS}
        self.nodes = {
            i: RawNode(RaftConfig(id=i, max_inflight_msgs=1024), self.storage[i], random.Random(k))
            for k, i in enumerate(IDS)
        }
        self.inbox: dict[NodeId, list[Message]] = {i: [] for i in IDS}
        self.applied = dict.fromkeys(IDS, 0)
        self.leader = self.nodes[IDS[0]]
        self.leader.campaign()
        for _ in range(10):
            self.cycle()
        assert self.leader.status().leader == IDS[0]

    def cycle(self) -> None:
        inbox = self.inbox
        for i, node in self.nodes.items():
            if node.has_ready():
                rd = node.ready()
                self.storage[i].persist(rd)
                for m in rd.messages:
                    inbox[m.to].append(m)
                if rd.committed_entries:
                    self.applied[i] += len(rd.committed_entries)
                node.advance(rd)
        for i, node in self.nodes.items():
            msgs = inbox[i]
            if msgs:
                inbox[i] = []
                for m in msgs:
                    node.step(m)


def run(per_cycle: int, seconds: float) -> tuple[float, float, int]:
    c = Cluster()
    leader = c.leader
    lid = IDS[0]
    start_applied = c.applied[lid]
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    cycles = 0
    while True:
        for _ in range(per_cycle):
            leader.propose(PAYLOAD)
        c.cycle()
        cycles += 1
        if cycles % 64 == 0 and time.perf_counter() - t0 >= seconds:
            break
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    committed = c.applied[lid] - start_applied
    # Every member applied the same entries (a sanity check that the benchmark measures real replication).
    assert all(abs(c.applied[i] - c.applied[lid]) <= 4 * per_cycle for i in IDS)
    return committed / wall, cpu * 1e6 / committed, committed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per row (default 5)")
    args = parser.parse_args()
    print(f"Raft core, 3 members, in-memory storage, {len(PAYLOAD)}-byte entries, {args.seconds:g} s per row")
    print(f"{'proposals/cycle':>16} {'committed entries/s':>20} {'CPU us/entry':>13} {'entries':>10} {'target/s':>9}")
    for per_cycle, target in ((1, 20_000), (64, 200_000)):
        rate, us, n = run(per_cycle, args.seconds)
        print(f"{per_cycle:>16} {rate:>20,.0f} {us:>13.2f} {n:>10,} {target:>9,}")


if __name__ == "__main__":
    main()
