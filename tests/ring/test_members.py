"""The member table: records, lookups, versioned changes and a validating CBOR list form."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from borough.errors import RemoteProtocolError
from borough.raft.records import NodeId
from borough.ring.members import Member, MemberState, MemberTable

from .budget import examples

members = st.builds(
    Member,
    node_id=st.text(min_size=1, max_size=20),
    address=st.text(min_size=1, max_size=30),
    state=st.sampled_from(list(MemberState)),
)
tables = st.builds(
    MemberTable,
    version=st.integers(min_value=0, max_value=2**63 - 1),
    members=st.lists(members, max_size=8, unique_by=lambda m: m.node_id),
)
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)


def m(node: str, state: MemberState = MemberState.ACTIVE) -> Member:
    return Member(node_id=NodeId(node), address=f"{node}:7000", state=state)


@settings(max_examples=examples(50))
@given(table=tables)
def test_table_round_trips_through_cbor(table: MemberTable) -> None:
    assert MemberTable.from_list(cbor2.loads(cbor2.dumps(table.to_list()))) == table


@settings(max_examples=examples(200))
@given(garbage=cbor_values)
def test_garbage_is_a_remote_protocol_error(garbage: object) -> None:
    try:
        MemberTable.from_list(garbage)
    except RemoteProtocolError:
        pass


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [1],
        [1, "x"],
        [-1, []],
        [True, []],
        [1, [["a", "a:1"]]],
        [1, [["", "a:1", 1]]],
        [1, [["a", "", 1]]],
        [1, [["a", "a:1", 9]]],
        [1, [["a", "a:1", True]]],
        [1, [[7, "a:1", 1]]],
        [1, [["a", "a:1", 1], ["a", "b:1", 1]]],
        [2**63, []],
    ],
)
def test_specific_garbage_is_refused_with_a_clear_error(obj: object) -> None:
    with pytest.raises(RemoteProtocolError):
        MemberTable.from_list(obj)


def test_lookups_and_ring_members() -> None:
    table = MemberTable(
        version=2, members=[m("c"), m("a", MemberState.LEAVING), m("b", MemberState.JOINING), m("d", MemberState.DEAD)]
    )
    assert table.node_ids() == ("a", "b", "c", "d")  # kept sorted
    assert [x.node_id for x in table.ring_members()] == ["c"]
    assert [x.node_id for x in table.in_state(MemberState.LEAVING, MemberState.DEAD)] == ["a", "d"]
    assert "a" in table and "z" not in table and len(table) == 4 and [x.node_id for x in table] == ["a", "b", "c", "d"]
    assert table.get(NodeId("z")) is None and table.address_of(NodeId("c")) == "c:7000"
    with pytest.raises(KeyError, match="not in the member table"):
        table[NodeId("z")]
    assert MemberTable(version=2, members=[m("a"), m("b")]) == MemberTable(version=2, members=[m("b"), m("a")])
    assert hash(MemberTable(version=2, members=[m("a")])) == hash(MemberTable(version=2, members=[m("a")]))


def test_changes_bump_the_version() -> None:
    t0 = MemberTable(version=5, members=[m("a")])
    t1 = t0.with_member(m("b", MemberState.JOINING))
    t2 = t1.with_state(NodeId("b"), MemberState.ACTIVE)
    t3 = t2.without(NodeId("a"))
    assert [t.version for t in (t0, t1, t2, t3)] == [5, 6, 7, 8]
    assert t2[NodeId("b")].state is MemberState.ACTIVE and t3.node_ids() == ("b",)
    with pytest.raises(KeyError):
        t3.without(NodeId("a"))


def test_local_misuse_raises_value_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        MemberTable(members=[m("a"), m("a")])
    with pytest.raises(ValueError, match="node id"):
        Member(node_id=NodeId(""), address="x:1")
    with pytest.raises(ValueError, match="state"):
        Member(node_id=NodeId("a"), address="x:1", state=7)  # type: ignore[arg-type]
    assert Member(node_id=NodeId("a"), address="x:1", state=1).state is MemberState.ACTIVE  # type: ignore[arg-type]
