"""etcd baseline for ``bench/cluster.py``: a 3-member etcd cluster on 127.0.0.1 under the same load as Borough.

Owns: starting three ``etcd`` processes (Debian's ``etcd-server``, 3.4: ``apt-get install etcd-server``) on free
loopback ports, with the defaults etcd ships (its WAL is fsynced before every acknowledgement, as Borough's log is
with fsync on), waiting for a leader, running a closed-loop load against it and always stopping the processes.
It does not know Borough; ``bench/cluster.py`` puts its figures next to Borough's in the same run.

The load is the one ``bench/cluster.py`` issues: puts of random 16-byte keys with 100-byte values, and
linearizable gets (etcd's default range read, a ReadIndex through the leader) of keys written beforehand, at 1,
16 and 64 callers, each with one request in flight. It is issued from this Python process through ``grpcio``
(the ``bench`` extra), all callers on one channel to the leader's client URL, so both systems are
driven by a Python client on the same two cores. The requests are encoded here by hand (two length-delimited
protobuf fields), so no generated etcd stubs are needed. The load CPU column is this process's CPU.

Run from the worktree root: ``.venv/bin/python bench/etcd_baseline.py [--seconds 3] [--clients 1,64]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from cluster import free_port, proc_cpu, random_key, stop_processes, summary  # noqa: E402

MEMBERS = 3
VALUE = b"v" * 100
PRELOAD_KEYS = 2048
PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"


def available() -> str | None:
    """Why the baseline cannot run here (a line to print), or None when it can."""
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        return "etcd is not installed (Debian: apt-get install etcd-server etcd-client)"
    try:
        import grpc  # noqa: F401
    except ImportError:
        return "grpcio is not installed (pip install -e '.[bench]')"
    return None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def put_request(key: bytes, value: bytes) -> bytes:
    return _field(1, key) + _field(2, value)  # PutRequest{key = 1, value = 2}


def range_request(key: bytes) -> bytes:
    return _field(1, key)  # RangeRequest{key = 1}: linearizable unless serializable = 7 is set


class EtcdCluster:
    """Three etcd members in ``root``; ``start()`` returns once one of them leads."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.client_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(MEMBERS)]
        self.peer_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(MEMBERS)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 30.0) -> str:
        initial = ",".join(f"e{i}={url}" for i, url in enumerate(self.peer_urls))
        for i in range(MEMBERS):
            args = ["etcd", "--name", f"e{i}", "--data-dir", str(self.root / f"e{i}")]
            args += ["--listen-client-urls", self.client_urls[i], "--advertise-client-urls", self.client_urls[i]]
            args += ["--listen-peer-urls", self.peer_urls[i], "--initial-advertise-peer-urls", self.peer_urls[i]]
            args += ["--initial-cluster", initial, "--initial-cluster-state", "new"]
            args += ["--initial-cluster-token", "borough-bench", "--log-level", "error", "--logger", "zap"]
            log = open(self.root / f"e{i}.log", "wb")  # noqa: SIM115 - lives as long as the process
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=log))
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader()
            if leader is not None:
                return leader
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                logs = "\n".join((self.root / f"e{i}.log").read_text(errors="replace")[-2000:] for i in range(MEMBERS))
                raise RuntimeError(f"etcd did not elect a leader within {timeout:g} s:\n{logs}")
            time.sleep(0.2)

    def leader(self) -> str | None:
        """The client URL of the member that leads, from ``etcdctl endpoint status``; None while there is none."""
        args = ["etcdctl", "--endpoints", ",".join(self.client_urls), "endpoint", "status", "-w", "json"]
        try:
            out = subprocess.run(args, capture_output=True, timeout=10, env=dict(os.environ, ETCDCTL_API="3"))
            rows = json.loads(out.stdout or b"[]")
        except (subprocess.TimeoutExpired, ValueError):
            return None
        for row in rows:
            status = row.get("Status", {})
            if status.get("leader") and status.get("leader") == status.get("header", {}).get("member_id"):
                return str(row["Endpoint"])
        return None

    def cpu(self) -> float:
        return sum(proc_cpu(p.pid) for p in self.procs)

    def stop(self) -> None:
        stop_processes(self.procs)


def run_load(
    cluster: EtcdCluster, target: str, *, op: str, clients: int, seconds: float, warmup: float, keys: list[bytes]
) -> dict[str, float]:
    """One closed-loop window: ``clients`` callers on one channel, each with one request in flight. A caller is
    a chain of asynchronous calls (``future``): each call's completion, on grpc's own thread, issues the next, so
    64 callers cost no 64 Python threads (which spent more CPU switching than the calls did)."""
    import grpc

    latencies: list[float] = []
    errors = [0]
    state = {"measuring": False, "stop": False}
    finished = threading.Semaphore(0)
    with grpc.insecure_channel(target.removeprefix("http://")) as channel:
        put = channel.unary_unary(PUT)
        get = channel.unary_unary(RANGE)

        def issue(rng: random.Random) -> None:
            if state["stop"]:
                finished.release()
                return
            t0 = time.perf_counter()
            if op == "put":
                call = put.future(put_request(random_key(rng).encode(), VALUE), timeout=10)
            else:
                call = get.future(range_request(keys[rng.randrange(len(keys))]), timeout=10)
            call.add_done_callback(lambda f: landed(f, t0, rng))

        def landed(call: Any, t0: float, rng: random.Random) -> None:
            if call.exception() is not None:
                errors[0] += 1
            elif state["measuring"]:
                latencies.append(time.perf_counter() - t0)
            issue(rng)

        for w in range(clients):
            issue(random.Random(w))
        time.sleep(warmup)
        state["measuring"] = True
        cpu0, load0, t0 = cluster.cpu(), time.process_time(), time.perf_counter()
        time.sleep(seconds)
        state["measuring"] = False
        done = len(latencies)
        elapsed = time.perf_counter() - t0
        cpu1, load1 = cluster.cpu(), time.process_time()
        state["stop"] = True
        for _ in range(clients):
            finished.acquire(timeout=15)
    result = summary(latencies[:done], done, elapsed, cpu1 - cpu0, load1 - load0)
    result["errors"] = float(errors[0])
    return result


def preload(target: str, keys: list[bytes]) -> None:
    import grpc

    with grpc.insecure_channel(target.removeprefix("http://")) as channel:
        put = channel.unary_unary(PUT)
        for key in keys:
            put(put_request(key, VALUE), timeout=10)


def run_etcd(
    *, ops: tuple[str, ...], clients_list: tuple[int, ...], seconds: float, warmup: float
) -> list[tuple[str, int, dict[str, Any]]]:
    """Start a cluster, run each (op, clients) window against its leader, stop it; the figures of each window."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-etcd-bench-"))
    cluster = EtcdCluster(root)
    results: list[tuple[str, int, dict[str, Any]]] = []
    try:
        target = cluster.start()
        keys = [f"key{i:012d}".encode() for i in range(PRELOAD_KEYS)]
        if "get" in ops:
            preload(target, keys)
        for op in ops:
            for clients in clients_list:
                r = run_load(cluster, target, op=op, clients=clients, seconds=seconds, warmup=warmup, keys=keys)
                results.append((op, clients, r))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return results


LABELS = {"put": "etcd 3.4 put (fsync on)", "get": "etcd 3.4 get (linearizable)"}


def main() -> None:
    from cluster import bench_etcd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--clients", default="1,16,64", help="caller counts, e.g. 1,64")
    parser.add_argument("--ops", default="put,get", help="put,get")
    args = parser.parse_args()
    clients = tuple(int(n) for n in args.clients.split(","))
    bench_etcd(args.seconds, args.warmup, clients, tuple(args.ops.split(",")))


if __name__ == "__main__":
    main()
