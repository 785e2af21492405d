"""What a node does when an operation reaches it: the server side of the call protocol.

This module owns the execution of each op on this node's replicas: checking that this node leads the
partition (or answering ``NotLeader`` with the leader's address), linearizable and stale reads, writes through
Raft, paged scans, partition info, running the application's handler, and the ``_system`` operations (join,
directory, member table). It validates everything that arrives from the wire before it can reach the log. It
does not route: an op for a partition led elsewhere is refused with a hint, and the caller's router retries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from borough.calls import (
    GET,
    INFO,
    LEADER,
    REQUEST,
    SCAN,
    SNAPSHOT,
    SYS_DIR,
    SYS_JOIN,
    SYS_MEMBERS,
    WRITE,
    Op,
    join_streams,
    local_streams,
    split_streams,
)
from borough.errors import BoroughError, NotFound, NotLeader, RemoteError, RemoteProtocolError, Timeout, Unavailable
from borough.partition import Partition, PartitionInfo, ReplicaInfo, ScanRange
from borough.raft.role import Role
from borough.replica import Replica
from borough.request import Request
from borough.statemachine import SystemStateMachine, check_ops, encode_command
from borough.system import SYSTEM, join_command, register_command
from borough.wire.mux import IncomingCall, Reply

if TYPE_CHECKING:
    from borough.node import Node

__all__ = ["LocalBackend", "Server"]

logger = logging.getLogger(__name__)

#: Most bytes of values one scan page carries (at least one item is always sent).
PAGE_BYTES = 1 << 20
MAX_PAGE_ITEMS = 10_000


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed call: {what}")


class Server:
    def __init__(self, node: Node) -> None:
        self.node = node

    # --- entry points -----------------------------------------------------------------------------------

    async def handle_call(self, call: IncomingCall) -> Any:
        """A call from the wire: validate its envelope, bound it by the caller's time left, execute."""
        body = call.body
        if not isinstance(body, list) or len(body) != 4:
            raise _bad("expected [op, partition, args, seconds_left]")
        name, partition, args, left = body
        if not isinstance(name, str) or not isinstance(partition, str) or not partition or not isinstance(args, list):
            raise _bad("op and partition must be strings and args a list")
        if left is not None and (not isinstance(left, (int, float)) or left < 0):
            raise _bad("seconds_left must be a non-negative number or null")
        if call.peer.node_id:
            self.node.directory.learn_address(call.peer.node_id, call.peer.address)
        op = Op(name, args, call.streams or None)
        if name != REQUEST:
            # Borough's own operations end when their work does, or when the caller gives up: its deadline
            # cancels the call, which cancels this task. No second timer on the hot path.
            return await self.execute(partition, op, remote=True)
        # A handler is the application's code: bound it by the caller's time left, whatever happens to the link.
        timeout = (
            self.node.config.request_timeout if left is None else min(float(left), self.node.config.request_timeout)
        )
        with trio.move_on_after(timeout) as scope:
            return await self.execute(partition, op, remote=True)
        assert scope.cancelled_caught
        raise Timeout(f"{name} on partition {partition!r} did not finish within {timeout:g} s on {self.node.node_id}")

    async def execute(self, partition: str, op: Op, *, remote: bool) -> Any:
        name = op.name
        args = op.args
        if name == GET:
            return await self._get(partition, args)
        if name == WRITE:
            return await self._write(partition, args)
        if name == SCAN:
            return await self._scan(partition, args)
        if name == REQUEST:
            return await self._request(partition, args, op.streams, remote=remote)
        if name == LEADER:
            await self.node.local_leader(partition)
            return None
        if name == INFO:
            return self.info(await self.node.local_leader(partition)).to_list()
        if name == SNAPSHOT:
            if not remote:
                raise _bad("snapshots only arrive over the wire")
            return await self.node.snapshots.receive(partition, args, op.streams or {})
        if name in (SYS_JOIN, SYS_DIR, SYS_MEMBERS):
            if partition != SYSTEM:
                raise _bad(f"{name} is an operation of {SYSTEM!r}, not of {partition!r}")
            return await self._system(name, args)
        raise _bad(f"unknown operation {name!r}")

    # --- partition operations ---------------------------------------------------------------------------

    async def _get(self, partition: str, args: list[Any]) -> bytes | None:
        if len(args) != 2 or type(args[0]) not in (str, bytes) or args[1] not in ("linearizable", "stale"):
            raise _bad("get takes [key, 'linearizable' | 'stale']")
        key, consistency = args
        node = self.node
        if consistency == "stale":
            await node.local_replica(partition)
        else:
            replica = await node.local_leader(partition)
            await replica.read_barrier()
        try:
            return node.store.get_encoded(partition, key)
        except NotFound:
            return None

    async def _write(self, partition: str, args: list[Any]) -> None:
        if len(args) != 1:
            raise _bad("write takes [ops]")
        config = self.node.config
        try:
            ops = check_ops(args[0], max_key_bytes=config.max_key_bytes, max_value_bytes=config.max_value_bytes)
        except (TypeError, ValueError) as exc:
            raise _bad(str(exc)) from None
        replica = await self.node.local_leader(partition)
        await replica.propose(encode_command(ops))

    async def _scan(self, partition: str, args: list[Any]) -> list[Any]:
        if len(args) != 3 or type(args[1]) is not int or args[1] < 1 or args[2] not in ("linearizable", "stale"):
            raise _bad("scan takes [range, limit, consistency]")
        try:
            scan = ScanRange.from_list(args[0])
        except (TypeError, ValueError) as exc:
            raise _bad(f"bad scan range: {exc}") from None
        limit = min(args[1], MAX_PAGE_ITEMS)
        node = self.node
        if args[2] == "stale":
            await node.local_replica(partition)
        else:
            replica = await node.local_leader(partition)
            await replica.read_barrier()
        return scan_page(node, partition, scan, limit)

    def info(self, replica: Replica) -> PartitionInfo:
        status = replica.raw.status()
        node = self.node
        peers = []
        conf = status.conf_state
        for node_id in conf.members():
            progress = status.progress.get(node_id)
            if node_id == status.leader:
                role = "leader"
            elif node_id in conf.learners or node_id in conf.learners_next:
                role = "learner"
            else:
                role = "voter"
            address = node.directory.address_of(node_id)
            connected = node_id == node.node_id or (progress is not None and progress.recent_active)
            peers.append(
                ReplicaInfo(
                    node_id=node_id,
                    address=address,
                    role=role,
                    match_index=progress.match if progress is not None else 0,
                    connected=bool(connected),
                )
            )
        return PartitionInfo(
            name=replica.name,
            leader=status.leader,
            term=status.term,
            commit_index=status.commit,
            applied_index=replica.applied,
            peers=tuple(peers),
        )

    async def _request(
        self, partition: str, args: list[Any], streams: Mapping[str, Any] | None, *, remote: bool
    ) -> Any:
        if len(args) != 1:
            raise _bad("request takes [body]")
        node = self.node
        handler = node.handler
        if handler is None:
            raise RemoteError(
                "NoHandler",
                f"node {node.node_id} has no request handler: pass handler= to open_node, or set node.handler",
            )
        replica = await node.local_leader(partition)
        body = join_streams(args[0], streams if remote else local_streams(streams))
        request = Request(node, Partition(LocalBackend(node, replica), partition, **node.limits), body)
        try:
            reply = await handler(request)
        except NotLeader as exc:
            # The partition's leader moved while the handler ran: what it did so far may stand, so the request
            # must not be run again elsewhere as if it never ran (NotLeader would make the caller retry).
            raise Unavailable(
                f"the leader of partition {partition!r} changed while the request handler ran ({exc}); its effects "
                "may be partial: check the partition before retrying"
            ) from exc
        except (BoroughError, trio.Cancelled):
            raise
        except Exception as exc:
            logger.info("handler for partition %r raised %s: %s", partition, type(exc).__name__, exc)
            raise RemoteError(type(exc).__name__, str(exc)) from exc
        reply, reply_streams = split_streams(reply)
        if remote:
            return Reply(reply, streams=reply_streams or {})
        return join_streams(reply, local_streams(reply_streams))

    # --- _system ----------------------------------------------------------------------------------------

    async def _system(self, name: str, args: list[Any]) -> Any:
        node = self.node
        replica = await node.local_leader(SYSTEM)
        machine = replica.machine
        assert isinstance(machine, SystemStateMachine)
        if name == SYS_MEMBERS:
            await replica.read_barrier()
            return machine.state.members.to_list()
        if name == SYS_JOIN:
            if len(args) != 2 or not all(isinstance(a, str) and a for a in args):
                raise _bad("sys.join takes [node_id, address]")
            result = await replica.propose(encode_command(join_command(args[0], args[1])))
            return [_checked(result), node.cluster_id]
        # SYS_DIR
        if len(args) != 2 or not isinstance(args[0], str) or not args[0] or not isinstance(args[1], bool):
            raise _bad("sys.dir takes [partition, create]")
        partition, create = args
        await replica.read_barrier()
        record = machine.state.directory.get(partition)
        if record is not None:
            return record.to_list()
        if not create:
            return None
        table = machine.state.members
        voters = node.ring_for(table).replica_set(partition)
        if not voters:
            raise NotLeader(SYSTEM, None)  # no active member yet (still joining): retry
        result = await replica.propose(encode_command(register_command(partition, voters, table.version)))
        return _checked(result)


def _checked(result: Any) -> Any:
    if isinstance(result, list) and len(result) == 2 and result[0] == "ok":
        return result[1]
    message = result[1] if isinstance(result, list) and len(result) == 2 else repr(result)
    raise RemoteError("SystemError", str(message))


def scan_page(node: Node, partition: str, scan: ScanRange, limit: int) -> list[Any]:
    """Up to ``limit`` items and whether more follow, capped at PAGE_BYTES of values."""
    items: list[list[Any]] = []
    size = 0
    more = False
    for key, raw in node.store.iterate(
        partition,
        encoded=True,
        gt=scan.gt,
        gte=scan.gte,
        lt=scan.lt,
        lte=scan.lte,
        reverse=scan.reverse,
        limit=limit + 1,
    ):
        if len(items) >= limit or (items and size >= PAGE_BYTES):
            more = True
            break
        items.append([key, raw if scan.values else None])
        size += len(raw) if scan.values else 0
    return [items, more]


class LocalBackend:
    """A handler's ``request.partition``: operations on this node's leader replica, no routing. If the replica
    loses leadership meanwhile, the operation raises NotLeader and the whole request is retried elsewhere."""

    def __init__(self, node: Node, replica: Replica) -> None:
        self.node = node
        self.replica = replica

    async def kv_get(self, partition: str, key: str | bytes, consistency: str) -> bytes | None:
        if consistency != "stale":
            self.replica.check_leader()
            await self.replica.read_barrier()
        try:
            return self.node.store.get_encoded(partition, key)
        except NotFound:
            return None

    async def kv_write(self, partition: str, ops: list[list[Any]]) -> None:
        await self.replica.propose(encode_command(ops))

    async def kv_scan(self, partition: str, scan: ScanRange, limit: int, consistency: str) -> tuple[list[Any], bool]:
        if consistency != "stale":
            self.replica.check_leader()
            await self.replica.read_barrier()
        items, more = scan_page(self.node, partition, scan, limit)
        return [(k, v) for k, v in items], more

    async def partition_info(self, partition: str) -> PartitionInfo:
        return self.node.server.info(self.replica)


def role_name(role: Role) -> str:
    return role.name.lower()
