"""Wire benchmark over loopback TCP: call round trips/s and latency with 1 and 64 concurrent callers, bulk stream
MB/s, and the same figures for a plain trio length-prefixed echo (one connection per caller) as the baseline.

Run from the worktree root: ``/work/venv/bin/python bench/wire.py [--seconds 3] [--bulk-mib 256]``.
The server runs in a child process so client and server each get a core, as two nodes would.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cbor2  # noqa: E402
import trio  # noqa: E402

from borough.wire.mux import IncomingCall, PeerInfo  # noqa: E402
from borough.wire.network import TcpNetwork  # noqa: E402
from borough.wire.transport import Identity, open_transport  # noqa: E402

BODY: dict[str, Any] = {"op": "put", "partition": "user:42", "key": "name", "value": {"first": "Ada", "n": 7}}
BLOCK = 256 * 1024


# ------------------------------------------------------------------------------------------------ servers


async def mux_server(ready: Any) -> None:
    async def on_call(peer: PeerInfo, call: IncomingCall) -> Any:
        if "bulk" in call.streams:
            st = call.streams["bulk"]
            total = 0
            while chunk := await st.receive_some():
                total += len(chunk)
            return total
        return call.body

    async with open_transport(
        TcpNetwork(), identity=Identity(node_id="server", cluster_id="bench"), listen="127.0.0.1:0", on_call=on_call
    ) as transport:
        ready.put(transport.listen_address)
        await trio.sleep_forever()


async def echo_server(ready: Any) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        buf = bytearray()
        try:
            while True:
                chunk = await stream.receive_some(BLOCK)
                if not chunk:
                    return
                buf += chunk
                out = []
                while len(buf) >= 4:
                    n = int.from_bytes(buf[:4], "big")
                    if n == 0xFFFFFFFF:  # bulk mode: count everything until EOF, then report the count
                        total = len(buf) - 4
                        while chunk := await stream.receive_some(BLOCK):
                            total += len(chunk)
                        await stream.send_all(total.to_bytes(8, "big"))
                        return
                    if len(buf) < 4 + n:
                        break
                    out.append(bytes(buf[: 4 + n]))
                    del buf[: 4 + n]
                if out:
                    await stream.send_all(b"".join(out))
        except trio.BrokenResourceError:
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    ready.put(f"127.0.0.1:{listeners[0].socket.getsockname()[1]}")
    await trio.serve_listeners(handler, listeners)


def run_server(kind: str, ready: Any) -> None:
    trio.run(mux_server if kind == "mux" else echo_server, ready)


# ------------------------------------------------------------------------------------------------ clients


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of ``pid`` (Linux /proc), so figures can be normalised by
    the CPU actually used: on a shared machine wall-clock rates swing with other load, CPU cost per call does not."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def measure_calls(
    make_caller: Any, callers: int, seconds: float, server_pid: int
) -> tuple[float, float, float, float]:
    """(round trips/s, p50 ms, p99 ms, round trips per CPU-second of client and server together)."""
    latencies: list[float] = []
    callables = [await make_caller() for _ in range(callers)]
    deadline = trio.current_time() + seconds

    async def loop(call: Any) -> None:
        while trio.current_time() < deadline:
            t0 = trio.current_time()
            await call()
            latencies.append(trio.current_time() - t0)

    start = trio.current_time()
    cpu0 = cpu_seconds() + cpu_seconds(server_pid)
    async with trio.open_nursery() as n:
        for call in callables:
            n.start_soon(loop, call)
    elapsed = trio.current_time() - start
    cpu = cpu_seconds() + cpu_seconds(server_pid) - cpu0
    latencies.sort()
    rate = len(latencies) / elapsed
    return rate, percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3, len(latencies) / cpu


async def bench_mux(address: str, seconds: float, bulk_bytes: int, server_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with open_transport(TcpNetwork(), identity=Identity(node_id=None)) as transport:
        await transport.call(address, BODY)  # connect and warm up

        async def make_caller() -> Any:
            async def call() -> None:
                reply = await transport.call(address, BODY)
                assert reply.body == BODY

            return call

        for callers in (1, 64):
            out[callers] = await measure_calls(make_caller, callers, seconds, server_pid)

        async def source() -> Any:
            block = bytes(BLOCK)
            for _ in range(bulk_bytes // BLOCK):
                yield block

        t0, cpu0 = trio.current_time(), cpu_seconds() + cpu_seconds(server_pid)
        reply = await transport.call(address, {"op": "bulk"}, streams={"bulk": source()})
        elapsed, cpu = trio.current_time() - t0, cpu_seconds() + cpu_seconds(server_pid) - cpu0
        assert reply.body == bulk_bytes
        out["bulk"] = (bulk_bytes / elapsed / 1e6, bulk_bytes / cpu / 1e6)
    return out


async def bench_echo(address: str, seconds: float, bulk_bytes: int, server_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    host, port = address.rsplit(":", 1)
    payload = cbor2.dumps(BODY)
    frame = len(payload).to_bytes(4, "big") + payload
    streams: list[trio.SocketStream] = []

    async def make_caller() -> Any:
        stream = await trio.open_tcp_stream(host, int(port))
        streams.append(stream)
        buf = bytearray()

        async def call() -> None:
            await stream.send_all(frame)
            while len(buf) < len(frame):
                buf.extend(await stream.receive_some(65536))
            assert buf[: len(frame)] == frame
            del buf[: len(frame)]

        return call

    for callers in (1, 64):
        out[callers] = await measure_calls(make_caller, callers, seconds, server_pid)
    for stream in streams:
        await stream.aclose()

    stream = await trio.open_tcp_stream(host, int(port))
    block = bytes(BLOCK)
    t0, cpu0 = trio.current_time(), cpu_seconds() + cpu_seconds(server_pid)
    await stream.send_all(b"\xff\xff\xff\xff")
    for _ in range(bulk_bytes // BLOCK):
        await stream.send_all(block)
    await stream.send_eof()
    got = b""
    while len(got) < 8:
        got += await stream.receive_some(8)
    elapsed, cpu = trio.current_time() - t0, cpu_seconds() + cpu_seconds(server_pid) - cpu0
    assert int.from_bytes(got, "big") == bulk_bytes
    await stream.aclose()
    out["bulk"] = (bulk_bytes / elapsed / 1e6, bulk_bytes / cpu / 1e6)
    return out


def run_against(kind: str, seconds: float, bulk_bytes: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=run_server, args=(kind, ready), daemon=True)
    proc.start()
    try:
        address = ready.get(timeout=30)
        bench = bench_mux if kind == "mux" else bench_echo
        assert proc.pid is not None
        return trio.run(bench, address, seconds, bulk_bytes, proc.pid)
    finally:
        proc.terminate()
        proc.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each round-trip measurement")
    parser.add_argument("--bulk-mib", type=int, default=256, help="size of the bulk stream in MiB")
    args = parser.parse_args()
    bulk = args.bulk_mib * 1024 * 1024
    mux = run_against("mux", args.seconds, bulk)
    echo = run_against("echo", args.seconds, bulk)

    print(f"wire benchmark: loopback TCP, server in a child process, {args.seconds:g} s per round-trip figure")
    print(f"call body: {len(cbor2.dumps(BODY))} bytes of CBOR; bulk: {args.bulk_mib} MiB in {BLOCK // 1024} KiB blocks")
    print("per CPU-s: work done per second of CPU used by client + server together (robust to other load)")
    print()
    print(f"| {'what':<40} | {'round trips/s':>13} | {'p50 ms':>7} | {'p99 ms':>7} | {'per CPU-s':>9} |")
    print(f"|{'-' * 42}|{'-' * 15}|{'-' * 9}|{'-' * 9}|{'-' * 11}|")
    for name, res in (("borough wire call", mux), ("plain length-prefixed echo", echo)):
        for callers in (1, 64):
            rate, p50, p99, per_cpu = res[callers]
            label = f"{name}, {callers} caller{'s' if callers > 1 else ''}"
            print(f"| {label:<40} | {rate:>13,.0f} | {p50:>7.3f} | {p99:>7.3f} | {per_cpu:>9,.0f} |")
    print()
    print(f"| {'bulk stream':<40} | {'MB/s':>13} | {'MB per CPU-s':>12} |")
    print(f"|{'-' * 42}|{'-' * 15}|{'-' * 14}|")
    print(f"| {'borough wire stream (credit windows)':<40} | {mux['bulk'][0]:>13,.0f} | {mux['bulk'][1]:>12,.0f} |")
    print(f"| {'plain TCP send_all':<40} | {echo['bulk'][0]:>13,.0f} | {echo['bulk'][1]:>12,.0f} |")
    print()
    ratio, cpu_ratio = mux[64][0] / echo[64][0], mux[64][3] / echo[64][3]
    print(f"64 callers, wire / plain echo: {ratio:.2f} by round trips/s, {cpu_ratio:.2f} per CPU-s (target >= 0.5)")
    print(f"bulk stream: {mux['bulk'][0]:.0f} MB/s wall clock, {mux['bulk'][1]:.0f} MB per CPU-s (target >= 200)")


if __name__ == "__main__":
    main()
