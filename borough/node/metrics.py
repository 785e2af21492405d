"""A node's Prometheus metrics: one ``CollectorRegistry`` per node (never the global one, so nodes in one process
stay apart), read at scrape time from the services' own counters, plus two latency histograms fed as work is done.

Series (all prefixed ``borough_``):
- partitions hosted and led, replicas awake (their Raft clock runs); per partition (while the node hosts at most
  ``PER_PARTITION_LIMIT`` of them, so label sets stay bounded) its term, commit and applied index, whether this
  node leads it, and the furthest behind follower's lag in entries; above the limit only the totals and the
  worst lag (over the awake leaders) are reported;
- members of the table by state, and the failure detector's view by liveness;
- ops carried out by this node, by op, as a latency histogram (``op_seconds``); write cycles of the group commit
  as a latency histogram (``commit_write_seconds``, labelled synced or not) and their batch counts;
- Raft rounds and the replicas' turns in them (``borough.node.rounds``); Raft frames and messages sent, dropped
  in and out; connections open and refused; socket writes and reads of the open connections (``wire_writes``,
  ``wire_reads``: divided by the ops, how well the wire batches); bytes queued for peers;
  snapshots sent and received; frames and calls refused by role; replicas that failed; messages for deleted
  replicas; partition creations refused by rate; handler transactions committed and run again, and effects on
  other partitions delivered.

This module owns the names and meanings; the node hands it a ``MetricsSource`` and calls ``observe_op``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["NodeMetrics", "MetricsSource"]

#: Per-partition series are reported while a node hosts at most this many partitions.
PER_PARTITION_LIMIT = 200

_OP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class MetricsSource(Protocol):
    """What the collector reads from a node (``borough.node.node.Node`` is one)."""

    node_id: str
    replicas: Any
    outbox: Any
    transport: Any
    snapshots: Any
    roles: Any
    server: Any
    directory: Any
    member_watch: Any
    store: Any


class NodeMetrics:
    def __init__(self, node: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.op_seconds = Histogram(
            "borough_op_seconds",
            "Seconds this node took to carry out an operation, by operation",
            ["op"],
            buckets=_OP_BUCKETS,
            registry=self.registry,
        )
        self.commit_write_seconds = Histogram(
            "borough_commit_write_seconds",
            "Seconds one group-commit write cycle took (synced: with fsync)",
            ["synced"],
            buckets=_OP_BUCKETS,
            registry=self.registry,
        )
        self.commit_batches = Histogram(
            "borough_commit_batches",
            "Batches (replicas' Readies) carried by one group-commit write cycle",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.registry.register(_Collector(node))
        self._op_series: dict[str, Any] = {}  # op name -> its labelled child of op_seconds (labels() costs)
        self._synced_series = self.commit_write_seconds.labels("true")  # (observed once per write cycle)
        self._unsynced_series = self.commit_write_seconds.labels("false")

    def observe_op(self, op: str, seconds: float) -> None:
        series = self._op_series.get(op)
        if series is None:
            series = self._op_series[op] = self.op_seconds.labels(op)
        series.observe(seconds)

    def observe_commit(self, batches: int, synced: bool, seconds: float) -> None:
        (self._synced_series if synced else self._unsynced_series).observe(seconds)
        self.commit_batches.observe(batches)

    def text(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, node: MetricsSource) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        yield from self._partitions(node)
        yield from self._members(node)
        yield from self._wire(node)
        yield from self._refusals(node)
        yield from _transactions(node.server.transactions)
        logs = getattr(node.store, "logs", None)  # (a LevelDB store's: ``borough.store.leveldb_logs``)
        if logs is not None:
            yield _counter("store_log_switches", "LevelDB log files started (one per memtable filled)", logs.switches)
            yield _counter(
                "store_log_switches_unsynced",
                "Of those, switches that left unsynced writes in the old file (synced before the next synced write)",
                logs.unsynced_switches,
            )

    def _partitions(self, node: MetricsSource) -> Iterator[Metric]:
        items = node.replicas.items()
        leading = [replica for _, replica in items if replica.is_leader]
        yield _gauge("partitions_hosted", "Partitions this node holds a replica of", len(items))
        yield _gauge("partitions_led", "Partitions this node leads", len(leading))
        awake = node.replicas.clocks
        yield _gauge("replicas_awake", "Replicas whose Raft clock runs (the others are quiesced)", len(awake))
        lag_doc = "Entries the furthest-behind follower of any partition led here lacks"
        if len(items) > PER_PARTITION_LIMIT:
            # Only the totals and the worst lag (a leader's: a follower tracks no progress).
            yield _gauge("follower_lag_max", lag_doc, max((_lag(r.status()) for r in leading), default=0))
            return
        rows: list[tuple[str, Any, int]] = []
        for name, replica in items:
            status = replica.status()
            rows.append((name, status, _lag(status)))
        yield _gauge("follower_lag_max", lag_doc, max((lag for _, _, lag in rows), default=0))
        term = GaugeMetricFamily("borough_partition_term", "Raft term of this node's replica", labels=["partition"])
        commit = GaugeMetricFamily("borough_partition_commit_index", "Commit index", labels=["partition"])
        applied = GaugeMetricFamily("borough_partition_applied_index", "Applied index", labels=["partition"])
        leader = GaugeMetricFamily("borough_partition_leader", "1 if this node leads it", labels=["partition"])
        lag_family = GaugeMetricFamily(
            "borough_partition_follower_lag", "Entries its furthest-behind follower lacks", labels=["partition"]
        )
        for name, status, lag in rows:
            term.add_metric([name], status.term)
            commit.add_metric([name], status.commit)
            applied.add_metric([name], status.applied)
            leader.add_metric([name], 1 if status.role.name == "LEADER" else 0)
            lag_family.add_metric([name], lag)
        yield from (term, commit, applied, leader, lag_family)

    def _members(self, node: MetricsSource) -> Iterator[Metric]:
        states = GaugeMetricFamily("borough_members", "Members of the member table, by state", labels=["state"])
        counts: dict[str, int] = {}
        for member in node.directory.members:
            counts[member.state.name] = counts.get(member.state.name, 0) + 1
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        yield states
        liveness = GaugeMetricFamily(
            "borough_member_liveness", "Members as this node's failure detector sees them", labels=["liveness"]
        )
        seen: dict[str, int] = {}
        for view in node.member_watch.view().values():
            seen[view.liveness.name] = seen.get(view.liveness.name, 0) + 1
        for state, count in sorted(seen.items()):
            liveness.add_metric([state], count)
        yield liveness

    def _wire(self, node: MetricsSource) -> Iterator[Metric]:
        outbox, transport, snapshots = node.outbox, node.transport, node.snapshots
        rounds = node.replicas.rounds
        yield _counter(
            "raft_rounds", "Rounds: passes that carried out the Readies of every replica with work", rounds.rounds
        )
        yield _counter(
            "raft_turns", "Replicas' turns in those rounds (turns per round: how much a round batched)", rounds.turns
        )
        yield _counter("raft_frames_sent", "Frames of Raft messages sent", outbox.frames_sent)
        yield _counter("raft_messages_sent", "Raft messages sent", outbox.messages_sent)
        yield _counter("raft_messages_dropped_in", "Malformed Raft messages dropped", outbox.dropped_inbound)
        yield _counter("raft_messages_dropped_out", "Raft messages the wire refused", outbox.dropped_outbound)
        conns = transport.connections()
        # (Summed over the connections open now: a connection that closes takes its count along, a counter reset.)
        yield _counter("wire_writes", "Socket writes of the connections open now", sum(c.writes for c in conns))
        yield _counter("wire_reads", "Socket reads of the connections open now", sum(c.reads for c in conns))
        yield _gauge("connections_open", "Connections open, dialled and accepted", len(conns))
        yield _gauge(
            "queued_message_bytes", "Bytes of messages queued for peers", sum(c.queued_message_bytes for c in conns)
        )
        yield _counter("connections_refused", "Connections closed at once: a bound hit", transport.refused_connections)
        yield _counter("snapshots_sent", "Snapshots streamed to followers", snapshots.sent)
        yield _counter("snapshots_received", "Snapshots received and installed", snapshots.received)
        yield _counter("snapshot_bytes_sent", "Snapshot chunk bytes streamed to followers", snapshots.bytes_sent)
        yield _counter("snapshot_bytes_received", "Snapshot chunk bytes received", snapshots.bytes_received)

    def _refusals(self, node: MetricsSource) -> Iterator[Metric]:
        yield _counter("role_refusals", "Frames and calls refused because of the peer's role", node.roles.refused)
        yield _counter("replica_failures", "Replicas that failed and were restarted from disk", node.replicas.failures)
        yield _counter(
            "stale_incarnation_drops",
            "Messages meant for a replica this node deleted",
            node.replicas.arrivals.dropped_stale,
        )
        yield _counter(
            "partition_creations_refused", "Partition creations refused: the caller was over its rate",
            node.server.creations_refused,
        )  # fmt: skip


def _transactions(runs: Any) -> Iterator[Metric]:
    if runs is None:
        return
    yield _counter("handler_commits", "Handler transactions this node committed as leader", runs.commits)
    yield _counter(
        "handler_reruns", "Handler runs run again: what they read changed before they committed", runs.conflicts
    )
    yield _counter("handler_effects_delivered", "Effects on other partitions delivered", runs.effects.delivered)


def _lag(status: Any) -> int:
    return max((status.commit - p.match for p in status.progress.values()), default=0)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"borough_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"borough_{name}", doc, value=value)
