"""This node's place in its cluster: bootstrap a new one, join one, resume after a restart, announce itself.

This module owns the cluster id of a node and the steps that give it one: a node with an empty data dir and
nobody to join bootstraps a cluster (a random id, ``_system`` with itself as sole voter); one given ``join``
asks the cluster to add it to the member table (a ``_system`` proposal, routed to any node it was given); a
restarted node resumes every replica in its data dir and announces itself again (ACTIVE, at its current
address), as does a node that finds itself declared DEAD. It knows nothing of how ops run or replicas tick.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import trio

from borough.config import NodeConfig
from borough.errors import BoroughError, ConfigError, Unavailable
from borough.node.directory import Directory
from borough.node.protocol import Join
from borough.node.records import JoinResult
from borough.node.registry import Replicas
from borough.node.session import Session
from borough.node.system_state import SYSTEM
from borough.store.base import Store

__all__ = ["Cluster", "new_id"]

logger = logging.getLogger(__name__)

ANNOUNCE_RETRY = 1.0


def new_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


class Cluster:
    def __init__(
        self,
        *,
        node_id: str,
        address: str,
        cluster_id: str | None,
        config: NodeConfig,
        store: Store,
        replicas: Replicas,
        session: Session,
        directory: Directory,
        set_transport_cluster: Callable[[str], None],
        nursery: trio.Nursery,
        rng: random.Random,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.cluster_id = cluster_id
        self._config = config
        self._store = store
        self._replicas = replicas
        self._session = session
        self._directory = directory
        self._set_transport_cluster = set_transport_cluster
        self._nursery = nursery
        self._rng = rng
        self._reannouncing = False
        #: Set once this node was decommissioned (or left): it never announces itself again.
        self.left = False

    def _adopt(self, cluster_id: str) -> None:
        self._store.init_node_meta(self.node_id, cluster_id)
        self.cluster_id = cluster_id
        self._set_transport_cluster(cluster_id)

    async def start(self) -> None:
        """Resume from the data dir, or join the cluster given, or bootstrap a new one."""
        if self.cluster_id is not None:
            self._replicas.resume()
            if self._config.join:
                await self._check_join_cluster()
            self.reannounce()
        elif self._config.join:
            await self.join()
        elif self._config.bootstrap:
            await self._bootstrap()

    async def _bootstrap(self) -> None:
        self._adopt(new_id(self._rng))
        replica = await self._replicas.bootstrap(SYSTEM, [self.node_id])
        replica.campaign()
        await self.announce()
        logger.info("node %s bootstrapped cluster %s at %s", self.node_id, self.cluster_id, self.address)

    async def announce(self) -> JoinResult:
        """Add (or update) this node in the member table; returns the table and the cluster's id."""
        result: JoinResult = await self._session.system(Join(self.node_id, self.address))
        self._directory.set_members(result.members)
        return result

    async def join(self, address: str | None = None) -> None:
        """Join the cluster of the node at ``address`` (or of the nodes this node was configured with)."""
        if self.cluster_id is not None:
            raise ConfigError(
                f"node {self.node_id} already belongs to cluster {self.cluster_id}; "
                "to move it to another cluster, start it on an empty data dir"
            )
        if address is not None:
            self._directory.add_seed(address)
        if not self._directory.seeds:
            raise ConfigError("joining a cluster needs the address of one of its nodes (join=[...])")
        # The id first, durably: if this node stops after its join commits but before it hears so, it joins again
        # as the same member on restart instead of leaving one behind that never answers (and that the ring would
        # place replicas on until it was declared dead).
        self._store.init_node_meta(self.node_id, None)
        result = await self.announce()
        if result.cluster_id is None:
            raise Unavailable("the cluster did not say its id; retry the join")
        self._adopt(result.cluster_id)
        logger.info("node %s joined cluster %s at %s", self.node_id, self.cluster_id, self.address)

    async def _check_join_cluster(self) -> None:
        """A restarted node told to join: make sure the nodes it was given belong to its own cluster."""
        try:
            with trio.move_on_after(self._config.request_timeout):
                await self.announce()
        except ConfigError as exc:
            raise ConfigError(
                f"the data dir of node {self.node_id} belongs to cluster {self.cluster_id}, but the nodes at "
                f"{', '.join(self._config.join)} refused it ({exc}); start this node with another data dir "
                "(or remove this one) to join that cluster"
            ) from None
        except BoroughError as exc:
            logger.info("node %s could not announce itself yet: %s", self.node_id, exc)

    def decommissioned(self) -> None:
        """The member table says this node is LEAVING: it is being drained and will not announce itself again."""
        if not self.left:
            logger.warning("node %s is being decommissioned: its partitions move to the other members", self.node_id)
            self.left = True

    def reannounce(self, *, declared_dead: bool = False) -> None:
        """Make sure the member table has this node, ACTIVE, at its current address (after a restart, or after
        being declared dead while cut off), retrying in the background until it does. At most one at a time."""
        if self._reannouncing or self.left:
            return
        if declared_dead:
            logger.warning("node %s finds itself marked DEAD in the member table; announcing itself", self.node_id)
        self._reannouncing = True
        self._nursery.start_soon(self._reannounce)

    async def _reannounce(self) -> None:
        try:
            while True:
                try:
                    await self.announce()
                    return
                except ConfigError as exc:
                    logger.error("node %s was refused by its cluster: %s", self.node_id, exc)
                    return
                except (BoroughError, OSError) as exc:
                    logger.info("node %s could not announce itself yet: %s", self.node_id, exc)
                    await trio.sleep(ANNOUNCE_RETRY)
        finally:
            self._reannouncing = False
