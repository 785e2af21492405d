"""A replica's inbox (``borough.node.inbox``): what asks for a turn, and the order the core is fed in."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from borough.node.inbox import Inbox
from borough.raft.messages import AppendResponse, HeartbeatResponse, Message
from borough.raft.records import NodeId
from borough.raft.role import Role

pytestmark = pytest.mark.trio

L, F2, F3 = NodeId("1"), NodeId("2"), NodeId("3")


@attrs.define
class FakeRaw:
    role: Role = Role.LEADER
    calls: list[str] = attrs.Factory(list)

    def tick(self) -> None:
        self.calls.append("tick")

    def elapse(self, ticks: int) -> None:
        self.calls.append(f"elapse {ticks}")

    def step(self, message: Message) -> None:
        self.calls.append(f"step {type(message).__name__} from {message.frm}")


async def test_a_message_that_may_wait_asks_for_no_turn_and_goes_first_at_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wakes: list[None] = []
    inbox = Inbox("p", lambda: wakes.append(None))
    inbox.deliver(AppendResponse(frm=F3, to=L, term=1, index=5), urgent=False)
    assert wakes == [] and not inbox.pending  # (the second acknowledgement of a committed entry)
    inbox.tick()
    inbox.deliver(HeartbeatResponse(frm=F2, to=L, term=1))
    assert len(wakes) == 1 and inbox.pending
    raw = FakeRaw()
    inbox.feed(raw, lambda message: None)  # type: ignore[arg-type]
    # The waiting one first: a tick that judges whether the group may go quiet sees that follower's progress.
    assert raw.calls == ["step AppendResponse from 3", "tick", "step HeartbeatResponse from 2"]
    raw.calls.clear()
    inbox.feed(raw, lambda message: None)  # type: ignore[arg-type]
    assert raw.calls == []  # (each is fed once)


async def test_messages_that_may_wait_count_against_the_inbox_bound(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import borough.node.inbox as inbox_module

    monkeypatch.setattr(inbox_module, "INBOX_LIMIT", 3)
    inbox = Inbox("p", lambda: None)
    for i in range(5):
        inbox.deliver(AppendResponse(frm=F3, to=L, term=1, index=i), urgent=i % 2 == 0)
    assert inbox.dropped == 2
    raw = FakeRaw()
    inbox.feed(raw, lambda message: None)  # type: ignore[arg-type]
    assert len(raw.calls) == 3


async def test_past_a_few_messages_that_may_wait_each_asks_for_a_turn(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that sends such messages without end gets them stepped, not piled up until the inbox is full."""
    import borough.node.inbox as inbox_module

    monkeypatch.setattr(inbox_module, "WAITING_LIMIT", 2)
    wakes: list[None] = []
    inbox = Inbox("p", lambda: wakes.append(None))
    for i in range(3):
        inbox.deliver(AppendResponse(frm=F3, to=L, term=1, index=i), urgent=False)
    assert len(wakes) == 1 and inbox.pending
    raw = FakeRaw()
    inbox.feed(raw, lambda message: None)  # type: ignore[arg-type]
    assert raw.calls == ["step AppendResponse from 3"] * 3
