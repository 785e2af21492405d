"""The serializability checker (issue 18): it must catch the known anomalies and pass serial histories."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from borough.testing import INITIAL, Txn, check_serializable


def test_a_serial_history_passes() -> None:
    txns = [
        Txn(id="t1", commit=1, reads={"x": INITIAL}, writes={"x": 1}),
        Txn(id="t2", commit=2, reads={"x": 1}, writes={"x": 2}),
        Txn(id="t3", commit=3, reads={"x": 2, "y": INITIAL}, writes={"y": 7}),
    ]
    assert check_serializable(txns).ok


def test_a_read_only_transaction_of_an_older_state_is_serializable_before_the_writer() -> None:
    txns = [
        Txn(id="w", commit=1, writes={"x": 1}),
        Txn(id="r", commit=2, reads={"x": INITIAL}),  # saw the state before w: serial order r, w
    ]
    assert check_serializable(txns).ok


def test_lost_update_is_caught() -> None:
    # two increments both read 0; the second overwrites the first
    txns = [
        Txn(id="a", commit=1, reads={"counter": 0}, writes={"counter": 1}),
        Txn(id="b", commit=2, reads={"counter": 0}, writes={"counter": 1.0001}),
        Txn(id="init", commit=0, writes={"counter": 0}),
    ]
    result = check_serializable(txns)
    assert not result.ok and set(result.cycle) == {"a", "b"}
    assert "rw" in result.explanation and "ww" in result.explanation


def test_write_skew_is_caught() -> None:
    # on-call doctors: each checks the other is on call, then goes off call
    txns = [
        Txn(id="init", commit=0, writes={"alice": "on", "bob": "on"}),
        Txn(id="a", commit=1, reads={"alice": "on", "bob": "on"}, writes={"alice": "off-a"}),
        Txn(id="b", commit=2, reads={"alice": "on", "bob": "on"}, writes={"bob": "off-b"}),
    ]
    result = check_serializable(txns)
    assert not result.ok and set(result.cycle) == {"a", "b"}


def test_a_dirty_read_of_an_aborted_write_is_caught() -> None:
    # "aborted" wrote x=99 and never committed (so it is not among the committed transactions)
    txns = [Txn(id="reader", commit=1, reads={"x": 99}, writes={"y": 1})]
    result = check_serializable(txns)
    assert not result.ok and "dirty read" in result.explanation


def test_a_read_of_a_write_committed_later_is_a_dirty_read() -> None:
    txns = [
        Txn(id="reader", commit=1, reads={"x": 5}),
        Txn(id="writer", commit=2, writes={"x": 5}),
    ]
    assert "dirty read" in check_serializable(txns).explanation


def test_a_value_written_again_is_placed_at_its_latest_write() -> None:
    txns = [
        Txn(id="t1", commit=1, writes={"x": "A"}),
        Txn(id="t2", commit=2, writes={"x": "B"}),
        Txn(id="t3", commit=3, writes={"x": "A"}),
        Txn(id="t4", commit=4, reads={"x": "A"}, writes={"x": "C"}),  # read t3's A: serial
    ]
    assert check_serializable(txns).ok


@given(st.lists(st.tuples(st.sampled_from("xyz"), st.sampled_from("xyz")), max_size=30))
def test_any_serial_execution_passes(steps: list[tuple[str, str]]) -> None:
    """Transactions run one after another (each reads a key and writes another) are always serializable."""
    state: dict[str, object] = {}
    txns = []
    for n, (read, write) in enumerate(steps):
        txns.append(Txn(id=n, commit=n, reads={read: state.get(read, INITIAL)}, writes={write: n}))
        state[write] = n
    assert check_serializable(txns).ok


@given(st.integers(2, 6))
def test_concurrent_increments_from_one_snapshot_are_never_serializable(n: int) -> None:
    txns = [Txn(id=i, commit=i, reads={"c": INITIAL}, writes={"c": i}) for i in range(n)]
    assert not check_serializable(txns).ok
