"""The ``borough`` command line. Commands talk to nodes through the public API only."""

from __future__ import annotations

import click

import borough


@click.group()
@click.version_option(borough.__version__, prog_name="borough")
def main() -> None:
    """Borough: a partitioned, replicated database and application server for trio programs."""
