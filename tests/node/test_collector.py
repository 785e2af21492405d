"""The cycle collector while nodes run (``borough.node.collector``, the ``gc_threshold`` setting): raised while any
node runs, never lowered, put back after the last one stops unless the application changed it meanwhile."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio
import trio.testing

import borough
from borough.errors import ConfigError
from borough.node.collector import collector_tuned
from borough.store import MemoryStore
from borough.wire.simnet import SimNetwork


@pytest.fixture(autouse=True)
def defaults() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # (CPython's defaults, whatever the test process runs with)
    yield
    gc.set_threshold(*before)


def test_raised_while_a_node_runs_and_put_back_after() -> None:
    with collector_tuned(50_000):
        assert gc.get_threshold() == (50_000, 20, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_put_back_only_after_the_last_of_several_nodes() -> None:
    with collector_tuned(50_000):
        with collector_tuned(80_000):  # (a second node asking for more gets it)
            assert gc.get_threshold() == (80_000, 20, 10)
        assert gc.get_threshold() == (80_000, 20, 10)  # one node still runs
    assert gc.get_threshold() == (700, 10, 10)


def test_never_lowered_and_zero_leaves_it_alone() -> None:
    gc.set_threshold(100_000, 5, 7)  # the application's own
    with collector_tuned(50_000):
        assert gc.get_threshold() == (100_000, 5, 7)
    assert gc.get_threshold() == (100_000, 5, 7)
    gc.set_threshold(700, 10, 10)
    with collector_tuned(0):
        assert gc.get_threshold() == (700, 10, 10)


def test_the_applications_change_while_a_node_runs_is_kept() -> None:
    with collector_tuned(50_000):
        gc.set_threshold(2_000, 10, 10)
    assert gc.get_threshold() == (2_000, 10, 10)


def test_put_back_when_the_node_fails() -> None:
    with pytest.raises(RuntimeError), collector_tuned(50_000):
        raise RuntimeError("the node failed")
    assert gc.get_threshold() == (700, 10, 10)


async def test_an_embedded_node_raises_it_from_its_setting(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(1)
    common = {"data_dir": None, "store": MemoryStore(), "offload": False, "seed": 1}
    async with borough.open_node(listen="a:7000", network=net.host("a"), **common) as node:
        assert gc.get_threshold()[0] == 50_000  # the default
        await node.partition("p").put("k", "v")
    assert gc.get_threshold() == (700, 10, 10)
    async with borough.open_node(listen="b:7000", network=net.host("b"), gc_threshold=0, **common):
        assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(ConfigError, match="gc_threshold must be 0"):
        async with borough.open_node(listen="c:7000", network=net.host("c"), gc_threshold=-1, **common):
            pass
