"""``borough`` commands that talk to a running cluster as a client: read and write keys, call handlers, and look
at members and partitions.

Every command takes ``--cluster HOST:PORT[,...]`` (``BOROUGH_CLUSTER``), ``--certs-dir`` (``BOROUGH_CERTS_DIR``)
and ``--timeout``; values and request bodies are JSON (``--raw`` for a plain string); ``--json`` prints one JSON
document for scripts, otherwise readable lines for people. Exit codes scripts can rely on: 0 done, 1 the key or
partition does not exist, 2 bad usage (click's), 3 the cluster could not do it (unreachable, timed out, refused);
errors are one line on stderr that says what to do. It uses the public API only (``borough.open_client``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import trio

import borough
from borough.errors import BoroughError, NotFound

__all__ = ["error_leaves", "register"]

T = TypeVar("T")

NOT_FOUND = 1
FAILED = 3


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every client command shares."""
    fn = click.option("--json", "as_json", is_flag=True, help="print one JSON document (for scripts)")(fn)
    fn = click.option(
        "--timeout", envvar="BOROUGH_TIMEOUT", default=10.0, show_default=True, type=float, help="seconds per operation"
    )(fn)
    fn = click.option(
        "--certs-dir", envvar="BOROUGH_CERTS_DIR", default=None, help="mutual TLS: ca.crt, client.crt, client.key"
    )(fn)
    fn = click.option(
        "--cluster",
        envvar="BOROUGH_CLUSTER",
        default="127.0.0.1:7000",
        show_default=True,
        help="HOST:PORT,... of nodes of the cluster",
    )(fn)
    return fn


def _run(cluster: str, certs_dir: str | None, timeout: float, work: Callable[[borough.Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with borough.open_client(cluster, request_timeout=timeout, certs_dir=certs_dir) as client:
            return await work(client)

    try:
        return trio.run(main)
    except BaseException as exc:
        leaves = error_leaves(exc)
        if not leaves or not all(isinstance(e, (BoroughError, OSError, ValueError, TypeError)) for e in leaves):
            raise
        for leaf in leaves:
            click.echo(f"borough: {leaf}", err=True)
        sys.exit(NOT_FOUND if all(isinstance(e, NotFound) for e in leaves) else FAILED)


def error_leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` (trio nurseries wrap them in groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in error_leaves(sub)]
    return [exc]


def _value(text: str, raw: bool) -> Any:
    if raw:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg}); quote strings as JSON ('\"text\"') or pass --raw") from None


def _show(value: Any) -> str:
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def register(main: click.Group) -> None:
    """Add the client commands to the ``borough`` command group."""

    @main.command()
    @_options
    @click.option("--raw", is_flag=True, help="VALUE is a plain string, not JSON")
    @click.argument("partition")
    @click.argument("key")
    @click.argument("value")
    def put(cluster: str, certs_dir: str | None, timeout: float, as_json: bool, raw: bool, **args: str) -> None:
        """Write VALUE (JSON) under KEY in PARTITION."""
        value = _value(args["value"], raw)
        _run(cluster, certs_dir, timeout, lambda c: c.partition(args["partition"]).put(args["key"], value))
        if as_json:
            click.echo(_show({"ok": True}))

    @main.command()
    @_options
    @click.argument("partition")
    @click.argument("key")
    def get(cluster: str, certs_dir: str | None, timeout: float, as_json: bool, partition: str, key: str) -> None:
        """Print the value of KEY in PARTITION as JSON (exit code 1 if there is none)."""
        value = _run(cluster, certs_dir, timeout, lambda c: c.partition(partition).get(key))
        click.echo(_show({"key": key, "value": value}) if as_json else _show(value))

    @main.command(name="del")
    @_options
    @click.argument("partition")
    @click.argument("key")
    def delete(cluster: str, certs_dir: str | None, timeout: float, as_json: bool, partition: str, key: str) -> None:
        """Delete KEY from PARTITION (done even if it was not there)."""
        _run(cluster, certs_dir, timeout, lambda c: c.partition(partition).delete(key))
        if as_json:
            click.echo(_show({"ok": True}))

    @main.command()
    @_options
    @click.option("--gte", default=None, help="first key (inclusive)")
    @click.option("--lt", default=None, help="end key (exclusive)")
    @click.option("--prefix", default=None, help="only keys starting with this")
    @click.option("--limit", default=None, type=click.IntRange(min=0), help="at most this many items")
    @click.option("--keys-only", is_flag=True, help="print keys only")
    @click.option("--reverse", is_flag=True, help="descending key order")
    @click.argument("partition")
    def scan(
        cluster: str,
        certs_dir: str | None,
        timeout: float,
        as_json: bool,
        gte: str | None,
        lt: str | None,
        prefix: str | None,
        limit: int | None,
        keys_only: bool,
        reverse: bool,
        partition: str,
    ) -> None:
        """Print the keys (and values) of PARTITION in key order, one per line."""
        if prefix is not None:
            if gte is not None or lt is not None:
                raise click.UsageError("give --prefix, or --gte/--lt, not both")
            gte, lt = prefix, _after_prefix(prefix)

        async def work(client: borough.Client) -> list[Any]:
            it = client.partition(partition).iterator(
                gte=gte, lt=lt, limit=limit, reverse=reverse, values=not keys_only
            )
            return [item async for item in it]

        items = _run(cluster, certs_dir, timeout, work)
        if as_json:
            rows = items if keys_only else [{"key": k, "value": v} for k, v in items]
            click.echo(_show(rows))
            return
        for item in items:
            click.echo(_show(item) if keys_only else f"{_show(item[0])}\t{_show(item[1])}")

    @main.command()
    @_options
    @click.option("--raw", is_flag=True, help="BODY is a plain string, not JSON")
    @click.argument("partition")
    @click.argument("body")
    def request(
        cluster: str, certs_dir: str | None, timeout: float, as_json: bool, raw: bool, partition: str, body: str
    ) -> None:
        """Run the cluster's request handler on PARTITION's leader with BODY (JSON); print its reply as JSON."""
        payload = _value(body, raw)
        reply = _run(cluster, certs_dir, timeout, lambda c: c.request(partition, payload))
        click.echo(_show(reply))

    @main.command()
    @_options
    def members(cluster: str, certs_dir: str | None, timeout: float, as_json: bool) -> None:
        """List the members of the cluster: node id, address, state, and the replicas and leaderships each holds."""
        rows = _run(cluster, certs_dir, timeout, lambda c: c.member_status())
        if as_json:
            click.echo(_show([_member(m) for m in rows]))
            return
        for m in rows:
            held = "?" if m.replicas is None else f"{len(m.replicas)} replicas"
            led = "?" if m.leaderships is None else f"{len(m.leaderships)} leaderships"
            click.echo(f"{m.node_id}\t{m.address}\t{m.state}\t{held}\t{led}")

    @main.command()
    @_options
    def partitions(cluster: str, certs_dir: str | None, timeout: float, as_json: bool) -> None:
        """List every partition with its leader, term, voters, learners and the followers' lag."""

        async def work(client: borough.Client) -> list[dict[str, Any]]:
            return [await _partition_row(client, name) for name in await client.partitions()]

        rows = _run(cluster, certs_dir, timeout, work)
        if as_json:
            click.echo(_show(rows))
            return
        for r in rows:
            click.echo(
                f"{r['name']}\tleader {r['leader'] or '-'}\tterm {r['term']}\tvoters {','.join(r['voters'])}"
                f"\tlearners {','.join(r['learners']) or '-'}\tlag {r['lag']}"
            )

    @main.command()
    @_options
    def status(cluster: str, certs_dir: str | None, timeout: float, as_json: bool) -> None:
        """The cluster at a glance: members, then the partitions that are under-replicated or leaderless."""

        async def work(client: borough.Client) -> dict[str, Any]:
            members = [_member(m) for m in await client.member_status()]
            rows = [await _partition_row(client, name) for name in await client.partitions()]
            troubled = [r for r in rows if r["leader"] is None or len(r["voters"]) < len(r["targets"])]
            return {"members": members, "partitions": len(rows), "troubled": troubled}

        report = _run(cluster, certs_dir, timeout, work)
        if as_json:
            click.echo(_show(report))
            return
        for m in report["members"]:
            click.echo(f"member {m['node_id']}\t{m['address']}\t{m['state']}")
        click.echo(f"{report['partitions']} partitions; {len(report['troubled'])} under-replicated or leaderless")
        for r in report["troubled"]:
            click.echo(f"  {r['name']}\tleader {r['leader'] or '-'}\tvoters {','.join(r['voters'])}")

    @main.command(name="backup")
    @_options
    @click.argument("directory", type=click.Path(file_okay=False))
    def backup_command(cluster: str, certs_dir: str | None, timeout: float, as_json: bool, directory: str) -> None:
        """Export every partition into DIRECTORY (consistent per partition; run it again to resume)."""
        from borough.backup import backup

        def told(name: str, items: int) -> None:
            if not as_json:
                click.echo(f"{name}\t{items} items", err=True)

        count = _run(cluster, certs_dir, timeout, lambda c: backup(c, directory, progress=told))
        click.echo(_show({"exported": count, "directory": directory}) if as_json else f"{count} partitions exported")

    @main.command(name="restore")
    @_options
    @click.option("--overwrite", is_flag=True, help="write into partitions that already hold data")
    @click.argument("directory", type=click.Path(file_okay=False, exists=True))
    def restore_command(
        cluster: str, certs_dir: str | None, timeout: float, as_json: bool, overwrite: bool, directory: str
    ) -> None:
        """Load the backup in DIRECTORY into the cluster (a new one: partitions holding data are refused)."""
        from borough.backup import restore

        items = _run(cluster, certs_dir, timeout, lambda c: restore(c, directory, overwrite=overwrite))
        click.echo(_show({"restored_items": items}) if as_json else f"{items} items restored")

    @main.command()
    @_options
    @click.argument("node_id")
    def decommission(cluster: str, certs_dir: str | None, timeout: float, as_json: bool, node_id: str) -> None:
        """Move every replica off NODE_ID, then remove it from the cluster (works for a node that is down)."""
        _run(cluster, certs_dir, max(timeout, 600.0), lambda c: c.decommission(node_id))
        click.echo(_show({"ok": True, "decommissioned": node_id}) if as_json else f"{node_id} decommissioned")


def _after_prefix(prefix: str) -> str | None:
    """The smallest string after every string that starts with ``prefix`` (None: no end)."""
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < sys.maxunicode:
            chars[-1] = chr(last + 1)
            return "".join(chars)
        chars.pop()
    return None


def _member(m: Any) -> dict[str, Any]:
    return {
        "node_id": m.node_id,
        "address": m.address,
        "state": m.state,
        "replicas": None if m.replicas is None else list(m.replicas),
        "leaderships": None if m.leaderships is None else list(m.leaderships),
    }


async def _partition_row(client: borough.Client, name: str) -> dict[str, Any]:
    try:
        info = await client.partition(name).info()
    except BoroughError as exc:
        return {"name": name, "leader": None, "term": None, "voters": [], "learners": [], "targets": [],
                "lag": None, "error": str(exc)}  # fmt: skip
    lag = max((info.commit_index - p.match_index for p in info.peers), default=0)
    return {
        "name": name,
        "leader": info.leader,
        "term": info.term,
        "voters": list(info.voters),
        "learners": list(info.learners),
        "targets": list(info.targets),
        "lag": lag,
    }
