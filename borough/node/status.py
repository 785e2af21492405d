"""A node's status as plain data: who it is, the members and how its failure detector sees them, the ring, and
the partitions it hosts (role, leader, term, indexes, voters, learners, lag). Served as ``/status`` and drawn by
the status page; built from the services' own state, read-only.
"""

from __future__ import annotations

from typing import Any

import trio

from borough.node.http import serve_http
from borough.node.metrics import MetricsSource

__all__ = ["serve_node_http", "status_report"]


def status_report(node: MetricsSource, cluster_id: str | None, address: str) -> dict[str, Any]:
    view = node.member_watch.view()
    members = [
        {
            "node_id": m.node_id,
            "address": m.address,
            "state": m.state.name,
            "liveness": None if (seen := view.get(m.node_id)) is None else seen.liveness.name,
        }
        for m in node.directory.members
    ]
    partitions = []
    for name, replica in sorted(node.replicas.items()):
        status = replica.status()
        conf = status.conf_state
        partitions.append(
            {
                "name": name,
                "role": status.role.name.lower(),
                "leader": status.leader,
                "term": status.term,
                "commit": status.commit,
                "applied": status.applied,
                "voters": list(conf.voters),
                "learners": list(conf.learners),
                "lag": max((status.commit - p.match for p in status.progress.values()), default=0),
            }
        )
    ring = list(node.directory.ring().members)
    return {
        "node_id": node.node_id,
        "cluster_id": cluster_id,
        "address": address,
        "members": members,
        "ring": ring,
        "partitions": partitions,
    }


async def serve_node_http(
    node: Any, address: str, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """The node's HTTP listener at ``address`` (``metrics_listen``): its metrics, its status and the page."""
    await serve_http(
        address,
        metrics=node.metrics.text,
        status=lambda: status_report(node, node.cluster_id, node.address),
        task_status=task_status,
    )
