"""Routing: run an operation on the leader of the partition it names, retrying until the deadline.

This module owns the retry loop every public call goes through, on members and on clients alike: a leader
cache per partition, the order in which candidate replicas are tried (cached leader, leader hints from
``NotLeader``, then the partition's replicas), exponential backoff with jitter between rounds, and the deadline
(the caller's cancel scope, bounded again by the default request timeout, which raises ``Timeout``). It does
not know how a partition's replicas are found (a ``locate`` function says) nor how an operation is carried out
on the node it picks (an ``execute`` function does).
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from borough.errors import NotLeader, Overloaded, Timeout, Unavailable
from borough.wire.mux import NotDelivered

__all__ = ["Router", "Target"]

logger = logging.getLogger(__name__)

#: Leaders remembered (least recently used forgotten first).
LEADER_CACHE_SIZE = 65_536
BACKOFF_FIRST = 0.005
BACKOFF_MAX = 0.5


@attrs.frozen(slots=True)
class Target:
    """A node to try: its id (None when only the address is known) and its address."""

    node_id: str | None
    address: str


Locate = Callable[[str, bool], Awaitable[list[Target]]]
Execute = Callable[[Target, str, Any], Awaitable[Any]]


class Router:
    def __init__(
        self,
        *,
        locate: Locate,
        execute: Execute,
        request_timeout: float,
        rng: random.Random,
    ) -> None:
        self._locate = locate
        self._execute = execute
        self._timeout = request_timeout
        self._rng = rng
        self._leaders: OrderedDict[str, Target] = OrderedDict()
        self.retries = 0

    def leader_of(self, partition: str) -> Target | None:
        return self._leaders.get(partition)

    def learn_leader(self, partition: str, target: Target | None) -> None:
        if target is None:
            self._leaders.pop(partition, None)
            return
        self._leaders[partition] = target
        self._leaders.move_to_end(partition)
        if len(self._leaders) > LEADER_CACHE_SIZE:
            self._leaders.popitem(last=False)

    async def run(self, partition: str, op: Any, *, create: bool, retry: bool = True) -> Any:
        """Run ``op`` on ``partition``'s leader and return its result.

        ``create`` lets the partition be registered if it does not exist yet (writes and requests do; reads
        do not). Answers that prove the operation did not take effect (``NotLeader``, ``Overloaded``, a call
        that never left this process) are retried until the deadline; a failure after the call was sent is
        retried only for repeatable operations (reads), and ``retry=False`` makes every operation behave as a
        write here. A write or request cut off that way raises ``Unavailable`` (or ``Timeout``) saying its
        outcome is unknown. Raises ``Timeout`` when the default request timeout passes; the caller's own
        cancel scope applies as well."""
        seen: list[BaseException] = []  # the last error of each round, to explain a timeout
        with trio.move_on_after(self._timeout) as scope:
            return await self._run(partition, op, create=create, retry=retry, seen=seen)
        assert scope.cancelled_caught
        last = f" (last error: {seen[-1]})" if seen else ""
        raise Timeout(
            f"no answer for partition {partition!r} within the request timeout of {self._timeout:g} s{last}; "
            "the nodes may be unreachable or the partition may have lost its quorum"
        )

    async def _run(self, partition: str, op: Any, *, create: bool, retry: bool, seen: list[BaseException]) -> Any:
        delay = BACKOFF_FIRST
        while True:
            last_error: BaseException | None = None
            tried: set[str] = set()
            queue: list[Target] = []
            cached = self._leaders.get(partition)
            if cached is not None:
                queue.append(cached)
            located: list[Target] | None = None
            while True:
                if not queue:
                    if located is not None:
                        break
                    # Only now ask where the partition lives: the cached leader usually answers first.
                    try:
                        located = await self._locate(partition, create)
                    except Unavailable as exc:
                        located = []
                        last_error = exc
                    queue = [t for t in located if t.address not in tried]
                    continue
                target = queue.pop(0)
                if target.address in tried:
                    continue
                tried.add(target.address)
                try:
                    result = await self._execute(target, partition, op)
                except (NotLeader, Overloaded, NotDelivered) as exc:
                    # Answers that prove the operation did not take effect (NotLeader and Overloaded are raised
                    # before anything is proposed, or once the proposal is provably lost; NotDelivered never
                    # left this process): trying again, elsewhere or later, is always safe.
                    last_error = exc
                    self._forget(partition, target)
                    if isinstance(exc, NotLeader) and exc.leader_address and exc.leader_address not in tried:
                        queue.insert(0, Target(exc.leader, exc.leader_address))
                    continue
                except (Unavailable, OSError) as exc:  # Timeout is an OSError (TimeoutError) too
                    # The call may have reached the leader: a write or request may or may not have been applied,
                    # so only a repeatable operation is tried again.
                    self._forget(partition, target)
                    if not retry or not getattr(op, "repeatable", True):
                        raise _ambiguous(partition, exc) from exc
                    last_error = exc
                    continue
                self.learn_leader(partition, target)
                return result
            if last_error is None:
                last_error = Unavailable(f"no replica of partition {partition!r} is known yet")
            seen[:] = [last_error]
            self.retries += 1
            logger.debug("partition %r: no leader reached (%s); retrying in %.3f s", partition, last_error, delay)
            await trio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(BACKOFF_MAX, delay * 2)

    def _forget(self, partition: str, target: Target) -> None:
        if self._leaders.get(partition) == target:
            del self._leaders[partition]


def _ambiguous(partition: str, exc: BaseException) -> BaseException:
    if isinstance(exc, Timeout):
        return Timeout(f"{exc}; the operation on partition {partition!r} may or may not have taken effect")
    return Unavailable(
        f"the call for partition {partition!r} failed after it was sent ({exc}); it may or may not have taken "
        "effect: read before retrying"
    )
