"""The node's HTTP listener: Prometheus metrics from a per-node registry, /status as JSON, the status page, and
hostile requests answered with a 4xx while the node keeps serving."""

from __future__ import annotations

import json
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

import borough
from borough.config import parse_address


async def http(address: str, request: bytes) -> tuple[int, bytes]:
    host, port = parse_address(address)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(request)
        data = bytearray()
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def get(address: str, path: str) -> tuple[int, bytes]:
    return await http(address, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


async def test_metrics_status_and_the_page_of_two_nodes_in_one_process() -> None:
    async with (
        borough.open_node(listen="127.0.0.1:0", data_dir=None, metrics_listen="127.0.0.1:0") as a,
        borough.open_node(listen="127.0.0.1:0", data_dir=None, metrics_listen="127.0.0.1:0", join=a.address) as b,
    ):
        await a.partition("p").put("k", 1)
        assert await b.partition("p").get("k") == 1
        assert a.metrics_address is not None and b.metrics_address is not None
        code, body = await get(a.metrics_address, "/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        for name in ("borough_partitions_hosted", "borough_partitions_led", "borough_op_seconds",
                     "borough_commit_write_seconds", "borough_members", "borough_raft_messages_sent",
                     "borough_connections_open", "borough_role_refusals", "borough_partition_term",
                     "borough_handler_commits", "borough_handler_reruns"):  # fmt: skip
            assert name in families, name
        _, other = await get(b.metrics_address, "/metrics")
        assert other != body  # each node its own registry
        both = [*families["borough_op_seconds"].samples, *_family(other, "borough_op_seconds").samples]
        assert "write" in {s.labels.get("op") for s in both if s.name.endswith("_count")}  # on p's leader
        terms = {s.labels["partition"] for s in families["borough_partition_term"].samples}
        assert "p" in terms
        members = {s.labels["state"]: s.value for s in families["borough_members"].samples}
        assert members == {"ACTIVE": 2}

        code, body = await get(a.metrics_address, "/status")
        status = json.loads(body)
        assert code == 200 and status["node_id"] == a.node_id and len(status["members"]) == 2
        assert sorted(status["ring"]) == sorted([a.node_id, b.node_id])
        assert any(p["name"] == "p" for p in status["partitions"])
        code, page = await get(a.metrics_address, "/")
        assert code == 200 and b"<title>Borough</title>" in page and b"/status" in page


async def test_hostile_requests_get_a_4xx_and_the_node_keeps_serving() -> None:
    async with borough.open_node(listen="127.0.0.1:0", data_dir=None, metrics_listen="127.0.0.1:0") as node:
        address = node.metrics_address
        assert address is not None
        assert (await http(address, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await http(address, b"\x00\xff garbage\r\n\r\n"))[0] == 400
        assert (await http(address, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"))[0] == 431
        assert (await get(address, "/nope"))[0] == 404
        await node.partition("p").put("k", 2)
        assert (await get(address, "/metrics"))[0] == 200


def _family(body: bytes, name: str) -> Any:
    return next(f for f in text_string_to_metric_families(body.decode()) if f.name == name)


async def test_a_node_on_leveldb_reports_its_log_switches(tmp_path: Any) -> None:
    async with borough.open_node(listen="127.0.0.1:0", data_dir=tmp_path / "n", metrics_listen="127.0.0.1:0") as a:
        await a.partition("p").put("k", 1)
        assert a.metrics_address is not None
        _, body = await get(a.metrics_address, "/metrics")
        values = {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        assert values["borough_store_log_switches_total"] == a.store.logs.switches
        assert values["borough_store_log_switches_unsynced_total"] == 0
