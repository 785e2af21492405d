"""The client commands of ``borough``: arguments, errors and exit codes (click's CliRunner), and every command
against three real ``borough serve`` processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from borough.cli import main

from .test_processes import Proc, procs, start_cluster  # noqa: F401 - procs is a fixture

NOWHERE = {"BOROUGH_CLUSTER": "127.0.0.1:1"}


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env or NOWHERE)
    return result.exit_code, result.stdout, result.stderr


def test_a_value_that_is_not_json_is_a_usage_error_that_says_what_to_do() -> None:
    code, _, err = run("put", "p", "k", "hello")
    assert code == 2 and "not JSON" in err and "--raw" in err


def test_prefix_and_a_range_together_are_a_usage_error() -> None:
    code, _, err = run("scan", "p", "--prefix", "a", "--gte", "b")
    assert code == 2 and "not both" in err


def test_an_unreachable_cluster_is_exit_code_3_with_one_line_and_no_traceback() -> None:
    code, out, err = run("get", "p", "k", "--timeout", "0.5")
    assert code == 3 and out == ""
    assert err.startswith("borough: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
def test_every_client_command_against_three_processes(tmp_path: Path, procs: list[Proc]) -> None:  # noqa: F811
    trio.run(start_cluster, tmp_path, procs, 3)
    env = {"BOROUGH_CLUSTER": ",".join(p.address for p in procs)}

    def ok(*args: str) -> str:
        code, out, err = run(*args, env=env)
        assert code == 0, err
        return out

    ok("put", "users", "alice", '{"age": 31}')
    ok("put", "users", "bob", "--raw", "hello")
    ok("put", "users", "carol", "[1, 2]")
    assert json.loads(ok("get", "users", "alice")) == {"age": 31}
    assert json.loads(ok("get", "users", "bob", "--json")) == {"key": "bob", "value": "hello"}
    assert run("get", "users", "nobody", env=env)[0] == 1
    assert ok("scan", "users", "--keys-only").split() == ['"alice"', '"bob"', '"carol"']
    assert json.loads(ok("scan", "users", "--prefix", "b", "--json")) == [{"key": "bob", "value": "hello"}]
    assert json.loads(ok("scan", "users", "--reverse", "--limit", "1", "--keys-only", "--json")) == ["carol"]
    ok("del", "users", "bob")
    assert run("get", "users", "bob", env=env)[0] == 1
    members = json.loads(ok("members", "--json"))
    assert sorted(m["address"] for m in members) == sorted(p.address for p in procs)
    assert all(m["state"] == "ACTIVE" for m in members)
    rows = json.loads(ok("partitions", "--json"))
    users = next(r for r in rows if r["name"] == "users")
    assert users["leader"] in users["voters"] and len(users["voters"]) == 3
    status = json.loads(ok("status", "--json"))
    assert len(status["members"]) == 3 and status["partitions"] >= 1
    assert "under-replicated or leaderless" in ok("status")
    code, _, err = run("request", "users", '{"x": 1}', env=env)
    assert code == 3 and "NoHandler" in err  # serve has no handler: said in one line

    # Backup, then restore into a new cluster, and compare everything.
    for i in range(300):
        ok("put", f"p{i % 7}", f"k{i}", json.dumps({"i": i, "pad": "x" * 50}))
    backup_dir = tmp_path / "backup"
    assert "partitions exported" in ok("backup", str(backup_dir))
    assert json.loads(ok("backup", str(backup_dir), "--json"))["exported"] == 0  # resumed: nothing left to do
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert set(manifest["partitions"]) >= {"users", *(f"p{i}" for i in range(7))}
    fresh: list[Proc] = []
    try:
        (tmp_path / "fresh").mkdir()
        trio.run(start_cluster, tmp_path / "fresh", fresh, 1)
        env2 = {"BOROUGH_CLUSTER": fresh[0].address}
        code, out, err = run("restore", str(backup_dir), "--json", env=env2)
        assert code == 0, err
        assert json.loads(out)["restored_items"] == 300 + 2
        for name in ["users", *(f"p{i}" for i in range(7))]:
            before = json.loads(ok("scan", name, "--json"))
            code, after, err = run("scan", name, "--json", env=env2)
            assert code == 0 and json.loads(after) == before, err
        code, _, err = run("restore", str(backup_dir), env=env2)
        assert code == 3 and "already holds data" in err
    finally:
        for p in fresh:
            p.stop()
