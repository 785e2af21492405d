"""A ``borough serve`` process with the counter handler (issue 18's example), for bench/cluster.py --txn and
tests/node/test_processes.py: ``python bench/_txn_server.py LISTEN DATA_DIR [JOIN]``.

The handler reads the partition's counter, writes it back plus one and, when the body asks (``"audit": true``),
appends an audit record to the ``audit`` partition. Its reply carries this process's node id and how many times
the handler ran here, so the caller can tell conflict re-runs (runs - acknowledged requests)."""

from __future__ import annotations

import pathlib
import sys
from functools import partial
from typing import Any

import trio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import borough  # noqa: E402

RUNS = 0


async def counter(request: borough.Request) -> Any:
    global RUNS
    RUNS += 1
    count = await request.partition.get("counter", 0) + 1
    await request.partition.put("counter", count)
    body = request.body if isinstance(request.body, dict) else {}
    if body.get("audit"):
        await request.other_partition("audit").put(f"{request.partition.name}/{count:08d}", body.get("id"))
    return {"count": count, "node": request.node.whoami(), "runs": RUNS}


async def serve(listen: str, data: str, join: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        node = await nursery.start(partial(borough.serve, listen=listen, data_dir=data, join=join, handler=counter))
        print(f"node {node.node_id} serving at {node.address}", flush=True)


def main() -> None:
    trio.run(serve, sys.argv[1], sys.argv[2], sys.argv[3:4])


if __name__ == "__main__":
    main()
