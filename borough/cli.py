"""The ``borough`` command line. Commands talk to nodes through the public API only.

``borough serve`` runs one node until SIGINT/SIGTERM; ``borough dev`` runs a local cluster in one process for
trying things out. Every flag has a ``BOROUGH_*`` environment variable. This is the one place that configures
logging output.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import click
import trio

import borough
from borough.errors import BoroughError


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _until_signalled(nursery: trio.Nursery) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logging.getLogger("borough.cli").info("received %s: shutting down", signal.Signals(signum).name)
            nursery.cancel_scope.cancel()
            return


@click.group()
@click.version_option(borough.__version__, prog_name="borough")
def main() -> None:
    """Borough: a partitioned, replicated database and application server for trio programs."""


@main.command()
@click.option(
    "--listen", envvar="BOROUGH_LISTEN", default="127.0.0.1:7000", show_default=True, help="HOST:PORT to listen on"
)
@click.option("--join", envvar="BOROUGH_JOIN", default="", help="HOST:PORT,... of nodes of the cluster to join")
@click.option(
    "--data", "data_dir", envvar="BOROUGH_DATA", default="./borough-data", show_default=True, help="data directory"
)
@click.option(
    "--replicas", envvar="BOROUGH_REPLICAS", default=3, show_default=True, type=int, help="replicas per partition"
)
@click.option("--advertise", envvar="BOROUGH_ADVERTISE", default=None, help="HOST:PORT others reach this node at")
@click.option(
    "--fsync/--no-fsync",
    envvar="BOROUGH_FSYNC",
    default=True,
    show_default=True,
    help="sync Raft writes to disk before acknowledging (off loses acknowledged writes on power loss)",
)
@click.option("--log-level", envvar="BOROUGH_LOG_LEVEL", default="info", show_default=True)
def serve(
    listen: str, join: str, data_dir: str, replicas: int, advertise: str | None, fsync: bool, log_level: str
) -> None:
    """Run one node until SIGINT or SIGTERM."""
    _configure_logging(log_level)
    settings: dict[str, Any] = {
        "listen": listen,
        "join": join,
        "data_dir": data_dir,
        "replicas": replicas,
        "fsync": fsync,
    }
    if advertise:
        settings["advertise"] = advertise

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            node = await nursery.start(_serve_node, settings)
            click.echo(
                f"borough node {node.node_id} serving at {node.address} (cluster {node.cluster_id}, data {data_dir})",
                err=True,
            )
            nursery.start_soon(_until_signalled, nursery)

    _run(run)


async def _serve_node(settings: dict[str, Any], task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    await borough.serve(task_status=task_status, **settings)


@main.command()
@click.option("--nodes", default=3, show_default=True, type=int, help="how many nodes")
@click.option("--port", default=7000, show_default=True, type=int, help="first port (one per node)")
@click.option("--data", "data_dir", default="./borough-dev", show_default=True, help="parent of the nodes' data dirs")
@click.option("--log-level", envvar="BOROUGH_LOG_LEVEL", default="warning", show_default=True)
def dev(nodes: int, port: int, data_dir: str, log_level: str) -> None:
    """Run a local cluster of NODES nodes in this process, for trying things out."""
    _configure_logging(log_level)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            first = f"127.0.0.1:{port}"
            for i in range(nodes):
                settings = {
                    "listen": f"127.0.0.1:{port + i}",
                    "data_dir": f"{data_dir}/node{i}",
                    "join": "" if i == 0 else first,
                }
                node = await nursery.start(_serve_node, settings)
                click.echo(f"node {i}: {node.node_id} at {node.address}", err=True)
            click.echo(f"cluster of {nodes} running; connect with borough.open_client(['{first}']). Ctrl-C stops.")
            nursery.start_soon(_until_signalled, nursery)

    _run(run)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _run(fn: Any) -> None:
    """Run ``fn`` under trio; Borough's own errors (a refused data dir, a bad setting) end the command with
    their message instead of a traceback."""
    try:
        trio.run(fn)
    except BaseException as exc:
        leaves = _leaves(exc)
        if leaves and all(isinstance(e, BoroughError) for e in leaves):
            raise click.ClickException("; ".join(str(e) for e in leaves)) from None
        raise
