"""The ``borough`` command line. Commands talk to nodes through the public API only.

``borough serve`` runs one node until SIGINT/SIGTERM; ``borough dev`` runs a local cluster in one process for
trying things out; ``borough certs create-ca|create-node|create-client`` makes the files of a certs dir for
mutual TLS (``borough.certs``); the client commands (``put``, ``get``, ``scan``, ``members``, ``status``, ...)
are in ``borough.cli_client``. Every flag has a ``BOROUGH_*`` environment variable. This is the one place that
configures logging output.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
import trio

import borough
from borough.cli_client import error_leaves
from borough.cli_client import register as register_client_commands
from borough.cli_settings import LOG_FORMATS, LOG_LEVELS, configure_logging, setting_options, settings_from
from borough.config import DEFAULT_DATA_DIR
from borough.errors import BoroughError
from borough.interpreter import slow_build

if TYPE_CHECKING:
    from borough.certs import CertFiles


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
@setting_options
@click.option(
    "--log-level", envvar="BOROUGH_LOG_LEVEL", default="info", show_default=True, show_envvar=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
)  # fmt: skip
@click.option(
    "--log-format", envvar="BOROUGH_LOG_FORMAT", default="text", show_default=True, show_envvar=True,
    type=click.Choice(LOG_FORMATS), help="text lines, or one JSON object per line (extra fields included in both)",
)  # fmt: skip
def serve(log_level: str, log_format: str, **values: Any) -> None:
    """Run one node until SIGINT or SIGTERM. Every setting is a flag and a BOROUGH_* variable (see
    docs/configuration.md)."""
    configure_logging(log_level, log_format)
    settings = settings_from(values)
    data_dir = settings.setdefault("data_dir", DEFAULT_DATA_DIR)
    certs_dir = settings.get("certs_dir")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            node = await nursery.start(_serve_node, settings)
            tls = f"TLS from {certs_dir}" if certs_dir else "no TLS"
            click.echo(
                f"borough node {node.node_id} serving at {node.address} "
                f"(cluster {node.cluster_id}, data {data_dir}, {tls})",
                err=True,
            )
            slow = slow_build()  # (once serving: a refusal to start stays one line)
            if slow is not None:
                logging.getLogger("borough.cli").info(slow)
            nursery.start_soon(_until_signalled, nursery)

    _run(run)


async def _serve_node(settings: dict[str, Any], task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    await borough.serve(task_status=task_status, **settings)


@main.command()
@click.option("--nodes", envvar="BOROUGH_DEV_NODES", show_envvar=True, default=3, show_default=True, type=int,
              help="how many nodes")  # fmt: skip
@click.option("--port", envvar="BOROUGH_DEV_PORT", show_envvar=True, default=7000, show_default=True, type=int,
              help="first port (one per node)")  # fmt: skip
@click.option("--data", "data_dir", envvar="BOROUGH_DEV_DATA", show_envvar=True, default="./borough-dev",
              show_default=True, help="parent of the nodes' data dirs")  # fmt: skip
@click.option("--tls", envvar="BOROUGH_DEV_TLS", show_envvar=True, is_flag=True, default=False,
              help="mutual TLS with a throw-away CA made in DATA/certs")  # fmt: skip
@click.option(
    "--log-level", envvar="BOROUGH_LOG_LEVEL", default="warning", show_default=True, show_envvar=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
)  # fmt: skip
def dev(nodes: int, port: int, data_dir: str, tls: bool, log_level: str) -> None:
    """Run a local cluster of NODES nodes in this process, for trying things out."""
    configure_logging(log_level)
    certs_dir = _dev_certs(os.path.join(data_dir, "certs")) if tls else None

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            first = f"127.0.0.1:{port}"
            for i in range(nodes):
                settings = {
                    "listen": f"127.0.0.1:{port + i}",
                    "data_dir": f"{data_dir}/node{i}",
                    "join": "" if i == 0 else first,
                    "certs_dir": certs_dir,
                }
                node = await nursery.start(_serve_node, settings)
                click.echo(f"node {i}: {node.node_id} at {node.address}", err=True)
            how = f"['{first}'], certs_dir='{certs_dir}'" if certs_dir else f"['{first}']"
            click.echo(f"cluster of {nodes} running; connect with borough.open_client({how}). Ctrl-C stops.")
            nursery.start_soon(_until_signalled, nursery)

    _run(run)


def _dev_certs(certs_dir: str) -> str:
    """A throw-away CA with node and client certificates for 127.0.0.1 (made once, then reused)."""
    from borough import certs

    try:
        if not os.path.exists(os.path.join(certs_dir, "ca.crt")):
            certs.create_ca(certs_dir)
        if not os.path.exists(os.path.join(certs_dir, "node.crt")):
            certs.create_node(certs_dir, ["127.0.0.1", "localhost", "::1"])
        if not os.path.exists(os.path.join(certs_dir, "client.crt")):
            certs.create_client(certs_dir, "dev")
    except BoroughError as exc:
        raise click.ClickException(str(exc)) from None
    return certs_dir


@main.group(name="certs")
def certs_group() -> None:
    """Make certificates for mutual TLS (a CA, node and client certificates)."""


_CERTS_DIR = click.option(
    "--certs-dir", envvar="BOROUGH_CERTS_DIR", required=True, help="directory of ca.crt and the certificates made"
)
_CA_KEY = click.option("--ca-key", default=None, help="the CA's private key [default: CERTS_DIR/ca.key]")
_OVERWRITE = click.option("--overwrite", is_flag=True, default=False, help="replace files that already exist")


@certs_group.command("create-ca")
@_CERTS_DIR
@_CA_KEY
@_OVERWRITE
def create_ca(certs_dir: str, ca_key: str | None, overwrite: bool) -> None:
    """Write ca.crt (give it to every node and client) and ca.key (keep it off the nodes if you can)."""
    from borough import certs

    files = _certs_call(lambda: certs.create_ca(certs_dir, ca_key=ca_key, overwrite=overwrite))
    click.echo(f"wrote {files.cert} and {files.key}")


@certs_group.command("create-node")
@_CERTS_DIR
@_CA_KEY
@_OVERWRITE
@click.argument("hosts", nargs=-1, required=True)
def create_node(certs_dir: str, ca_key: str | None, overwrite: bool, hosts: tuple[str, ...]) -> None:
    """Write node.crt and node.key, valid for every HOST (IP or DNS name) nodes and clients dial this node at."""
    from borough import certs

    files = _certs_call(lambda: certs.create_node(certs_dir, hosts, ca_key=ca_key, overwrite=overwrite))
    click.echo(f"wrote {files.cert} and {files.key} for {', '.join(hosts)}")


@certs_group.command("create-client")
@_CERTS_DIR
@_CA_KEY
@_OVERWRITE
@click.argument("name")
def create_client(certs_dir: str, ca_key: str | None, overwrite: bool, name: str) -> None:
    """Write client.crt and client.key for the client NAME."""
    from borough import certs

    files = _certs_call(lambda: certs.create_client(certs_dir, name, ca_key=ca_key, overwrite=overwrite))
    click.echo(f"wrote {files.cert} and {files.key} for client {name}")


def _certs_call(make: Callable[[], CertFiles]) -> CertFiles:
    try:
        return make()
    except (BoroughError, OSError) as exc:  # OSError: a path that cannot be written (permissions, a file in the way)
        raise click.ClickException(str(exc)) from None


def _run(fn: Any) -> None:
    """Run ``fn`` under trio; Borough's own errors (a refused data dir, a bad setting) end the command with
    their message instead of a traceback."""
    try:
        trio.run(fn)
    except BaseException as exc:
        leaves = error_leaves(exc)
        if leaves and all(isinstance(e, BoroughError) for e in leaves):
            raise click.ClickException("; ".join(str(e) for e in leaves)) from None
        raise


register_client_commands(main)
