"""The server side of the call protocol (``borough.node.server.Server``) against fake replicas and a real
MemoryStore: every operation through ``handle_call`` (reads, writes, scans, info, leader lookups, handler
requests with streams and time bounds, the ``_system`` operations), the refusals of bad input before anything
reaches a replica, NotLeader hints, and learning the caller's address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from borough.errors import (
    BoroughError,
    NotLeader,
    Overloaded,
    RemoteError,
    RemoteProtocolError,
    Timeout,
    Unavailable,
)
from borough.ids import NodeId
from borough.kv import encode_value
from borough.node.local import LocalBackend
from borough.node.protocol import Call, FindLeader, Get, Info, Join, Locate, Members, Op, Scan, SendSnapshot, Write
from borough.node.reads import PAGE_BYTES
from borough.node.records import Delete, Limits, Put, ScanRange
from borough.node.session_table import DEFAULT_EXPIRY
from borough.node.statemachine import encode_command
from borough.node.system_state import SYSTEM, Refused, join_command, register_command
from borough.partition import Partition
from borough.request import Request
from borough.ring.members import MemberState
from borough.wire.records import CallBound, PeerInfo, Reply

from .fakes_server import CALLER, ME, Rig, incoming, make_rig, put_data

P = "users"
LEADER_HINT: dict[str, Any] = {"is_leader": False, "leader": "n2"}


# --- reads ----------------------------------------------------------------------------------------------------


async def test_linearizable_get_waits_for_a_read_barrier_and_returns_the_encoded_value() -> None:
    rig = make_rig()
    replica = rig.host(P)
    put_data(rig.store, P, {"alice": {"age": 31}})
    body = await rig.server.handle_call(incoming(P, Get("alice")))
    assert body == encode_value({"age": 31})
    assert replica.barriers == 1
    assert rig.replicas.local_calls == [P]
    assert await rig.server.handle_call(incoming(P, Get("bob"))) is None
    assert replica.barriers == 2
    assert replica.proposed == []


async def test_a_follower_serves_a_linearizable_get_after_its_read_barrier() -> None:
    """Follower reads (§6.4.1): the follower's barrier asks its leader for the read index and waits to apply it,
    so routing can spread reads over every replica."""
    rig = make_rig()
    replica = rig.host(P, **LEADER_HINT)
    put_data(rig.store, P, {"alice": 1})
    assert await rig.server.handle_call(incoming(P, Get("alice"))) == encode_value(1)
    assert replica.barriers == 1 and rig.replicas.leader_calls == []


async def test_a_follower_that_cannot_serve_a_read_soon_sends_it_on(autojump_clock: trio.testing.MockClock) -> None:
    """A follower whose read index does not arrive and apply within FOLLOWER_READ_WAIT (a move's new member still
    receiving its data), or that is no voter, answers NotLeader naming its leader: routing goes on at once instead
    of the read waiting out the caller's attempt (the rebalance bench saw get p99 of 2 s during a move)."""
    rig = make_rig()
    replica = rig.host(P, **LEADER_HINT)
    put_data(rig.store, P, {"alice": 1})

    async def stalled(*, anywhere: bool = False) -> None:
        await trio.sleep_forever()

    replica.read_barrier = stalled  # type: ignore[method-assign]
    start = trio.current_time()
    with pytest.raises(NotLeader):
        await rig.server.handle_call(incoming(P, Get("alice")))
    assert trio.current_time() - start == pytest.approx(0.5)
    replica.voters = ("n2", "n3", "n4")  # a learner of the group, or no member: refused without waiting
    with pytest.raises(NotLeader):
        await rig.server.handle_call(incoming(P, Get("alice")))
    assert trio.current_time() - start == pytest.approx(0.5)


async def test_stale_get_reads_a_follower_without_a_barrier() -> None:
    rig = make_rig()
    replica = rig.host(P, **LEADER_HINT)
    put_data(rig.store, P, {b"\x00raw": [1, 2]})
    assert await rig.server.handle_call(incoming(P, Get(b"\x00raw", "stale"))) == encode_value([1, 2])
    assert replica.barriers == 0
    assert rig.replicas.leader_calls == []
    assert rig.replicas.local_calls == [P]


async def test_stale_get_of_a_partition_not_hosted_here_is_not_leader() -> None:
    rig = make_rig()
    with pytest.raises(NotLeader) as info:
        await rig.server.handle_call(incoming("elsewhere", Get("k", "stale")))
    assert info.value.partition == "elsewhere"


# --- writes ---------------------------------------------------------------------------------------------------


async def test_write_proposes_exactly_the_write_command_of_its_ops() -> None:
    rig = make_rig()
    replica = rig.host(P)
    put_data(rig.store, P, {"gone": 1})
    ops = (Put("a", encode_value("x")), Put(b"b", encode_value(2)), Delete("gone"))
    assert await rig.server.handle_call(incoming(P, Write(ops))) is None
    [(version, stamp, expiry, session, proposed_ops)] = replica.proposed
    assert (version, session) == (1, None) and stamp >= 0 and expiry == DEFAULT_EXPIRY  # stamped by the leader
    assert proposed_ops == [["put", "a", encode_value("x")], ["put", b"b", encode_value(2)], ["del", "gone"]]
    assert rig.store.get(P, "a") == "x"
    assert rig.store.get(P, b"b") == 2
    assert await rig.server.handle_call(incoming(P, Get("gone"))) is None


# --- scans ----------------------------------------------------------------------------------------------------


async def test_scan_pages_a_range_and_says_whether_more_follow() -> None:
    rig = make_rig()
    replica = rig.host(P)
    put_data(rig.store, P, {f"k{i}": i for i in range(6)})
    first = Scan(ScanRange(gte="k1"), 2).decode_result(
        await rig.server.handle_call(incoming(P, Scan(ScanRange(gte="k1"), 2)))
    )
    assert first.items == [("k1", encode_value(1)), ("k2", encode_value(2))]
    assert first.more is True
    rest_range = ScanRange(gte="k1").after("k2")
    rest = Scan(rest_range, 10).decode_result(await rig.server.handle_call(incoming(P, Scan(rest_range, 10))))
    assert [k for k, _ in rest.items] == ["k3", "k4", "k5"]
    assert rest.more is False
    keys_only = ScanRange(lt="k2", reverse=True, values=False)
    page = Scan(keys_only, 5).decode_result(await rig.server.handle_call(incoming(P, Scan(keys_only, 5))))
    assert page.items == [("k1", None), ("k0", None)]
    assert page.more is False
    assert replica.barriers == 3


async def test_stale_scan_needs_no_leader() -> None:
    rig = make_rig()
    replica = rig.host(P, **LEADER_HINT)
    put_data(rig.store, P, {"a": 1, "b": 2})
    body = await rig.server.handle_call(incoming(P, Scan(ScanRange(), 1, "stale")))
    assert body == [[["a", encode_value(1)]], True]
    assert replica.barriers == 0 and rig.replicas.leader_calls == []


async def test_a_scan_page_carries_at_most_page_bytes_of_values() -> None:
    """``PAGE_BYTES`` is "the most bytes of values one scan page carries (at least one item is always sent)"."""
    rig = make_rig(max_value_bytes=2 * PAGE_BYTES)
    rig.host(P)
    value = b"v" * (PAGE_BYTES * 2 // 5)  # two fit in a page, three do not
    put_data(rig.store, P, {f"big{i}": value for i in range(5)})
    page = Scan(ScanRange(), 100).decode_result(await rig.server.handle_call(incoming(P, Scan(ScanRange(), 100))))
    assert page.more is True
    assert 1 <= len(page.items) < 5
    assert sum(len(v or b"") for _, v in page.items) <= PAGE_BYTES


async def test_a_single_value_larger_than_a_page_is_still_sent_alone() -> None:
    rig = make_rig(max_value_bytes=2 * PAGE_BYTES)
    rig.host(P)
    huge = b"h" * (PAGE_BYTES + 10)
    put_data(rig.store, P, {"a": huge, "b": 1})
    page = Scan(ScanRange(), 100).decode_result(await rig.server.handle_call(incoming(P, Scan(ScanRange(), 100))))
    assert page.items == [("a", encode_value(huge))]
    assert page.more is True


# --- info and leader ------------------------------------------------------------------------------------------


async def test_info_reports_the_group_as_the_leader_sees_it() -> None:
    rig = make_rig(known={ME: "n1:1", "n2": "n2:1"})  # n3's address is unknown
    replica = rig.host(P)
    put_data(rig.store, P, {"a": 1})
    replica.applied = 7
    info = Info().decode_result(await rig.server.handle_call(incoming(P, Info())))
    assert (info.name, info.leader, info.term, info.commit_index, info.applied_index) == (P, ME, 4, 9, 7)
    peers = {p.node_id: p for p in info.peers}
    assert set(peers) == {ME, "n2", "n3"}
    me = peers[ME]
    assert (me.role, me.address, me.match_index, me.connected) == ("leader", "n1:1", 7, True)
    assert (peers["n2"].role, peers["n2"].address, peers["n2"].match_index) == ("voter", "n2:1", 6)
    assert (peers["n3"].address, peers["n3"].connected) == (None, False)


async def test_find_leader_succeeds_on_the_leader() -> None:
    rig = make_rig()
    replica = rig.host(P)
    assert await rig.server.handle_call(incoming(P, FindLeader())) is None
    assert rig.replicas.leader_calls == [P]
    assert replica.proposed == [] and replica.barriers == 0


@pytest.mark.parametrize(
    "op",
    [Write((Delete("k"),)), Info(), FindLeader(), Call({"x": 1})],
    ids=lambda op: op.name,
)
async def test_a_follower_refuses_with_the_leaders_address(op: Op) -> None:
    """Everything but reads (which followers serve, see above) goes to the leader."""
    handled: list[Any] = []

    async def handler(partition: str, backend: LocalBackend, held: Any, body: Any) -> Any:
        handled.append(body)
        return None

    rig = make_rig(invoke_handler=handler, known={"n2": "n2:1"})
    replica = rig.host(P, **LEADER_HINT)
    with pytest.raises(NotLeader) as info:
        await rig.server.handle_call(incoming(P, op))
    assert (info.value.partition, info.value.leader, info.value.leader_address) == (P, "n2", "n2:1")
    assert info.value.provably_not_run
    assert replica.proposed == [] and replica.barriers == 0 and handled == []


async def test_the_server_learns_the_callers_address_but_not_a_clients() -> None:
    rig = make_rig()
    rig.host(P)
    await rig.server.handle_call(incoming(P, FindLeader()))
    assert rig.addresses.learned == {"n9": "n9:7"}
    client = PeerInfo(node_id=None, address="1.2.3.4:5", cluster_id=None, is_client=True)
    await rig.server.handle_call(incoming(P, FindLeader(), peer=client))
    assert rig.addresses.learned == {"n9": "n9:7"}


# --- requests (the application's handler) -----------------------------------------------------------------------


@attrs.define
class FakeNode:
    """The ``RunningNode`` a Request carries (only ``whoami`` is used here)."""

    node_id: str = ME

    def whoami(self) -> str:
        return self.node_id

    def partition(self, name: str) -> Partition:
        raise AssertionError("not used")

    async def request(self, partition: str, body: Any) -> Any:
        raise AssertionError("not used")


def request_invoker(handler: Any, seen: list[tuple[str, Request]] | None = None) -> Any:
    """What ``borough.Node`` passes as ``invoke_handler``: the handler gets a ``Request``."""

    async def invoke(partition: str, backend: LocalBackend, held: Any, body: Any) -> Any:
        request = Request(FakeNode(), Partition(backend, partition, Limits()), body)
        if seen is not None:
            seen.append((partition, request))
        return await handler(request)

    return invoke


async def test_a_request_runs_the_handler_next_to_its_partition() -> None:
    seen: list[tuple[str, Request]] = []

    async def handler(request: Request) -> Any:
        await request.partition.put("visits", request.body["n"])
        return {"visits": await request.partition.get("visits"), "on": request.node.whoami()}

    rig = make_rig(invoke_handler=request_invoker(handler, seen))
    replica = rig.host(P)
    reply = await rig.server.handle_call(incoming(P, Call({"n": 3})))
    assert reply == Reply({"visits": 3, "on": ME})
    assert [(p, r.partition.name, r.body) for p, r in seen] == [(P, P, {"n": 3})]
    assert [command[4] for command in replica.proposed] == [[["put", "visits", encode_value(3)]]]
    assert replica.barriers == 1  # the handler's linearizable get


async def test_a_request_gets_the_callers_streams_and_returns_its_own() -> None:
    async def handler(request: Request) -> Any:
        data = await request.body["streams"]["upload"].receive_some()

        async def echo() -> AsyncIterator[bytes]:
            yield data[::-1]

        return {"size": len(data), "name": request.body["name"], "streams": {"back": echo()}}

    rig = make_rig(invoke_handler=request_invoker(handler))
    rig.host(P)
    upload = trio.testing.MemoryReceiveStream()
    upload.put_data(b"hello")
    reply = await rig.server.handle_call(incoming(P, Call({"name": "f"}), streams={"upload": upload}))
    assert isinstance(reply, Reply)
    assert reply.body == {"size": 5, "name": "f"}
    assert list(reply.streams) == ["back"]
    assert [chunk async for chunk in reply.streams["back"]] == [b"olleh"]


async def test_a_handlers_exception_becomes_a_remote_error_naming_its_type() -> None:
    async def handler(request: Request) -> Any:
        raise LookupError("no such order")

    rig = make_rig(invoke_handler=request_invoker(handler))
    rig.host(P)
    with pytest.raises(RemoteError) as info:
        await rig.server.handle_call(incoming(P, Call(None)))
    assert (info.value.type_name, info.value.message) == ("LookupError", "no such order")
    assert not info.value.provably_not_run


@pytest.mark.parametrize("error", [NotLeader(P, "n2", "n2:1"), Overloaded("queue full")], ids=type)
async def test_a_handler_cut_off_by_a_retryable_error_is_unavailable_with_partial_effects(error: BoroughError) -> None:
    async def handler(request: Request) -> Any:
        await request.partition.put("half", 1)
        raise error

    rig = make_rig(invoke_handler=request_invoker(handler))
    rig.host(P)
    with pytest.raises(Unavailable, match="effects may be partial") as info:
        await rig.server.handle_call(incoming(P, Call(None)))
    assert not info.value.provably_not_run  # never run again elsewhere as if it had not run
    assert info.value.__cause__ is error
    assert rig.store.get(P, "half") == 1


async def test_a_request_without_a_handler_is_refused() -> None:
    rig = make_rig(invoke_handler=None)
    replica = rig.host(P)
    with pytest.raises(RemoteError) as info:
        await rig.server.handle_call(incoming(P, Call({"x": 1})))
    assert info.value.type_name == "NoHandler"
    assert replica.proposed == []


@pytest.mark.parametrize(
    ("seconds_left", "request_timeout", "expected"), [(3.0, 10.0, 3.0), (30.0, 10.0, 10.0), (None, 4.0, 4.0)]
)
async def test_a_handler_is_bounded_by_the_callers_time_left_and_the_request_timeout(
    autojump_clock: trio.testing.MockClock, seconds_left: float | None, request_timeout: float, expected: float
) -> None:
    async def handler(request: Request) -> Any:
        await trio.sleep_forever()

    rig = make_rig(invoke_handler=request_invoker(handler), request_timeout=request_timeout)
    rig.host(P)
    start = trio.current_time()
    with pytest.raises(Timeout, match=P):
        await rig.server.handle_call(incoming(P, Call(None), seconds_left))
    assert trio.current_time() - start == pytest.approx(expected)


@pytest.mark.parametrize(
    ("seconds_left", "request_timeout", "expected"), [(3.0, 10.0, 3.0), (30.0, 10.0, 10.0), (None, 4.0, 4.0)]
)
async def test_every_op_is_bounded_by_the_callers_time_left_and_the_request_timeout(
    autojump_clock: trio.testing.MockClock, seconds_left: float | None, request_timeout: float, expected: float
) -> None:
    rig = make_rig(request_timeout=request_timeout)
    replica = rig.host(P)

    async def stuck(*, anywhere: bool = False) -> None:  # a leader that never confirms its lease (no quorum)
        await trio.sleep_forever()

    replica.read_barrier = stuck  # type: ignore[method-assign]
    start = trio.current_time()
    with pytest.raises(Timeout, match=f"get on partition {P!r}"):
        await rig.server.handle_call(incoming(P, Get("alice"), seconds_left))
    assert trio.current_time() - start == pytest.approx(expected)


async def test_a_call_from_the_wire_is_bounded_by_the_wires_own_scope(autojump_clock: trio.testing.MockClock) -> None:
    """From the wire (``IncomingCall.bound``), the server opens no scope of its own: it gives the wire's scope the
    deadline (the caller's time left, at most request_timeout) and the Timeout the caller gets once it passes."""
    rig = make_rig(request_timeout=10.0)
    replica = rig.host(P)

    async def stuck(*, anywhere: bool = False) -> None:
        await trio.sleep_forever()

    replica.read_barrier = stuck  # type: ignore[method-assign]
    scope = trio.CancelScope()
    bound = CallBound(scope)
    start = trio.current_time()
    with scope:
        await rig.server.handle_call(attrs.evolve(incoming(P, Get("alice"), 3.0), bound=bound))
    assert scope.cancelled_caught
    assert trio.current_time() - start == pytest.approx(3.0)
    assert bound.expired is not None
    error = bound.expired()
    assert isinstance(error, Timeout) and f"get on partition {P!r}" in str(error)


async def test_a_bug_of_ours_reaches_the_caller_as_an_internal_error_without_our_internals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    replica = rig.host(P)

    async def buggy(*, anywhere: bool = False) -> None:
        raise KeyError("secret internal state 0xdeadbeef")

    replica.read_barrier = buggy  # type: ignore[method-assign]
    with pytest.raises(RemoteError) as info:
        await rig.server.handle_call(incoming(P, Get("alice")))
    assert info.value.type_name == "InternalError" and "deadbeef" not in str(info.value)
    assert "get on partition" in str(info.value)


def as_node(node_id: str) -> PeerInfo:
    """A node's connection (a join comes from the node joining)."""
    return PeerInfo(node_id=node_id, address=f"{node_id[:20]}:1", cluster_id="cluster-7", is_client=False)


# --- _system ----------------------------------------------------------------------------------------------------


async def system_rig(members: list[tuple[str, str]] | None = None) -> Rig:
    rig = make_rig()
    rig.host(SYSTEM)
    await rig.join_members(members if members is not None else [(ME, "n1:1"), ("n2", "n2:1"), ("n3", "n3:1")])
    return rig


async def test_join_proposes_a_join_command_and_answers_the_table_and_cluster_id() -> None:
    rig = await system_rig([(ME, "n1:1")])
    system = rig.replica(SYSTEM)
    call = incoming(SYSTEM, Join("n4", "n4:1"), peer=as_node("n4"))
    result = Join("n4", "n4:1").decode_result(await rig.server.handle_call(call))
    assert system.proposed == [join_command("n4", "n4:1")]
    assert result.cluster_id == "cluster-7"
    assert result.members.version == 2
    assert result.members[NodeId("n4")].address == "n4:1"
    assert result.members[NodeId("n4")].state is MemberState.ACTIVE


async def test_members_answers_the_leaders_table_without_a_read_round() -> None:
    # The table is versioned and readers keep the newest they saw: no ReadIndex round, which would wake a quiet
    # `_system` every time a node outside it polls (see test_quiesce_sim).
    rig = await system_rig()
    system = rig.replica(SYSTEM)
    table = Members().decode_result(await rig.server.handle_call(incoming(SYSTEM, Members())))
    assert table.version == 3
    assert table.node_ids() == (ME, "n2", "n3")
    assert system.barriers == 0 and system.proposed == []


async def test_locate_registers_a_missing_partition_with_the_placed_voters() -> None:
    rig = await system_rig()
    system = rig.replica(SYSTEM)
    record = Locate(P, True).decode_result(await rig.server.handle_call(incoming(SYSTEM, Locate(P, True))))
    assert record is not None
    assert (record.name, record.voters, record.table_version) == (P, (ME, "n2", "n3"), 3)
    assert rig.placed == [(P, 3)]
    assert system.proposed == [register_command(P, [ME, "n2", "n3"], 3)]
    assert system.barriers == 0  # registering is the compare-and-set: no read round first


async def test_locate_answers_an_existing_record_without_proposing() -> None:
    rig = await system_rig()
    system = rig.replica(SYSTEM)
    await system.propose(encode_command(register_command(P, ["n3", "n2"], 1)))
    system.proposed.clear()
    for create in (True, False):
        record = Locate(P, create).decode_result(await rig.server.handle_call(incoming(SYSTEM, Locate(P, create))))
        assert record is not None and record.voters == ("n3", "n2")
    # A record never changes once written: the one applied here is the answer, with no read round.
    assert system.proposed == [] and rig.placed == [] and system.barriers == 0


async def test_locate_without_create_answers_none_for_a_missing_partition() -> None:
    rig = await system_rig()
    system = rig.replica(SYSTEM)
    assert await rig.server.handle_call(incoming(SYSTEM, Locate(P, False))) is None
    assert system.proposed == [] and rig.placed == [] and system.barriers == 1  # "none" is a linearizable read


async def test_locate_with_no_active_member_yet_is_not_leader() -> None:
    rig = await system_rig([])
    system = rig.replica(SYSTEM)
    with pytest.raises(NotLeader) as info:
        await rig.server.handle_call(incoming(SYSTEM, Locate(P, True)))
    assert info.value.partition == SYSTEM
    assert system.proposed == []


async def test_a_refused_system_command_is_a_system_error() -> None:
    rig = await system_rig()
    system = rig.replica(SYSTEM)
    system.script.append(Refused("the table is full"))
    with pytest.raises(RemoteError) as info:
        await rig.server.handle_call(incoming(SYSTEM, Join("n5", "n5:1"), peer=as_node("n5")))
    assert (info.value.type_name, info.value.message) == ("SystemError", "the table is full")


async def test_system_operations_on_a_follower_carry_the_leaders_address() -> None:
    rig = make_rig(known={"n2": "n2:1"})
    system = rig.host(SYSTEM, **LEADER_HINT)
    for op in (Join("n4", "n4:1"), Locate(P, True), Members()):
        with pytest.raises(NotLeader) as info:
            await rig.server.handle_call(incoming(SYSTEM, op, peer=as_node("n4")))
        assert info.value.leader_address == "n2:1"
    assert system.proposed == [] and system.barriers == 0


# --- bad input --------------------------------------------------------------------------------------------------

_BIG_KEY = "k" * 65  # make_rig: max_key_bytes=64
_BIG_VALUE = encode_value("v" * 1100)  # make_rig: max_value_bytes=1024

BAD_BODIES: dict[str, Any] = {
    "not a list": {"op": "get"},
    "three fields": ["get", P, ["k", "linearizable"]],
    "unknown op": ["frobnicate", P, [], 1.0],
    "partition not a string": ["get", 7, ["k", "linearizable"], 1.0],
    "empty partition": ["get", "", ["k", "linearizable"], 1.0],
    "args not a list": ["get", P, "k", 1.0],
    "negative seconds left": ["get", P, ["k", "linearizable"], -1.0],
    "seconds left a bool": ["get", P, ["k", "linearizable"], True],
    "get with a third arg": ["get", P, ["k", "linearizable", 1], 1.0],
    "get an int key": ["get", P, [5, "linearizable"], 1.0],
    "get an empty key": ["get", P, ["", "linearizable"], 1.0],
    "unknown consistency": ["get", P, ["k", "eventual"], 1.0],
    "oversize key": ["get", P, [_BIG_KEY, "linearizable"], 1.0],
    "write no ops": ["write", P, [[]], 1.0],
    "write a bad op": ["write", P, [[["upsert", "k", encode_value(1)]]], 1.0],
    "write an unencoded value": ["write", P, [[["put", "k", 1]]], 1.0],
    "write an oversize key": ["write", P, [[["del", _BIG_KEY]]], 1.0],
    "write an oversize value": ["write", P, [[["put", "k", encode_value(1)], ["put", "j", _BIG_VALUE]]], 1.0],
    "scan limit zero": ["scan", P, [[None, None, None, None, False, True], 0, "linearizable"], 1.0],
    "scan two lower bounds": ["scan", P, [["a", "b", None, None, False, True], 1, "linearizable"], 1.0],
    "scan two upper bounds": ["scan", P, [[None, None, "y", "z", False, True], 1, "linearizable"], 1.0],
    "scan a short range": ["scan", P, [[None, None], 1, "linearizable"], 1.0],
    "info with args": ["info", P, ["x"], 1.0],
    "request without body": ["request", P, [], 1.0],
    "join an empty id": ["sys.join", SYSTEM, ["", "n4:1"], 1.0],
    "locate create not a bool": ["sys.dir", SYSTEM, [P, 1], 1.0],
    "members with args": ["sys.members", SYSTEM, [1], 1.0],
    "join on another partition": ["sys.join", P, ["n4", "n4:1"], 1.0],
    "locate on another partition": ["sys.dir", P, [P, True], 1.0],
    "members on another partition": ["sys.members", P, [], 1.0],
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_input_is_a_protocol_error_and_reaches_no_replica(body: Any) -> None:
    handled: list[Any] = []

    async def handler(partition: str, backend: LocalBackend, held: Any, body: Any) -> Any:
        handled.append(body)
        return None

    rig = make_rig(invoke_handler=handler)
    replicas = [rig.host(P), rig.host(SYSTEM)]
    joining = None
    if isinstance(body, list) and len(body) > 2 and body[0] == "sys.join" and body[2] and isinstance(body[2][0], str):
        joining = body[2][0]
    peer = as_node(joining) if joining else CALLER  # a node joins only as itself: else that refusal comes first
    with pytest.raises(RemoteProtocolError, match="malformed call"):
        await rig.server.handle_call(incoming(P, body, peer=peer))
    assert [(r.proposed, r.barriers) for r in replicas] == [([], 0), ([], 0)]
    assert handled == []


async def test_a_join_the_member_table_would_reject_is_refused_before_the_log() -> None:
    """The server's docstring: calls from the wire are validated "before [they] can reach the log"; a Refused
    result is for "only a bug or a corrupt log". A node id over the member table's 256 characters is bad input."""
    rig = await system_rig()
    system = rig.replica(SYSTEM)
    with pytest.raises(RemoteProtocolError):
        await rig.server.handle_call(incoming(SYSTEM, Join("n" * 300, "n4:1"), peer=as_node("n" * 300)))
    assert system.proposed == []


async def test_a_snapshot_only_arrives_over_the_wire() -> None:
    rig = make_rig()
    rig.host(P)
    op = SendSnapshot(["install", 1])
    with pytest.raises(RemoteProtocolError, match="snapshots only arrive over the wire"):
        await rig.server.execute(P, op, None)
    assert rig.snapshots.received == []
    stream = trio.testing.MemoryReceiveStream()
    assert await rig.server.handle_call(incoming(P, op, streams={"data": stream})) is None
    assert rig.snapshots.received == [(P, op, {"data": stream})]


@attrs.frozen(slots=True)
class Frobnicate(Op, name="frobnicate", repeatable=True):
    """An operation the server does not know."""


async def test_an_operation_the_server_does_not_know_is_refused() -> None:
    rig = make_rig()
    replica = rig.host(P)
    with pytest.raises(RemoteProtocolError, match="unknown operation 'frobnicate'"):
        await rig.server.execute(P, Frobnicate())
    assert replica.proposed == [] and replica.barriers == 0


async def test_a_local_request_gets_local_streams_and_returns_typed_reply() -> None:
    async def handler(request: Request) -> Any:
        stream = request.body["streams"]["in"]
        assert isinstance(stream, trio.abc.ReceiveStream)  # the same type a remote caller's stream has
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        return {"got": data}

    async def chunks() -> AsyncIterator[bytes]:
        yield b"abc"

    rig = make_rig(invoke_handler=request_invoker(handler))
    rig.host(P)
    reply = await rig.server.execute(P, Call({"k": 1}), {"in": chunks()})
    assert reply == {"got": b"abc"}  # a plain body, not a wire Reply


async def test_a_seconds_left_of_zero_times_out_a_request_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(request: Request) -> Any:
        await trio.sleep(1)
        return "late"

    rig = make_rig(invoke_handler=request_invoker(handler))
    rig.host(P)
    start = trio.current_time()
    with pytest.raises(Timeout):
        await rig.server.handle_call(incoming(P, Call(None), 0))
    assert trio.current_time() == start


async def test_a_caller_creating_partitions_too_fast_is_told_overloaded(autojump_clock: trio.testing.MockClock) -> None:
    from borough.errors import Overloaded
    from borough.node.ratelimit import PerCallerRate

    rig = await system_rig()
    rig.server._creations = PerCallerRate(2, 2)  # two a second, in bursts of two
    for name in ("a1", "a2"):
        assert await rig.server.handle_call(incoming(SYSTEM, Locate(name, True))) is not None
    with pytest.raises(Overloaded, match="creates partitions faster"):
        await rig.server.handle_call(incoming(SYSTEM, Locate("a3", True)))
    assert await rig.server.handle_call(incoming(SYSTEM, Locate("a1", True))) is not None  # it exists: no creation
    other = PeerInfo(node_id=None, address="9.9.9.9:1", cluster_id=None, is_client=True)
    assert await rig.server.handle_call(incoming(SYSTEM, Locate("b1", True), peer=other)) is not None
    await rig.server.execute(SYSTEM, Locate("n-own", True))  # this node's own work is never limited
    await trio.sleep(1)
    assert await rig.server.handle_call(incoming(SYSTEM, Locate("a3", True))) is not None


def test_the_per_caller_rate_forgets_the_longest_idle_caller_past_its_bound() -> None:
    from borough.node.ratelimit import PerCallerRate

    async def main() -> None:
        rate = PerCallerRate(1, 1, max_keys=2)
        assert rate.take("a") and not rate.take("a")
        assert rate.take("b") and rate.take("c")  # "a" is forgotten to make room
        assert rate.take("a")  # a fresh bucket: erring towards allowing
        assert rate.refused == 1

    trio.run(main, clock=trio.testing.MockClock())


async def test_a_nodes_own_refusal_does_not_read_as_a_handler_exception() -> None:
    rig = make_rig(invoke_handler=None)
    rig.host(P)
    with pytest.raises(RemoteError) as info:
        await rig.server.handle_call(incoming(P, Call({"x": 1})))
    assert not info.value.from_handler and str(info.value).startswith("NoHandler: ")
    from borough.wire.errors_codec import default_registry

    again = default_registry.decode(default_registry.encode(info.value))
    assert isinstance(again, RemoteError) and not again.from_handler and str(again) == str(info.value)
