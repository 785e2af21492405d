"""``borough decommission NODE_ID`` against four real ``borough serve`` processes: the node's replicas move to the
other three, it leaves the member table, and every value written before is still there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from borough.cli import main

from .test_processes import Proc, procs, start_cluster  # noqa: F401 - procs is a fixture

pytestmark = pytest.mark.e2e


def test_decommission_from_a_shell_moves_the_replicas_away(tmp_path: Path, procs: list[Proc]) -> None:  # noqa: F811
    trio.run(start_cluster, tmp_path, procs, 4)
    env = {"BOROUGH_CLUSTER": ",".join(p.address for p in procs[:3])}

    def ok(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    for i in range(24):
        ok("put", f"p{i % 8}", f"k{i}", str(i))
    members = json.loads(ok("members", "--json"))
    [victim] = [m["node_id"] for m in members if m["address"] == procs[3].address]
    before = json.loads(ok("partitions", "--json"))
    assert any(victim in row["voters"] + row["learners"] for row in before)  # it held replicas to move
    assert ok("decommission", victim, "--timeout", "120").strip() == f"{victim} decommissioned"

    after = json.loads(ok("members", "--json"))
    assert victim not in {m["node_id"] for m in after if m["state"] == "ACTIVE"}, after
    assert sorted(m["address"] for m in after if m["state"] == "ACTIVE") == sorted(p.address for p in procs[:3])
    for row in json.loads(ok("partitions", "--json")):
        assert victim not in row["voters"] and victim not in row["learners"], row
    for i in range(24):
        assert json.loads(ok("get", f"p{i % 8}", f"k{i}")) == i
