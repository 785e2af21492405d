"""``borough.open_client``: the node API (``request``, ``partition``) from a process that is not a member.

This module owns a client's wiring: a transport that never listens, a directory seeded with the addresses it
was given, and the same router and routed backend a node uses, so a client reaches each partition's leader
directly (after the first call, from its leader cache) with the same retries and deadlines.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from borough.calls import Op, RoutedBackend, encode_call, join_streams
from borough.config import parse_address
from borough.directory import Directory
from borough.errors import ConfigError
from borough.partition import Partition, check_partition_name
from borough.ring.members import MemberTable
from borough.routing import Router, Target
from borough.system import SYSTEM
from borough.wire.network import Network, TcpNetwork
from borough.wire.transport import Identity, Transport, open_transport

__all__ = ["Client", "open_client"]


class Client:
    """Talks to a cluster it is not a member of. Made by ``open_client``."""

    def __init__(
        self,
        transport: Transport,
        seeds: list[str],
        *,
        request_timeout: float,
        rng: random.Random,
        max_key_bytes: int,
        max_value_bytes: int,
    ) -> None:
        self.transport = transport
        self.directory = Directory(system_call=self._system_call, seeds=seeds)
        self.router = Router(
            locate=self.directory.locate, execute=self._execute, request_timeout=request_timeout, rng=rng
        )
        self.backend = RoutedBackend(self.router)
        self._limits = {"max_key_bytes": max_key_bytes, "max_value_bytes": max_value_bytes}

    def partition(self, name: str) -> Partition:
        return Partition(self.backend, check_partition_name(name), **self._limits)

    async def request(self, partition: str, body: Any) -> Any:
        return await self.backend.request(check_partition_name(partition), body)

    async def members(self) -> MemberTable:
        return await self.directory.refresh_members()

    async def _system_call(self, name: str, args: list[Any]) -> Any:
        return await self.router.run(SYSTEM, Op(name, args), create=False)

    async def _execute(self, target: Target, partition: str, op: Op) -> Any:
        reply = await self.transport.call(target.address, encode_call(partition, op), streams=op.streams)
        if reply.streams:
            return join_streams(reply.body, reply.streams)
        return reply.body


@asynccontextmanager
async def open_client(
    addresses: Iterable[str] | str,
    *,
    network: Network | None = None,
    request_timeout: float = 10.0,
    seed: int | None = None,
    max_key_bytes: int = 64 * 1024,
    max_value_bytes: int = 1024 * 1024,
) -> AsyncIterator[Client]:
    """Connect to the cluster that the nodes at ``addresses`` (``"host:port"`` strings) belong to."""
    seeds = [a.strip() for a in addresses.split(",")] if isinstance(addresses, str) else [str(a) for a in addresses]
    seeds = [a for a in seeds if a]
    if not seeds:
        raise ConfigError("open_client needs at least one node address (host:port)")
    for address in seeds:
        parse_address(address, setting="open_client address")
    rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
    async with open_transport(
        network or TcpNetwork(),
        identity=Identity(node_id=None),
        rng=random.Random(rng.getrandbits(64)),
    ) as transport:
        yield Client(
            transport,
            seeds,
            request_timeout=request_timeout,
            rng=rng,
            max_key_bytes=max_key_bytes,
            max_value_bytes=max_value_bytes,
        )
