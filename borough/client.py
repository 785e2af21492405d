"""``borough.open_client``: the node API (``request``, ``partition``) from a process that is not a member.

This module owns a client's wiring: a transport that never listens, a directory seeded with the addresses it
was given, and the same routed session a node uses (``borough.node.session``), so a client reaches each
partition's leader directly (after the first call, from its leader cache) with the same retries and deadlines.
It loads neither the Raft core nor LevelDB.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from borough.config import parse_address
from borough.errors import ConfigError
from borough.node.directory import Directory
from borough.node.records import Limits, MemberStatus
from borough.node.session import Session
from borough.partition import Partition, check_partition_name
from borough.ring.members import MemberTable
from borough.wire.network import Network
from borough.wire.security import open_network
from borough.wire.transport import Identity, Transport, open_transport

__all__ = ["Client", "open_client"]


class Client:
    """Talks to a cluster it is not a member of. Made by ``open_client``."""

    def __init__(
        self, transport: Transport, seeds: list[str], *, request_timeout: float, rng: random.Random, limits: Limits
    ) -> None:
        self.transport = transport
        self.directory = Directory(system_call=lambda op: self.session.system(op), seeds=seeds)
        self.session = Session(
            directory=self.directory, call=transport.call, limits=limits, request_timeout=request_timeout, rng=rng
        )

    def partition(self, name: str) -> Partition:
        return Partition(self.session, check_partition_name(name), self.session.limits)

    async def request(self, partition: str, body: Any) -> Any:
        return await self.session.request(check_partition_name(partition), body)

    async def members(self) -> MemberTable:
        return await self.session.members()

    async def member_status(self) -> list[MemberStatus]:
        """Every member with its state and the replicas and leaderships it holds (None for a member that did
        not answer in time)."""
        return await self.session.member_status()

    async def partitions(self) -> list[str]:
        """Every partition the cluster has, in name order."""
        return await self.session.partitions()

    async def decommission(self, node_id: str) -> None:
        """Drain member ``node_id`` (its partitions move to the other members) and remove it; see
        ``Node.decommission``."""
        await self.session.decommission(node_id)


@asynccontextmanager
async def open_client(
    addresses: Iterable[str] | str,
    *,
    network: Network | None = None,
    certs_dir: str | None = None,
    request_timeout: float = 10.0,
    seed: int | None = None,
    max_key_bytes: int = 64 * 1024,
    max_value_bytes: int = 1024 * 1024,
) -> AsyncIterator[Client]:
    """Connect to the cluster that the nodes at ``addresses`` (``"host:port"`` strings) belong to.

    ``certs_dir`` (default: the ``BOROUGH_CERTS_DIR`` environment variable) turns on mutual TLS with ``ca.crt``,
    ``client.crt`` and ``client.key`` from it (see ``borough certs create-client``); the cluster's nodes must run
    with certificates of the same CA."""
    if certs_dir is None:
        certs_dir = os.environ.get("BOROUGH_CERTS_DIR") or None
    seeds = [a.strip() for a in addresses.split(",")] if isinstance(addresses, str) else [str(a) for a in addresses]
    seeds = [a for a in seeds if a]
    if not seeds:
        raise ConfigError("open_client needs at least one node address (host:port)")
    for address in seeds:
        parse_address(address, setting="open_client address")
    rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
    limits = Limits(max_key_bytes=max_key_bytes, max_value_bytes=max_value_bytes)
    async with open_transport(
        open_network(role="client", certs_dir=certs_dir, inner=network),
        identity=Identity(node_id=None),
        rng=random.Random(rng.getrandbits(64)),
    ) as transport:
        yield Client(transport, seeds, request_timeout=request_timeout, rng=rng, limits=limits)
