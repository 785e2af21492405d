"""The ``Request`` a handler receives: the partition it runs next to, the body, and a way to reach others.

This module owns only the user-facing shape. The handler runs on the leader of ``request.partition``, so that
partition's operations are local; ``other_partition(name)`` goes through the node's routed session like any
call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from borough.partition import Partition, check_partition_name

__all__ = ["Handler", "Request"]


class RunningNode(Protocol):
    """What a handler may use of the node it runs on (``borough.Node`` is one)."""

    def whoami(self) -> str: ...

    def partition(self, name: str) -> Partition: ...

    async def request(self, partition: str, body: Any) -> Any: ...


class Request:
    """One request, as the handler on the partition's leader sees it.

    - ``partition``: the partition the request names; this node leads it, so its operations are local.
    - ``body``: what the caller sent (any CBOR value). If the caller attached streams, ``body["streams"]``
      maps their names to ``trio.abc.ReceiveStream``s; read them before the handler returns.
    - ``other_partition(name)``: any other partition, wherever it lives.
    - ``node``: the node running the handler.
    """

    __slots__ = ("body", "node", "partition")

    def __init__(self, node: RunningNode, partition: Partition, body: Any) -> None:
        self.node = node
        self.partition = partition
        self.body = body

    def other_partition(self, name: str) -> Partition:
        return self.node.partition(check_partition_name(name))

    def __repr__(self) -> str:
        return f"<Request for {self.partition.name!r}>"


#: What ``open_node(handler=...)`` takes: an async function of a Request returning the reply (any CBOR value;
#: a dict may carry ``"streams": {"name": async iterable of bytes or trio ReceiveStream}``).
Handler = Callable[[Request], Awaitable[Any]]
