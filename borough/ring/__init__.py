"""Placement and membership: the hash ring, SWIM failure detection and the placement planner.

Modules (one concept each; all sans-IO except the trio driver):

- ``members``: the member table records (``Member``, ``MemberState``, ``MemberTable``) and their CBOR form.
- ``hashring``: ``HashRing``, the replica set of a partition as a pure function of (member table, name).
- ``messages``: SWIM messages and their validating codec.
- ``membership``: ``Swim``, the sans-IO failure detector; ``suspicion``, ``awareness`` and ``broadcasts`` are
  its parts (Lifeguard suspicion timers, local health, the piggyback queue).
- ``membership_driver``: ``open_membership``, the trio loop that runs a ``Swim`` over the transport.
- ``placement``: ``next_step``, the next safe configuration change of one partition's Raft group.
"""

from borough.ring.hashring import DEFAULT_REPLICAS as DEFAULT_REPLICAS
from borough.ring.hashring import DEFAULT_VNODES as DEFAULT_VNODES
from borough.ring.hashring import HashRing as HashRing
from borough.ring.hashring import stable_hash as stable_hash
from borough.ring.members import Member as Member
from borough.ring.members import MemberState as MemberState
from borough.ring.members import MemberTable as MemberTable
from borough.ring.membership import DETECTION_BOUND as DETECTION_BOUND
from borough.ring.membership import MemberEvent as MemberEvent
from borough.ring.membership import MemberView as MemberView
from borough.ring.membership import Outgoing as Outgoing
from borough.ring.membership import Swim as Swim
from borough.ring.membership import SwimConfig as SwimConfig
from borough.ring.membership import SwimEvent as SwimEvent
from borough.ring.membership import TableVersionEvent as TableVersionEvent
from borough.ring.membership_driver import MembershipDriver as MembershipDriver
from borough.ring.membership_driver import SendFn as SendFn
from borough.ring.membership_driver import open_membership as open_membership
from borough.ring.messages import Liveness as Liveness
from borough.ring.messages import decode_message as decode_message
from borough.ring.messages import encode_message as encode_message
from borough.ring.placement import AddLearner as AddLearner
from borough.ring.placement import Nothing as Nothing
from borough.ring.placement import PromoteVoter as PromoteVoter
from borough.ring.placement import RemoveNode as RemoveNode
from borough.ring.placement import ReplicaProgress as ReplicaProgress
from borough.ring.placement import Step as Step
from borough.ring.placement import TransferLeader as TransferLeader
from borough.ring.placement import has_live_quorum as has_live_quorum
from borough.ring.placement import next_step as next_step

__all__ = [
    "DEFAULT_REPLICAS",
    "DEFAULT_VNODES",
    "DETECTION_BOUND",
    "AddLearner",
    "HashRing",
    "Liveness",
    "Member",
    "MemberEvent",
    "MemberState",
    "MemberTable",
    "MemberView",
    "MembershipDriver",
    "Nothing",
    "Outgoing",
    "PromoteVoter",
    "RemoveNode",
    "ReplicaProgress",
    "SendFn",
    "Step",
    "Swim",
    "SwimConfig",
    "SwimEvent",
    "TableVersionEvent",
    "TransferLeader",
    "decode_message",
    "encode_message",
    "has_live_quorum",
    "next_step",
    "open_membership",
    "stable_hash",
]
