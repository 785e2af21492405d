"""What a node does when an operation reaches it: the server side of the call protocol.

This module owns the execution of each op on this node's replicas: checking that this node leads the
partition (or answering ``NotLeader`` with the leader's address), linearizable and stale reads, writes through
Raft, paged scans, partition info, running the application's handler, and the ``_system`` operations (join,
directory, member table). Calls from the wire are decoded by ``borough.node.protocol`` (which validates
everything before it can reach the log); local calls arrive already typed. It does not route: an op for a
partition led elsewhere is refused with a hint, and the caller's router decides whether to try again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from borough.config import NodeConfig
from borough.errors import BoroughError, NotLeader, Overloaded, RemoteError, RemoteProtocolError, Timeout, Unavailable
from borough.ids import NodeId
from borough.node.export import write_export
from borough.node.local import LocalBackend, partition_info
from borough.node.protocol import (
    Call,
    Export,
    FindLeader,
    Get,
    Hosted,
    Info,
    Join,
    ListPartitions,
    Locate,
    Members,
    Op,
    Scan,
    SendSnapshot,
    SetState,
    Write,
    decode_call,
)
from borough.node.ratelimit import PerCallerRate
from borough.node.reads import read_value, scan_page
from borough.node.records import Hosting, JoinResult, Limits
from borough.node.registrar import Registrar
from borough.node.replica import Replica
from borough.node.roles import Roles
from borough.node.statemachine import SystemStateMachine, encode_command, propose_write
from borough.node.streams import join_streams, local_streams, split_streams
from borough.node.system_state import SYSTEM, Refused, join_command, register_command, state_command
from borough.node.transaction import Transactions
from borough.ring.members import MemberTable
from borough.store.base import Store
from borough.wire.records import CallBound, IncomingCall, Reply

__all__ = ["Server"]

logger = logging.getLogger(__name__)

#: Longest a follower waits for a read index to arrive and apply before it sends the read on (NotLeader).
FOLLOWER_READ_WAIT = 0.5
#: Longest wait for a handler's unread local streams to close (shielded: it runs during cancellation too).
CLOSE_TIMEOUT = 1.0
#: Runs the application's handler for ``partition`` with the backend of ``request.partition``, the backend other
#: partitions are reached through (None: the node's own, routed) and the body.
InvokeHandler = Callable[[str, Any, Any, Any], Awaitable[Any]]


#: Operations of ordinary partitions that ``_system`` serves too (its info, its leader, its snapshots).
_ALSO_ON_SYSTEM = (Info, FindLeader, SendSnapshot, Hosted)


class ServedReplicas(Protocol):
    """What the server needs of the replica registry."""

    async def local(self, name: str, *, empty_ok: bool = False) -> Replica: ...

    async def leader(
        self, name: str, address_of: Callable[[str], str | None], *, electing_ok: bool = False
    ) -> Replica: ...


class AddressBook(Protocol):
    """What the server needs of the directory."""

    def learn_address(self, node_id: str | None, address: str | None) -> None: ...

    def address_of(self, node_id: str) -> str | None: ...


class SnapshotReceiver(Protocol):
    async def receive(
        self, partition: str, op: SendSnapshot, streams: Mapping[str, trio.abc.ReceiveStream] | None
    ) -> None: ...

    def sending_to(self, partition: str) -> list[str]:
        """The followers a snapshot of ``partition`` is streaming to now."""
        ...


class Server:
    def __init__(
        self,
        *,
        node_id: str,
        config: NodeConfig,
        roles: Roles,
        store: Store,
        replicas: ServedReplicas,
        addresses: AddressBook,
        snapshots: SnapshotReceiver,
        replica_set: Callable[[str, MemberTable], Sequence[str]],
        cluster_id: Callable[[], str | None],
        invoke_handler: InvokeHandler | None,
        ring_targets: Callable[[str], Sequence[str]] = lambda partition: (),
        hosting: Callable[[], Hosting] = lambda: Hosting(replicas=(), leaderships=()),
        registrar: Registrar | None = None,
    ) -> None:
        self._roles = roles
        #: Batches the registrations of partitions created at the same time (None: one entry each).
        self.registrar = registrar
        self._creations_per_second = rate = config.max_partition_creates_per_second
        self._creations = PerCallerRate(rate, rate)
        self._hosting = hosting
        self._ring_targets = ring_targets
        self._node_id = node_id
        self._timeout = config.request_timeout
        self.limits = Limits(max_key_bytes=config.max_key_bytes, max_value_bytes=config.max_value_bytes)
        self._store = store
        self._replicas = replicas
        self._addresses = addresses
        self._snapshots = snapshots
        self._replica_set = replica_set
        self._cluster_id = cluster_id
        self.invoke_handler = invoke_handler
        #: Runs handlers as transactions (``borough.node.transaction``); None runs them as plain code.
        self.transactions: Transactions | None = None
        #: Whether the handler runs as a transaction (False: it opted out, ``borough.non_transactional``).
        self.transactional = True
        #: Told the name and duration of every op this node carries out (the node's metrics).
        self.on_op: Callable[[str, float], None] | None = None

    # --- entry points -----------------------------------------------------------------------------------

    async def handle_call(self, call: IncomingCall) -> Any:
        """A call from the wire: decode and validate it, bound it by the caller's time left, run it, encode it."""
        partition, op, left = decode_call(call.body, self.limits)
        self._roles.check_call(call.peer, partition, op)
        if isinstance(op, SendSnapshot) and not self._roles.is_member(call.peer):
            op = attrs.evolve(op, member=False)  # a non-member's word on incarnations is not believed
        if call.peer.node_id:
            self._addresses.learn_address(call.peer.node_id, call.peer.address)
        # Every call is bounded here, whatever the caller says or does (a caller that sends no deadline and
        # never hangs up must not hold a task and its memory for ever): by the caller's time left, at most
        # request_timeout. A snapshot stream is bounded by its progress instead (``Snapshots`` gives it up once
        # it moves no chunk for SNAPSHOT_TIMEOUTS request timeouts): a big partition takes long at the byte rate.
        bound = math.inf if isinstance(op, SendSnapshot) else self._timeout
        timeout = bound if left is None else min(left, bound)
        what = "a request" if isinstance(op, Call) else f"{op.name}"

        def expired() -> Timeout:
            return Timeout(f"{what} on partition {partition!r} did not finish within {timeout:g} s on {self._node_id}")

        deadline = trio.current_time() + timeout
        return await _within(call.bound, deadline, expired, lambda: self._handle(call, partition, op))

    async def _handle(self, call: IncomingCall, partition: str, op: Op) -> Any:
        streams = call.streams or None
        try:
            if isinstance(op, Export):
                applied, data = await self.execute(partition, op, streams, caller=str(call.peer))
                return Reply(applied, streams={"data": data})
            if not isinstance(op, Call):
                return op.encode_result(await self.execute(partition, op, streams, caller=str(call.peer)))
            reply = await self.execute(partition, op, streams, caller=str(call.peer))
        except BoroughError:
            raise
        except Exception as exc:
            # A bug of ours: the caller learns that, not our internals (the log has the traceback).
            logger.error("%s on partition %r failed", op.name, partition, exc_info=exc)
            raise internal_error(self._node_id, op.name, partition) from None
        body, reply_streams = split_streams(reply)
        return Reply(body, streams=reply_streams or {})

    @property
    def creations_refused(self) -> int:
        """Partition creations refused so far because their caller was over its rate."""
        return self._creations.refused

    async def execute(
        self, partition: str, op: Op, streams: Mapping[str, Any] | None = None, *, caller: str | None = None
    ) -> Any:
        started = trio.current_time()
        try:
            return await self._execute(partition, op, streams, caller)
        finally:
            if self.on_op is not None:
                self.on_op(op.name, trio.current_time() - started)

    async def _execute(self, partition: str, op: Op, streams: Mapping[str, Any] | None, caller: str | None) -> Any:
        """Carry out ``op`` on this node and return its typed result (``caller``: who sent it over the wire;
        None for this node's own operations)."""
        remote = caller is not None
        if op.system and partition != SYSTEM:
            raise RemoteProtocolError(f"malformed call: {op.name} is an operation of {SYSTEM!r}, not {partition!r}")
        if partition == SYSTEM and not (op.system or isinstance(op, _ALSO_ON_SYSTEM)):
            raise RemoteProtocolError(f"malformed call: {SYSTEM!r} is read and written only through its own operations")
        if isinstance(op, Get):
            await self._read_barrier(partition, op.consistency)
            return read_value(self._store, partition, op.key)
        if isinstance(op, Write):  # (electing_ok: on a new group it rides with its first leader's first entry)
            replica = await self._replicas.leader(partition, self._addresses.address_of, electing_ok=True)
            return await propose_write(replica, op.ops, op.session)
        if isinstance(op, Scan):
            await self._read_barrier(partition, op.consistency)
            return scan_page(self._store, partition, op.range, op.limit)
        if isinstance(op, Call):
            return await self._request(partition, op, streams, remote=remote)
        if isinstance(op, Hosted):
            await trio.lowlevel.checkpoint()
            return self._hosting()
        if isinstance(op, FindLeader):
            await self._leader(partition)
            return None
        if isinstance(op, Export):
            await (await self._leader(partition)).read_barrier()
            applied, items = self._store.export(partition)
            return applied, write_export(items, offload=self._store.blocking_writes)
        if isinstance(op, Info):
            replica = await self._leader(partition)
            targets = self._ring_targets(partition)
            return partition_info(replica, self._addresses.address_of, targets, self._snapshots.sending_to(partition))
        if isinstance(op, SendSnapshot):
            if not remote:
                raise RemoteProtocolError("malformed call: snapshots only arrive over the wire")
            return await self._snapshots.receive(partition, op, streams)
        if isinstance(op, (Join, Locate, Members, SetState, ListPartitions)):
            return await self._system(op, caller)
        raise RemoteProtocolError(f"malformed call: unknown operation {op.name!r}")

    async def _leader(self, partition: str) -> Replica:
        return await self._replicas.leader(partition, self._addresses.address_of)

    async def _read_barrier(self, partition: str, consistency: str) -> None:
        # Any replica serves reads, the leader's followers too (a linearizable one asks the leader for the read
        # index and waits to apply it): routing spreads reads over the replicas.
        replica = await self._replicas.local(partition)
        if consistency == "stale" or replica.is_leader:
            if consistency != "stale":
                await replica.read_barrier()
            return
        # A follower serves it only while it is a voter with a leader, and only if the read index
        # arrives and applies soon: a replica still receiving its data (a move's new member) would hold the
        # read until the caller's attempt ran out. Refused (NotLeader: a read is safe anywhere), routing
        # goes on to the next replica or the leader.
        status = replica.status()
        if status.leader is None or status.learner or NodeId(self._node_id) not in status.conf_state.voters:
            raise NotLeader(partition, status.leader)
        with trio.move_on_after(FOLLOWER_READ_WAIT):
            await replica.read_barrier(anywhere=True)
            return
        raise NotLeader(partition, status.leader)

    # --- requests -----------------------------------------------------------------------------------------

    async def _request(self, partition: str, op: Call, streams: Mapping[str, Any] | None, *, remote: bool) -> Any:
        if self.invoke_handler is None:
            raise RemoteError(
                "NoHandler",
                f"node {self._node_id} has no request handler: pass handler= to open_node, or set node.handler",
                from_handler=False,
            )
        invoke = self.invoke_handler
        replica = await self._leader(partition)
        here = None if remote else local_streams(streams)
        body = join_streams(op.body, streams if remote else here)
        runs = self.transactions
        txn = runs is not None and self.transactional
        try:
            if runs is not None and txn:
                reply = await runs.run(
                    replica, op.session, lambda local, held: invoke(partition, local, held, body), rerun=not streams
                )
            else:
                backend = LocalBackend(self._store, replica, self._addresses.address_of)
                if runs is None:
                    reply = await invoke(partition, backend, None, body)
                else:
                    reply = await runs.run_plain(replica, op.session, lambda: invoke(partition, backend, None, body))
        except BoroughError as exc:
            if exc.provably_not_run and not txn:
                # Raised inside the handler (its partition's leader moved, a queue was full): what it did so far
                # may stand, so the request must not be run again elsewhere as if it never ran.
                raise Unavailable(
                    f"the request handler for partition {partition!r} was cut off ({exc}); its effects may be "
                    "partial: check the partition before retrying"
                ) from exc
            raise
        except Exception as exc:
            logger.info("handler for partition %r raised %s: %s", partition, type(exc).__name__, exc)
            raise RemoteError(type(exc).__name__, str(exc)) from exc
        finally:
            if here:
                # As the wire does for a remote caller: streams the handler left unread are closed with it.
                await _close_all(here.values())
        if remote:
            return reply
        body, reply_streams = split_streams(reply)
        return join_streams(body, local_streams(reply_streams))

    # --- _system ----------------------------------------------------------------------------------------

    async def _system(self, op: Join | Locate | Members | SetState | ListPartitions, caller: str | None) -> Any:
        replica = await self._leader(SYSTEM)
        machine = replica.machine
        assert isinstance(machine, SystemStateMachine)
        if isinstance(op, Members):
            # No ReadIndex round: the table is versioned and every reader keeps the newest it has seen (gossip
            # names newer versions), so a leader's applied table will do, and a quiet `_system` stays quiet.
            return machine.state.members
        if isinstance(op, SetState):
            if machine.state.members.get(NodeId(op.node_id)) is None:
                missing = f"node {op.node_id} is not a member of this cluster"
                raise RemoteError("NotAMember", missing, from_handler=False)
            return _checked(await replica.propose(encode_command(state_command(op.node_id, op.state))))
        if isinstance(op, ListPartitions):
            await replica.read_barrier()
            names = sorted(n for n in machine.state.directory if op.after is None or n > op.after)
            return names[: op.limit]
        if isinstance(op, Join):
            table = _checked(await replica.propose(encode_command(join_command(op.node_id, op.address))))
            return JoinResult(table, self._cluster_id())
        # A record never changes once written: one applied here (so committed) is the answer with no read barrier,
        # and a creation needs none (registering is the compare-and-set); only "no such partition" needs one.
        record = machine.state.directory.get(op.partition)
        if record is None and not op.create:
            await replica.read_barrier()
            record = machine.state.directory.get(op.partition)
        if record is not None or not op.create:
            return record
        if caller is not None and not self._creations.take(caller):
            rate = f"max_partition_creates_per_second={self._creations_per_second:g}"
            raise Overloaded(f"{caller} creates partitions faster than {rate}; slow down")
        table = machine.state.members
        voters = self._replica_set(op.partition, table)
        if not voters:
            raise NotLeader(SYSTEM, None)  # no active member yet (still joining): retry
        if self.registrar is not None:
            return _checked(await self.registrar.register(replica.propose, op.partition, tuple(voters), table.version))
        return _checked(await replica.propose(encode_command(register_command(op.partition, voters, table.version))))


def internal_error(node_id: str, op: str, partition: str) -> RemoteError:
    """What a caller learns of a bug of ours: that it happened, not our internals."""
    return RemoteError(
        "InternalError",
        f"node {node_id} failed to carry out {op} on partition {partition!r}; its log says why",
        from_handler=False,
    )


async def _within(
    bound: CallBound | None, deadline: float, expired: Callable[[], BaseException], run: Callable[[], Awaitable[Any]]
) -> Any:
    """``run()`` until ``deadline``, past which the caller gets ``expired()``: in the wire's own scope for the call
    when it lends one (one cancel scope a call, see ``CallBound``), else in a scope of its own."""
    if bound is not None:
        bound.limit(deadline, expired)
        return await run()
    with trio.CancelScope(deadline=deadline):
        return await run()
    raise expired()


async def _close_all(streams: Iterable[trio.abc.ReceiveStream]) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
        for stream in streams:
            await stream.aclose()


def _checked(result: Any) -> Any:
    if isinstance(result, Refused):
        raise RemoteError("SystemError", result.reason, from_handler=False)
    return result
