"""The node's HTTP listener (``metrics_listen``): ``/metrics`` (Prometheus text), ``/status`` (JSON) and ``/`` (a
status page that refreshes itself from ``/status``).

Deliberately small: GET only, one request per connection, no keep-alive. Every byte from the client is hostile:
the request head is read with a size bound and a deadline, connections are bounded, and anything else is answered
with a 4xx and closed. It knows nothing of what the status says; the node hands it functions that produce it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio

from borough.config import parse_address

__all__ = ["serve_http"]

logger = logging.getLogger(__name__)

MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
MAX_CONNECTIONS = 64

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Borough</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}
.DEAD,.SUSPECT{color:#b00}.ALIVE,.ACTIVE{color:#070}.lag{color:#b60}#ring span{display:inline-block;margin:.2em;
padding:.3em .6em;border-radius:1em;background:#eef}
</style></head><body>
<h1>Borough node <span id="node"></span></h1><div id="meta"></div>
<h2>Ring</h2><div id="ring"></div>
<h2>Members</h2><table id="members"><thead><tr><th>node</th><th>address</th><th>state</th><th>liveness</th></tr>
</thead><tbody></tbody></table>
<h2>Partitions on this node</h2><table id="partitions"><thead><tr><th>partition</th><th>role</th><th>leader</th>
<th>term</th><th>commit</th><th>applied</th><th>voters</th><th>learners</th><th>lag</th></tr></thead><tbody></tbody>
</table>
<script>
function cell(text, cls){const td=document.createElement('td');td.textContent=text;if(cls)td.className=cls;return td}
function fill(id, rows){const body=document.querySelector('#'+id+' tbody');body.replaceChildren();
  for(const r of rows){const tr=document.createElement('tr');for(const c of r)tr.appendChild(c);body.appendChild(tr)}}
async function refresh(){
  try{const s=await (await fetch('/status')).json();
    document.getElementById('node').textContent=s.node_id;
    document.getElementById('meta').textContent='cluster '+s.cluster_id+' at '+s.address+' - updated '+
      new Date().toLocaleTimeString();
    const ring=document.getElementById('ring');ring.replaceChildren();
    for(const m of s.ring){const e=document.createElement('span');e.textContent=m;ring.appendChild(e)}
    fill('members', s.members.map(m=>[cell(m.node_id),cell(m.address),cell(m.state,m.state),
      cell(m.liveness||'-',m.liveness)]));
    fill('partitions', s.partitions.map(p=>[cell(p.name),cell(p.role),cell(p.leader||'-'),cell(p.term),
      cell(p.commit),cell(p.applied),cell(p.voters.join(', ')),cell(p.learners.join(', ')||'-'),
      cell(p.lag,p.lag>0?'lag':'')]));
  }catch(e){document.getElementById('meta').textContent='cannot reach the node: '+e}
}
refresh();setInterval(refresh,2000);
</script></body></html>
"""


async def serve_http(
    address: str,
    *,
    metrics: Callable[[], bytes],
    status: Callable[[], dict[str, Any]],
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the bound ``HOST:PORT`` (port 0: a free one)."""
    host, port = parse_address(address, setting="metrics_listen")
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    bound = listeners[0].socket.getsockname()
    limit = trio.Semaphore(MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            limit.acquire_nowait()
        except trio.WouldBlock:
            await stream.aclose()
            return
        try:
            with trio.move_on_after(HEAD_TIMEOUT):
                await _answer(stream, metrics, status)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # our own bug: log it, never let it take the node down
            logger.exception("the HTTP listener failed to answer a request")
        finally:
            limit.release()
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        task_status.started(f"{host}:{bound[1]}")
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _answer(
    stream: trio.SocketStream, metrics: Callable[[], bytes], status: Callable[[], dict[str, Any]]
) -> None:
    head = bytearray()
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(MAX_HEAD)
        if not data:
            return
        head += data
        if len(head) > MAX_HEAD:
            await _reply(stream, 431, "text/plain", b"request head too large\n")
            return
    line = bytes(head).split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        await _reply(stream, 400, "text/plain", b"bad request\n")
        return
    method, target = parts[0], parts[1].split("?", 1)[0]
    if method != "GET":
        await _reply(stream, 405, "text/plain", b"only GET\n")
    elif target == "/metrics":
        await _reply(stream, 200, "text/plain; version=0.0.4; charset=utf-8", metrics())
    elif target == "/status":
        await _reply(stream, 200, "application/json", json.dumps(status(), default=str).encode())
    elif target == "/":
        await _reply(stream, 200, "text/html; charset=utf-8", _PAGE.encode())
    else:
        await _reply(stream, 404, "text/plain", b"not found: try /, /status or /metrics\n")


async def _reply(stream: trio.SocketStream, code: int, kind: str, body: bytes) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}[code]
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    await stream.send_all(head.encode("latin-1") + body)
