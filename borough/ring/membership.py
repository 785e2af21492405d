"""SWIM failure detection as a sans-IO state machine: messages and time in, messages and events out.

This module owns the protocol logic of one node's failure detector (SWIM with Lifeguard's refinements, in the
shape of hashicorp/memberlist's ``state.go``): probing a member each probe interval round-robin, ping-req
through ``k`` others when a direct ping goes unanswered, suspicion with incarnation numbers that the suspect
refutes, dead after a suspicion timeout that shrinks with independent confirmations (``suspicion.py``), local
health awareness (``awareness.py``), and piggybacked dissemination of liveness updates (``broadcasts.py``)
and of the member-table version. It must not know about sockets, trio, clocks or randomness sources: ``now``
comes in as an argument, randomness from the injected ``random.Random``, and every output is a returned
``Outgoing`` (address + message) or a drained event. Message shapes live in ``messages.py``.

The member *table* (who is in the cluster) is not ours: the node layer keeps it in ``_system`` and hands it
over with ``set_table``; SWIM only says who is alive, suspect or dead, and spreads the table version.

Departures from memberlist, all for recovery after a partition without a join protocol:
- Members we doubt (SUSPECT or DEAD) stay in the table and get a *reconnect ping* every
  ``reconnect_interval``, round robin. Every message to a member we doubt carries our claim about it, and a
  doubted member that talks to us gets the claim back at once, so it learns it must refute (a higher
  incarnation) as soon as it can reach us.
- Every message carries its sender's incarnation, which counts as the sender's own alive claim.
- A failed probe accuses the incarnation it probed and is void if the target spoke to us meanwhile, so a
  probe sent into a partition that heals does not accuse a member that has just come back.
- Anti-entropy (``Sync``, memberlist's push-pull) runs every ``sync_interval`` with one random member: whole
  views are merged (a DEAD there is a SUSPECT here), which repairs news older than the gossip budget.

Detection bound with the defaults (measured in tests/ring): a crashed member is declared dead by every live
member of a cluster of up to 20 within ``DETECTION_BOUND`` = 6 s (typically 3-4 s, worst measured 4.9 s).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import attrs

from borough.errors import ConfigError
from borough.ids import NodeId
from borough.ring.awareness import Awareness
from borough.ring.broadcasts import BroadcastQueue
from borough.ring.members import MemberTable
from borough.ring.messages import (
    MAX_SYNC_UPDATES,
    Ack,
    Gossip,
    Liveness,
    Nack,
    Ping,
    PingReq,
    SwimMessage,
    Sync,
    Update,
)
from borough.ring.suspicion import Suspicion, expected_confirmations, suspicion_timeouts

__all__ = [
    "DETECTION_BOUND",
    "MemberEvent",
    "MemberView",
    "Outgoing",
    "Swim",
    "SwimConfig",
    "SwimEvent",
    "TableVersionEvent",
]

# Seconds from a crash until every live member has declared it DEAD, with the default SwimConfig, for clusters
# of up to 20 members. Measured over 100 seeds per size in tests/ring/swimsim.py (1-10 ms latency), worst
# (median): 3 members 3.5 s (2.8), 5: 3.9 s (2.8), 10: 4.5 s (2.9), 20: 4.9 s (3.5). The time goes to: the
# first failed probe (0.5-2 s, a round robin across 19 probers), then the minimum suspicion timeout
# (4 * log10(20) * 0.5 s = 2.6 s, reached once two more members confirm), then dissemination (< 0.5 s).
# The other side of the trade: a member behind a link losing 10% (or 20%) of its messages was never declared
# dead in 20 runs of 10 minutes each at 3, 5 and 8 members; a lone accuser waits 6x the minimum.
DETECTION_BOUND = 6.0

# Relayed probes in flight at once (each lives one probe timeout); PingReqs beyond this are ignored, so a
# flood of them cannot grow our state without bound.
_MAX_RELAYS = 1024
_MAX_INCARNATION = 2**63 - 1


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"SwimConfig.{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class SwimConfig:
    """Failure-detector settings. Times are in seconds of whatever clock the driver feeds in."""

    probe_interval: float = attrs.field(default=0.5, validator=_positive)  # one probe per interval
    probe_timeout: float = attrs.field(default=0.2, validator=_positive)  # direct ack wait, then ping-req
    indirect_checks: int = attrs.field(default=3, validator=_positive)  # k members asked to ping-req
    suspicion_mult: int = attrs.field(default=4, validator=_positive)  # min suspicion = mult*log10(n)*interval
    suspicion_max_mult: float = attrs.field(default=6.0, validator=_positive)  # a lone accuser waits this x min
    retransmit_mult: int = attrs.field(default=4, validator=_positive)  # each update sent mult*log10(n+1) times
    max_piggyback: int = attrs.field(default=8, validator=_positive)  # updates per message
    gossip_interval: float = attrs.field(default=0.2, validator=_positive)  # spread news this often...
    gossip_nodes: int = attrs.field(default=3, validator=_positive)  # ...to this many random members
    reconnect_interval: float = attrs.field(default=1.0, validator=_positive)  # ping one doubted member this often
    sync_interval: float = attrs.field(default=5.0, validator=_positive)  # push-pull whole views this often
    awareness_max_multiplier: int = attrs.field(default=8, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError(
                f"SwimConfig.probe_timeout ({self.probe_timeout}) must be shorter than probe_interval "
                f"({self.probe_interval}): the indirect probes need the rest of the interval"
            )
        if self.suspicion_max_mult < 1:
            raise ConfigError(f"SwimConfig.suspicion_max_mult must be >= 1, got {self.suspicion_max_mult}")
        if self.max_piggyback > 64:
            raise ConfigError(f"SwimConfig.max_piggyback must be at most 64, got {self.max_piggyback}")


@attrs.frozen(kw_only=True, slots=True)
class Outgoing:
    """A message for the driver to send (without blocking; dropping is fine, SWIM tolerates loss)."""

    address: str
    message: SwimMessage


@attrs.frozen(kw_only=True, slots=True)
class MemberEvent:
    """A member's liveness changed (to ALIVE, SUSPECT or DEAD) at ``incarnation``."""

    node_id: NodeId
    liveness: Liveness
    incarnation: int


@attrs.frozen(kw_only=True, slots=True)
class TableVersionEvent:
    """A member table newer than any we knew of exists (``source`` told us): refresh the table from
    ``_system`` and call ``set_table``. Emitted once per newer version, however many peers mention it."""

    version: int
    source: NodeId


SwimEvent = MemberEvent | TableVersionEvent


@attrs.frozen(kw_only=True, slots=True)
class MemberView:
    """What this node currently believes about one member. ``since`` is when that belief last changed (None
    if it has not changed since the member was added)."""

    node_id: NodeId
    address: str
    liveness: Liveness
    incarnation: int
    since: float | None


@attrs.define
class _Member:
    node_id: NodeId
    address: str
    liveness: Liveness = Liveness.ALIVE
    incarnation: int = 0
    since: float | None = None
    accuser: NodeId | None = None


@attrs.define
class _Probe:
    seq: int
    target: NodeId
    incarnation: int  # the target's incarnation when the probe began: a failure accuses only that one
    direct_deadline: float
    end: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    heard_from_target: bool = False


@attrs.define
class _Relay:
    requester_address: str
    requester_seq: int
    deadline: float


class Swim:
    """One node's SWIM failure detector. Drive it with ``tick(now)`` at or after ``next_deadline()`` and
    ``receive(now, from_address, message)`` for every inbound SWIM message; send what both return and drain
    ``drain_events()``. Replies go to ``from_address``, so it must be the sender's listen address."""

    def __init__(
        self,
        self_id: NodeId,
        self_address: str,
        *,
        rng: random.Random,
        config: SwimConfig | None = None,
        incarnation: int = 0,
        table: MemberTable | None = None,
    ) -> None:
        self.self_id = self_id
        self.self_address = self_address
        self.config = config if config is not None else SwimConfig()
        self.incarnation = incarnation
        self._rng = rng
        self._members: dict[NodeId, _Member] = {}
        self._table_version = 0
        self._seen_version = 0
        self._awareness = Awareness(max_multiplier=self.config.awareness_max_multiplier)
        self._suspicions: dict[NodeId, Suspicion] = {}
        self._broadcasts = BroadcastQueue(retransmit_mult=self.config.retransmit_mult)
        self._events: list[SwimEvent] = []
        self._relays: dict[int, _Relay] = {}
        self._probe: _Probe | None = None
        self._probe_order: list[NodeId] = []
        self._probe_pos = 0
        self._reconnect_pos = rng.randrange(1 << 30)
        self._seq = 0
        self._started = False
        self._next_probe_at = 0.0
        self._next_gossip_at = 0.0
        self._next_reconnect_at = 0.0
        self._next_sync_at = 0.0
        if table is not None:
            self.set_table(table)

    # -- the member table (driven by the node layer) -------------------------------------------------------
    def set_table(self, table: MemberTable) -> None:
        """Adopt a member table: probe exactly its members (but ourselves), at its version."""
        wanted = {m.node_id: m.address for m in table.members if m.node_id != self.self_id}
        for node_id in list(self._members):
            if node_id not in wanted:
                self.remove_member(node_id)
        for node_id, address in wanted.items():
            self.add_member(node_id, address)
        self._table_version = table.version
        self._seen_version = max(self._seen_version, table.version)

    def add_member(self, node_id: NodeId, address: str) -> None:
        """Start probing a member (believed ALIVE at incarnation 0 until told otherwise); updates its address
        if it is already known."""
        if node_id == self.self_id:
            return
        known = self._members.get(node_id)
        if known is not None:
            known.address = address
            return
        self._members[node_id] = _Member(node_id=node_id, address=address)
        # Insert at a random place in the probe round so a new member is probed within one round.
        self._probe_order.insert(self._rng.randint(0, len(self._probe_order)), node_id)

    def remove_member(self, node_id: NodeId) -> None:
        """Stop probing a member and forget what we believed about it."""
        if self._members.pop(node_id, None) is None:
            return
        self._suspicions.pop(node_id, None)
        self._broadcasts.forget(node_id)
        idx = self._probe_order.index(node_id)
        del self._probe_order[idx]
        if idx < self._probe_pos:
            self._probe_pos -= 1
        if self._probe is not None and self._probe.target == node_id:
            self._probe = None

    @property
    def table_version(self) -> int:
        """The version of the member table this node runs on (the last one given to ``set_table``)."""
        return self._table_version

    @property
    def newest_table_version(self) -> int:
        """The newest member-table version known to exist: ours or one a peer mentioned. This is what we
        piggyback, so news of a table change spreads epidemically even before the nodes refresh their table."""
        return self._seen_version

    # -- what we believe ------------------------------------------------------------------------------------
    def view(self) -> Mapping[NodeId, MemberView]:
        """Current liveness of every member, ourselves included (always ALIVE)."""
        out = {
            m.node_id: MemberView(
                node_id=m.node_id, address=m.address, liveness=m.liveness, incarnation=m.incarnation, since=m.since
            )
            for m in self._members.values()
        }
        out[self.self_id] = MemberView(
            node_id=self.self_id,
            address=self.self_address,
            liveness=Liveness.ALIVE,
            incarnation=self.incarnation,
            since=None,
        )
        return out

    def liveness(self, node_id: NodeId) -> Liveness | None:
        if node_id == self.self_id:
            return Liveness.ALIVE
        m = self._members.get(node_id)
        return None if m is None else m.liveness

    def members_in(self, *states: Liveness) -> set[NodeId]:
        """Node ids (ourselves included when ALIVE is asked for) whose liveness is one of ``states``."""
        found = {m.node_id for m in self._members.values() if m.liveness in states}
        if Liveness.ALIVE in states:
            found.add(self.self_id)
        return found

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy; higher stretches our probe timing."""
        return self._awareness.score

    def drain_events(self) -> list[SwimEvent]:
        events, self._events = self._events, []
        return events

    # -- time ------------------------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        """The time ``tick`` next has work to do (``-inf`` before the first tick, ``inf`` if never)."""
        if not self._started:
            return -math.inf
        times = [self._next_probe_at]
        p = self._probe
        if p is not None:
            times.append(p.end)
            if not p.indirect_sent:
                times.append(p.direct_deadline)
        times.append(self._next_sync_at)
        times += [r.deadline for r in self._relays.values()]
        times += [s.deadline() for s in self._suspicions.values()]
        if self._broadcasts:
            times.append(self._next_gossip_at)
        if any(m.liveness is not Liveness.ALIVE for m in self._members.values()):
            times.append(self._next_reconnect_at)
        return min(times)

    def tick(self, now: float) -> list[Outgoing]:
        """Run every timer due at ``now``: suspicion timeouts, relay timeouts, probe steps, gossip, reconnects."""
        out: list[Outgoing] = []
        cfg = self.config
        if not self._started:
            self._started = True
            # Stagger the first probe so nodes started together do not probe in lockstep.
            self._next_probe_at = now + self._rng.uniform(0, cfg.probe_interval)
            self._next_gossip_at = now + self._rng.uniform(0, cfg.gossip_interval)
            self._next_reconnect_at = now + cfg.reconnect_interval
            self._next_sync_at = now + self._rng.uniform(0, cfg.sync_interval)
        for node_id, s in list(self._suspicions.items()):
            if s.deadline() <= now:
                m = self._members[node_id]
                self._on_dead(node_id, m.incarnation, self.self_id, now)
        for seq, relay in list(self._relays.items()):
            if relay.deadline <= now:
                del self._relays[seq]
                out.append(Outgoing(address=relay.requester_address, message=self._nack(relay.requester_seq)))
        p = self._probe
        if p is not None and not p.indirect_sent and now >= p.direct_deadline:
            out += self._send_ping_reqs(p)
        if p is not None and now >= p.end:
            self._probe = None
            self._probe_failed(p, now)
        if now >= self._next_probe_at:
            self._next_probe_at = now + self._awareness.scale(cfg.probe_interval)
            out += self._start_probe(now)
        if now >= self._next_gossip_at:
            self._next_gossip_at = now + cfg.gossip_interval
            out += self._gossip()
        if now >= self._next_reconnect_at:
            self._next_reconnect_at = now + cfg.reconnect_interval
            out += self._reconnect()
        if now >= self._next_sync_at:
            self._next_sync_at = now + cfg.sync_interval
            out += self._sync()
        return out

    # -- inbound ---------------------------------------------------------------------------------------------
    def receive(self, now: float, from_address: str, msg: SwimMessage) -> list[Outgoing]:
        """Handle one inbound message (already decoded and validated); returns the replies to send."""
        out: list[Outgoing] = []
        if msg.table_version > self._seen_version:
            self._seen_version = msg.table_version
            self._events.append(TableVersionEvent(version=msg.table_version, source=msg.source))
        if msg.source != self.self_id:
            self._on_alive(msg.source, msg.source_incarnation, now)
        if self._probe is not None and msg.source == self._probe.target:
            self._probe.heard_from_target = True
        if isinstance(msg, Sync):
            for u in msg.updates:
                self._merge(u, msg.source, now)
        else:
            for u in msg.updates:
                self._apply(u, now)
        if isinstance(msg, Ping):
            if msg.target == self.self_id:
                out.append(Outgoing(address=from_address, message=self._ack(msg.seq, msg.source)))
        elif isinstance(msg, PingReq):
            if msg.target != self.self_id and len(self._relays) < _MAX_RELAYS:
                seq = self._next_seq()
                self._relays[seq] = _Relay(
                    requester_address=from_address, requester_seq=msg.seq, deadline=now + self.config.probe_timeout
                )
                out.append(Outgoing(address=msg.target_address, message=self._ping(seq, msg.target)))
        elif isinstance(msg, Ack):
            p = self._probe
            if p is not None and msg.seq == p.seq:
                self._probe = None
                self._awareness.apply(-1)
            else:
                relay = self._relays.pop(msg.seq, None)
                if relay is not None:
                    out.append(Outgoing(address=relay.requester_address, message=self._ack(relay.requester_seq, None)))
        elif isinstance(msg, Nack):
            p = self._probe
            if p is not None and msg.seq == p.seq:
                p.nacks += 1
        elif isinstance(msg, Sync) and not msg.reply:
            out.append(Outgoing(address=from_address, message=self._sync_message(reply=True)))
        if not isinstance(msg, Ping):
            # A member we doubt is talking to us without outbidding our claim: tell it, so it refutes now
            # rather than when our next probe reaches it. (A Ping already gets an Ack carrying the claim.)
            claim = self._claim_about(msg.source)
            if claim is not None:
                reply = Gossip(
                    source=self.self_id,
                    source_incarnation=self.incarnation,
                    table_version=self._seen_version,
                    updates=self._piggyback(claim),
                )
                out.append(Outgoing(address=from_address, message=reply))
        return out

    # -- probing ---------------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 2**63
        return self._seq

    def _start_probe(self, now: float) -> list[Outgoing]:
        target = self._next_probe_target()
        if target is None:
            return []
        cfg = self.config
        seq = self._next_seq()
        self._probe = _Probe(
            seq=seq,
            target=target.node_id,
            incarnation=target.incarnation,
            direct_deadline=now + self._awareness.scale(cfg.probe_timeout),
            end=self._next_probe_at,
        )
        return [Outgoing(address=target.address, message=self._ping(seq, target.node_id))]

    def _next_probe_target(self) -> _Member | None:
        """Round robin over a shuffled list of the members we do not believe DEAD (SWIM §4.3); reshuffled
        after each full round, so every member is probed once per round."""
        order = self._probe_order
        for _ in range(len(order) + 1):
            if self._probe_pos >= len(order):
                self._rng.shuffle(order)
                self._probe_pos = 0
                if not order:
                    return None
            m = self._members[order[self._probe_pos]]
            self._probe_pos += 1
            if m.liveness is not Liveness.DEAD:
                return m
        return None

    def _send_ping_reqs(self, p: _Probe) -> list[Outgoing]:
        p.indirect_sent = True
        target = self._members.get(p.target)
        if target is None:
            return []
        helpers = [m for m in self._members.values() if m.liveness is Liveness.ALIVE and m.node_id != p.target]
        chosen = self._rng.sample(helpers, min(self.config.indirect_checks, len(helpers)))
        p.expected_nacks = len(chosen)
        out = []
        for h in chosen:
            msg = PingReq(
                seq=p.seq,
                source=self.self_id,
                source_incarnation=self.incarnation,
                table_version=self._seen_version,
                updates=self._piggyback(),
                target=p.target,
                target_address=target.address,
            )
            out.append(Outgoing(address=h.address, message=msg))
        return out

    def _probe_failed(self, p: _Probe, now: float) -> None:
        if p.heard_from_target:
            # No ack, but the target itself spoke to us during the probe: it is alive. This matters when a
            # partition heals in the middle of a probe that was sent into it (a stretched one, under high
            # local health score): without it the stale failure would accuse a member we just saw refute.
            return
        if p.expected_nacks > 0:
            self._awareness.apply(max(0, p.expected_nacks - p.nacks))
        else:
            self._awareness.apply(1)
        m = self._members.get(p.target)
        if m is not None and m.liveness is not Liveness.DEAD:
            # Accuse the incarnation we probed: if the target refuted meanwhile (a higher incarnation reached
            # us through gossip), that refutation is newer than our silence and the stale accusation is ignored.
            self._on_suspect(m.node_id, p.incarnation, self.self_id, now)

    def _reconnect(self) -> list[Outgoing]:
        """Ping one member we doubt (SUSPECT or DEAD), round robin from a random starting point so that
        members doubting the same nodes spread their pings. If it is reachable, our claim makes it refute:
        this is how members come back after a partition, however long, even when the gossip about them has
        been used up."""
        doubted = sorted(m.node_id for m in self._members.values() if m.liveness is not Liveness.ALIVE)
        if not doubted:
            return []
        m = self._members[doubted[self._reconnect_pos % len(doubted)]]
        self._reconnect_pos += 1
        return [Outgoing(address=m.address, message=self._ping(self._next_seq(), m.node_id))]

    def _sync(self) -> list[Outgoing]:
        """Push our whole view to one random member we believe alive; it answers with its own."""
        peers = [m for m in self._members.values() if m.liveness is Liveness.ALIVE]
        if not peers:
            return []
        m = self._rng.choice(peers)
        return [Outgoing(address=m.address, message=self._sync_message(reply=False))]

    def _sync_message(self, *, reply: bool) -> Sync:
        view = [Update(node_id=self.self_id, incarnation=self.incarnation, liveness=Liveness.ALIVE)]
        others = list(self._members.values())
        if len(others) >= MAX_SYNC_UPDATES:
            others = self._rng.sample(others, MAX_SYNC_UPDATES - 1)
        view += [
            Update(node_id=m.node_id, incarnation=m.incarnation, liveness=m.liveness, accuser=m.accuser) for m in others
        ]
        return Sync(
            source=self.self_id,
            source_incarnation=self.incarnation,
            table_version=self._seen_version,
            updates=tuple(view),
            reply=reply,
        )

    def _gossip(self) -> list[Outgoing]:
        if not self._broadcasts:
            return []
        peers = [m for m in self._members.values() if m.liveness is not Liveness.DEAD]
        out = []
        for m in self._rng.sample(peers, min(self.config.gossip_nodes, len(peers))):
            updates = self._piggyback(self._claim_about(m.node_id))
            if not updates:
                break
            msg = Gossip(
                source=self.self_id,
                source_incarnation=self.incarnation,
                table_version=self._seen_version,
                updates=updates,
            )
            out.append(Outgoing(address=m.address, message=msg))
        return out

    # -- building messages -----------------------------------------------------------------------------------
    def _claim_about(self, recipient: NodeId | None) -> Update | None:
        """What we believe about the recipient of a message, if we doubt it: every message to a member we think
        SUSPECT or DEAD carries that claim first, so a member that was cut off learns it must refute."""
        m = None if recipient is None else self._members.get(recipient)
        if m is None or m.liveness is Liveness.ALIVE:
            return None
        return Update(node_id=m.node_id, incarnation=m.incarnation, liveness=m.liveness, accuser=m.accuser)

    def _ping(self, seq: int, target: NodeId) -> Ping:
        return Ping(
            seq=seq,
            source=self.self_id,
            source_incarnation=self.incarnation,
            table_version=self._seen_version,
            updates=self._piggyback(self._claim_about(target)),
            target=target,
        )

    def _ack(self, seq: int, to: NodeId | None) -> Ack:
        return Ack(
            seq=seq,
            source=self.self_id,
            source_incarnation=self.incarnation,
            table_version=self._seen_version,
            updates=self._piggyback(self._claim_about(to)),
        )

    def _nack(self, seq: int) -> Nack:
        return Nack(
            seq=seq,
            source=self.self_id,
            source_incarnation=self.incarnation,
            table_version=self._seen_version,
            updates=self._piggyback(),
        )

    def _piggyback(self, first: Update | None = None) -> tuple[Update, ...]:
        return self._broadcasts.take(self.config.max_piggyback, len(self._members) + 1, first=first)

    def _broadcast(self, update: Update) -> None:
        self._broadcasts.push(update)

    # -- the incarnation rules (SWIM §4.2) ------------------------------------------------------------------
    def _apply(self, u: Update, now: float) -> None:
        if u.liveness is Liveness.ALIVE:
            self._on_alive(u.node_id, u.incarnation, now)
        elif u.liveness is Liveness.SUSPECT:
            self._on_suspect(u.node_id, u.incarnation, u.accuser or u.node_id, now)
        else:
            self._on_dead(u.node_id, u.incarnation, u.accuser or u.node_id, now)

    def _merge(self, u: Update, source: NodeId, now: float) -> None:
        """Merge one entry of a peer's whole view. As memberlist does, a DEAD there only makes the member
        SUSPECT here: a view can be old, so the member gets its chance to refute before we declare it dead
        ourselves. The peer counts as the accuser, so views from several peers confirm one another."""
        if u.liveness is Liveness.ALIVE:
            self._on_alive(u.node_id, u.incarnation, now)
        else:
            self._on_suspect(u.node_id, u.incarnation, source, now)

    def _refute(self, incarnation: int) -> None:
        """Someone believes we are suspect or dead at ``incarnation``: outbid it and say so to everyone."""
        if incarnation < self.incarnation:
            return  # a stale claim: our current incarnation already overrides it
        if incarnation >= _MAX_INCARNATION:
            return  # cannot be outbid within the wire's range; only a broken or hostile peer sends this
        self.incarnation = incarnation + 1
        self._awareness.apply(1)  # being suspected hints that we are the slow one
        self._broadcast(Update(node_id=self.self_id, incarnation=self.incarnation, liveness=Liveness.ALIVE))

    def _set(self, m: _Member, liveness: Liveness, incarnation: int, now: float) -> None:
        changed = m.liveness is not liveness
        m.liveness = liveness
        m.incarnation = incarnation
        if changed:
            m.since = now
            self._events.append(MemberEvent(node_id=m.node_id, liveness=liveness, incarnation=incarnation))

    def _on_alive(self, node_id: NodeId, incarnation: int, now: float) -> None:
        if node_id == self.self_id:
            if incarnation > self.incarnation:  # a claim from before we restarted: outbid it
                self._refute(incarnation)
            return
        m = self._members.get(node_id)
        # Alive overrides suspect and dead only at a strictly higher incarnation: only the member itself
        # raises its incarnation, so that is proof it was alive after the accusation.
        if m is None or incarnation <= m.incarnation:
            return
        self._suspicions.pop(node_id, None)
        m.accuser = None
        self._set(m, Liveness.ALIVE, incarnation, now)
        self._broadcast(Update(node_id=node_id, incarnation=incarnation, liveness=Liveness.ALIVE))

    def _on_suspect(self, node_id: NodeId, incarnation: int, accuser: NodeId, now: float) -> None:
        if node_id == self.self_id:
            self._refute(incarnation)
            return
        m = self._members.get(node_id)
        if m is None or incarnation < m.incarnation:
            return
        if m.liveness is Liveness.DEAD and incarnation == m.incarnation:
            return  # dead wins over suspect at the same incarnation
        update = Update(node_id=node_id, incarnation=incarnation, liveness=Liveness.SUSPECT, accuser=accuser)
        s = self._suspicions.get(node_id)
        if m.liveness is Liveness.SUSPECT and s is not None:
            m.incarnation = incarnation
            if s.confirm(accuser):
                self._broadcast(update)  # spread the confirmation: it shortens everyone's timer
            return
        n = len(self._members) + 1
        low, high = suspicion_timeouts(
            cluster_size=n,
            probe_interval=self.config.probe_interval,
            mult=self.config.suspicion_mult,
            max_mult=self.config.suspicion_max_mult,
        )
        k = expected_confirmations(cluster_size=n, mult=self.config.suspicion_mult)
        self._suspicions[node_id] = Suspicion(started=now, min_timeout=low, max_timeout=high, k=k, accusers={accuser})
        m.accuser = accuser
        self._set(m, Liveness.SUSPECT, incarnation, now)
        self._broadcast(update)

    def _on_dead(self, node_id: NodeId, incarnation: int, accuser: NodeId, now: float) -> None:
        if node_id == self.self_id:
            self._refute(incarnation)
            return
        m = self._members.get(node_id)
        if m is None or incarnation < m.incarnation:
            return
        if m.liveness is Liveness.DEAD:
            m.incarnation = incarnation
            return
        self._suspicions.pop(node_id, None)
        m.accuser = accuser
        self._set(m, Liveness.DEAD, incarnation, now)
        self._broadcast(Update(node_id=node_id, incarnation=incarnation, liveness=Liveness.DEAD, accuser=accuser))
