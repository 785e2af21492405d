"""Routing: run an operation on the leader of the partition it names, retrying until the deadline.

This module owns the retry loop every public call goes through, on members and on clients alike: a leader
cache per partition, the order in which candidate replicas are tried (cached leader, leader hints from
``NotLeader``, then the partition's replicas), exponential backoff with jitter between rounds, and the deadline
(the caller's cancel scope, bounded again by the default request timeout, which raises ``Timeout``). What may
be sent again is the op's to say (``Op.retry_safe``): reads, and writes that carry a session (the partition
applies those once, ``borough.node.session_table``), are retried after any failure until the deadline, so
"outcome unknown" is left only for a deadline that ran out; a request (a handler call) is retried only after
answers that prove it did not run. It does not know how a partition's replicas are found (a ``locate``
function says) nor how an operation is carried out on the node it picks (an ``execute`` function does).
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from borough.errors import BoroughError, NotDelivered, NotLeader, Timeout, Unavailable
from borough.node.protocol import FindLeader, Op

__all__ = ["AttemptExpired", "Router", "Target", "proves_not_run", "seconds_left"]

logger = logging.getLogger(__name__)

#: Leaders remembered (least recently used forgotten first).
LEADER_CACHE_SIZE = 65_536
BACKOFF_FIRST = 0.005
BACKOFF_MAX = 0.5
#: The longest backoff while the replicas answer but know no leader yet (a group being elected, such as a
#: partition created a moment ago): the wait is about one election, so a long backoff would only add to it.
BACKOFF_MAX_LEADERLESS = 0.05
#: How long one node may take to answer before routing tries the next replica (see ``Router._attempt``).
ATTEMPT_TIMEOUT = 2.0
#: More reads than this in flight from one router to one partition make it hot: its stale reads then start at a
#: random replica (spreading the load of a hot partition), not at its leader (fewest hops for a cool one).
#: Linearizable reads are not spread that way: a follower serves one only after asking the leader for the read
#: index (a message each way and a turn more on both nodes), so the read costs the cluster more than at the leader,
#: where it shares the ReadIndex round of every other read. Measured with bench/cluster.py (1 partition, 64
#: clients): spread over the replicas, about 195 us of server CPU and 98 us of client CPU per read; at the leader,
#: 105 us and 72 us. A member still starts a read at its own replica (no network hop to the leader at all).
SPREAD_WHEN_READING = 4


@attrs.frozen(slots=True)
class Target:
    """A node to try: its id (None when only the address is known) and its address."""

    node_id: str | None
    address: str


_ROUND_ERRORS: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "borough_round_errors", default=None
)

Locate = Callable[[str, bool], Awaitable[list[Target]]]
#: Carries out an op at a target: ``(target, partition, op, deadline) -> result``. It must give up once
#: ``deadline`` (trio time) passes, raising ``AttemptExpired`` (the router bounds each attempt this way rather
#: than with a cancel scope of its own, which would cost a call more than the rest of its Python on the caller).
Execute = Callable[[Target, str, Op, float], Awaitable[Any]]


class AttemptExpired(Exception):
    """An attempt's deadline passed before the target answered (raised by an ``Execute`` function)."""


def seconds_left(deadline: float = math.inf) -> float | None:
    """The time left before ``deadline`` or the caller's innermost deadline, whichever comes first, sent with a
    call to bound the work on the far side."""
    deadline = min(deadline, trio.current_effective_deadline())
    if deadline == math.inf:
        return None  # (-inf means cancelled: no time left)
    return max(0.0, deadline - trio.current_time())


class _Expired(Exception):
    """The request timeout of the ``Router.run`` that raised it passed (it raises ``Timeout``)."""


def proves_not_run(exc: BaseException) -> bool:
    """Whether ``exc`` proves the operation took no effect anywhere (see ``BoroughError.provably_not_run``)."""
    return isinstance(exc, BoroughError) and exc.provably_not_run


class Router:
    def __init__(
        self,
        *,
        locate: Locate,
        execute: Execute,
        request_timeout: float,
        rng: random.Random,
        me: Target | None = None,
    ) -> None:
        self._me = me  # this node (a member's router): reads try it first, they need no network hop there
        self._locate = locate
        self._execute = execute
        self._timeout = request_timeout
        self._rng = rng
        self._leaders: OrderedDict[str, Target] = OrderedDict()
        self._reading: dict[str, int] = {}  # spread reads in flight, by partition (entries leave at zero)
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

    async def run(self, partition: str, op: Op) -> Any:
        """Run ``op`` on ``partition``'s leader and return its result.

        ``op.creates`` lets the partition be registered if it does not exist yet (writes and requests do; reads
        do not). Answers that prove the operation did not take effect (``provably_not_run``: ``NotLeader``,
        ``Overloaded``, a call that never left this process) are retried until the deadline; any other failure
        (``Unavailable``, a ``Timeout`` of one attempt, a reset connection) is retried only when
        ``op.retry_safe``. An op that is not, cut off that way (a request, a write without a session), raises
        ``Unavailable`` (or ``Timeout``) saying its outcome is unknown. Raises ``Timeout`` when the default
        request timeout passes (for a write or request: saying its outcome is unknown); the caller's own cancel
        scope applies as well."""
        # The last error of each round, to explain a timeout; shared with the routed calls this one makes (the
        # directory's lookups), so a timeout while locating the partition still says what went wrong.
        seen = _ROUND_ERRORS.get()
        token = None
        if seen is None:
            seen = []
            token = _ROUND_ERRORS.set(seen)
        counted = op.spread and op.stale  # (only stale reads spread when hot: see SPREAD_WHEN_READING)
        if counted:
            self._reading[partition] = self._reading.get(partition, 0) + 1
        # No cancel scope around it all, nor around an attempt (each costs a call 6 to 9 us): every wait in
        # ``_run`` is bounded by ``deadline``, and each attempt by the ``Execute`` function (``AttemptExpired``),
        # which the wire bounds without a scope while the connection is up (``MuxConnection.call``).
        deadline = trio.current_time() + self._timeout
        try:
            return await self._run(partition, op, seen=seen, deadline=deadline)
        except _Expired:
            pass
        finally:
            if token is not None:
                _ROUND_ERRORS.reset(token)
            if counted:
                left = self._reading.pop(partition) - 1
                if left:
                    self._reading[partition] = left
        last = f" (last error: {seen[-1]})" if seen else ""
        unknown = "" if op.repeatable else "; the operation may or may not have taken effect"
        raise Timeout(
            f"no answer for partition {partition!r} within the request timeout of {self._timeout:g} s{last}; "
            f"the nodes may be unreachable or the partition may have lost its quorum{unknown}"
        )

    async def _run(self, partition: str, op: Op, *, seen: list[BaseException], deadline: float) -> Any:
        delay = BACKOFF_FIRST
        while True:
            last_error: BaseException | None = None
            tried: set[str] = set()
            queue: list[Target] = []
            cached = self._leaders.get(partition)
            located: list[Target] | None = None
            hot = op.spread and op.stale and self._reading.get(partition, 0) > SPREAD_WHEN_READING
            if op.spread and (hot or cached is None or self._me is not None):
                # A read any replica serves: start at this node's if it has one (no network hop); else at the
                # leader (a follower would ask the leader anyway: one more hop), and a stale read at a random
                # replica once the partition is hot, so a hot partition's stale reads spread over its replicas.
                # (A caller that is no member, reading a partition whose leader it knows, needs no lookup.)
                located = await self._spread_targets(partition, op, None if hot else cached, deadline)
                queue += located
            if cached is not None:
                queue.append(cached)
            while True:
                if not queue:
                    if located is not None:
                        break
                    # Only now ask where the partition lives: the cached leader usually answers first.
                    try:
                        located = await self._bounded_locate(partition, op.creates, deadline)
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
                    result = await self._attempt(target, partition, op, confirmed=target == cached, deadline=deadline)
                except (BoroughError, OSError) as exc:  # Timeout is an OSError (TimeoutError) too
                    if not proves_not_run(exc) and not isinstance(exc, (Unavailable, OSError)):
                        raise  # an answer (NotFound, RemoteError, a protocol error), not a failure to reach one
                    self._forget(partition, target)
                    if not proves_not_run(exc) and not op.retry_safe:
                        # The call may have reached the leader: the write or request may or may not have been
                        # applied, so it is not sent again behind the caller's back.
                        raise _ambiguous(partition, exc) from exc
                    last_error = exc
                    if isinstance(exc, NotLeader) and exc.leader_address and exc.leader_address not in tried:
                        queue.insert(0, Target(exc.leader, exc.leader_address))
                    continue
                if not op.spread:  # (a read may have been served by a follower)
                    self.learn_leader(partition, target)
                return result
            if last_error is None:
                last_error = Unavailable(f"no replica of partition {partition!r} is known yet")
            seen[:] = [last_error]
            self.retries += 1
            logger.debug("partition %r: no leader reached (%s); retrying in %.3f s", partition, last_error, delay)
            await trio.sleep_until(min(deadline, trio.current_time() + delay * (0.5 + self._rng.random())))
            if trio.current_time() >= deadline:
                raise _Expired
            electing = isinstance(last_error, NotLeader) and last_error.leader is None
            delay = min(BACKOFF_MAX_LEADERLESS if electing else BACKOFF_MAX, delay * 2)

    async def _bounded_locate(self, partition: str, create: bool, deadline: float) -> list[Target]:
        with trio.CancelScope(deadline=deadline):
            return await self._locate(partition, create)
        raise _Expired

    async def _spread_targets(self, partition: str, op: Op, leader: Target | None, deadline: float) -> list[Target]:
        try:
            targets = list(await self._bounded_locate(partition, op.creates, deadline))
        except Unavailable:
            return []
        self._rng.shuffle(targets)
        me = self._me

        def order(t: Target) -> tuple[bool, bool]:
            mine = me is not None and (t.node_id == me.node_id or t.address == me.address)
            return (not mine, leader is None or t.address != leader.address)

        targets.sort(key=order)
        return targets

    async def _attempt(self, target: Target, partition: str, op: Op, *, confirmed: bool, deadline: float) -> Any:
        """One try of ``op`` at ``target``. A node that does not answer (stopped, cut off, overwhelmed) must
        not take the caller's whole deadline while other replicas could answer: an op that may be sent again
        (``retry_safe``) is bounded by ``ATTEMPT_TIMEOUT``; one that may not (a request, a write without a
        session) goes only to a node known to lead (it answered as leader before), or to one that first answers
        a ``FindLeader`` probe within that bound, so the op itself is sent to an unresponsive node only when it
        led a moment ago. Each wait is bounded by ``deadline`` as well (``_Expired`` once it passed)."""
        if op.retry_safe and op.attempt_bounded:
            try:
                return await self._execute(target, partition, op, min(deadline, trio.current_time() + ATTEMPT_TIMEOUT))
            except AttemptExpired:
                pass
            if trio.current_time() >= deadline:
                raise _Expired
            if not op.repeatable:  # it may have been applied there: not "not delivered", but safe to resend
                raise Unavailable(f"{_who(target)} did not answer within {ATTEMPT_TIMEOUT:g} s; sending it again")
            raise NotDelivered(f"{_who(target)} did not answer within {ATTEMPT_TIMEOUT:g} s; trying elsewhere")
        if not confirmed:
            try:
                await self._execute(
                    target, partition, FindLeader(), min(deadline, trio.current_time() + ATTEMPT_TIMEOUT)
                )
            except (Unavailable, OSError) as exc:  # the link failed: the op itself was never sent
                raise NotDelivered(f"{_who(target)} could not be asked ({exc}); the operation was not sent") from exc
            except AttemptExpired:
                if trio.current_time() >= deadline:
                    raise _Expired from None
                raise NotDelivered(
                    f"{_who(target)} did not answer within {ATTEMPT_TIMEOUT:g} s; the operation was not sent there"
                ) from None
        try:
            return await self._execute(target, partition, op, deadline)
        except AttemptExpired:
            raise _Expired from None

    def _forget(self, partition: str, target: Target) -> None:
        if self._leaders.get(partition) == target:
            del self._leaders[partition]


def _who(target: Target) -> str:
    return f"node {target.node_id} at {target.address}" if target.node_id else f"the node at {target.address}"


def _ambiguous(partition: str, exc: BaseException) -> BaseException:
    if isinstance(exc, Timeout):
        return Timeout(f"{exc}; the operation on partition {partition!r} may or may not have taken effect")
    return Unavailable(
        f"the call for partition {partition!r} failed after it was sent ({exc}); it may or may not have taken "
        "effect: read before retrying"
    )
