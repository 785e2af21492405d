"""The ``Request`` a handler receives: the partition it runs next to, the body, and a way to reach others.

This module owns only the user-facing shape. The handler runs on the leader of ``request.partition``, so that
partition's operations are local; ``other_partition(name)`` goes through the node's routed session like any
call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from borough.node.records import Limits
from borough.partition import Partition, PartitionBackend, check_partition_name

__all__ = ["Handler", "Request", "is_transactional", "non_transactional"]

_F = TypeVar("_F", bound=Callable[..., Any])


def non_transactional(handler: _F) -> _F:
    """Mark a handler to run as plain code instead of a transaction (see docs/transactions.md): its
    ``request.partition`` writes apply one by one as it makes them, other partitions' writes at once, runs of
    one partition interleave, and a request cut off midway may run again. Its reply is still recorded, so a
    retry of a run that finished returns it. For handlers that need none of a transaction: a long streaming
    read, say, which would otherwise hold its partition's turn and be validated."""
    handler.__borough_transactional__ = False  # type: ignore[attr-defined]
    return handler


def is_transactional(handler: object) -> bool:
    """Whether ``handler`` runs as a transaction (the default; see ``non_transactional``)."""
    return getattr(handler, "__borough_transactional__", True) is not False


class RunningNode(Protocol):
    """What a handler may use of the node it runs on (``borough.Node`` is one)."""

    def whoami(self) -> str: ...

    def partition(self, name: str) -> Partition: ...

    async def request(self, partition: str, body: Any) -> Any: ...


class Request:
    """One request, as the handler on the partition's leader sees it. Unless the handler is marked
    ``non_transactional``, each run is a serializable transaction on ``partition``: its writes are buffered and
    commit atomically with the reply, exactly once, when it returns (see docs/transactions.md).

    - ``partition``: the partition the request names; this node leads it, so its operations are local.
    - ``body``: what the caller sent (any CBOR value). If the caller attached streams, ``body["streams"]``
      maps their names to ``trio.abc.ReceiveStream``s; read them before the handler returns.
    - ``other_partition(name)``: any other partition, wherever it lives.
    - ``node``: the node running the handler.
    """

    __slots__ = ("_others", "body", "node", "partition")

    def __init__(
        self, node: RunningNode, partition: Partition, body: Any, others: Callable[[str], Partition] | None = None
    ) -> None:
        self.node = node
        self.partition = partition
        self.body = body
        self._others = others

    @classmethod
    def make(
        cls,
        node: RunningNode,
        name: str,
        local: PartitionBackend,
        held: PartitionBackend | None,
        body: Any,
        limits: Limits,
    ) -> Request:
        """The request a node hands its handler: ``request.partition`` through ``local``, other partitions'
        writes through ``held`` (None: straight to them)."""
        others = None if held is None else (lambda other: Partition(held, other, limits))
        return cls(node, Partition(local, name, limits), body, others)

    def other_partition(self, name: str) -> Partition:
        """Partition ``name``. In a transactional handler its reads go to it directly (they do not see this
        handler's held writes), and its writes are held until the handler's transaction commits, then applied
        exactly once (after the commit, not atomically with it); a handler that raises or is run again leaves
        none of them behind."""
        name = check_partition_name(name)
        return self.node.partition(name) if self._others is None else self._others(name)

    def __repr__(self) -> str:
        return f"<Request for {self.partition.name!r}>"


#: What ``open_node(handler=...)`` takes: an async function of a Request returning the reply (any CBOR value;
#: a dict may carry ``"streams": {"name": async iterable of bytes or trio ReceiveStream}``).
Handler = Callable[[Request], Awaitable[Any]]
