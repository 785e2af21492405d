"""Raft, one group per partition: a sans-IO core (no trio, sockets, clocks or plyvel) and its records.

The driver of a replica uses ``RawNode`` (see ``borough.raft.rawnode`` for the persist -> send -> apply ->
advance contract), configured by ``RaftConfig`` over a ``LogStorage``; messages between replicas are the records
of ``borough.raft.messages``, put on the wire with ``encode_message`` / ``decode_message``.
"""

from borough.raft.confchange import ChangeType as ChangeType
from borough.raft.confchange import ConfChange as ConfChange
from borough.raft.confchange import ConfChangeSingle as ConfChangeSingle
from borough.raft.confchange import InvalidConfChange as InvalidConfChange
from borough.raft.confchange import Transition as Transition
from borough.raft.confchange import decode_conf_change as decode_conf_change
from borough.raft.config import RaftConfig as RaftConfig
from borough.raft.errors import ConfChangeInProgress as ConfChangeInProgress
from borough.raft.errors import LeadershipTransferInProgress as LeadershipTransferInProgress
from borough.raft.memory_storage import MemoryLogStorage as MemoryLogStorage
from borough.raft.messages import Message as Message
from borough.raft.messages import decode_message as decode_message
from borough.raft.messages import encode_message as encode_message
from borough.raft.progress import ProgressState as ProgressState
from borough.raft.rawnode import PeerStatus as PeerStatus
from borough.raft.rawnode import RawNode as RawNode
from borough.raft.rawnode import Ready as Ready
from borough.raft.rawnode import SoftState as SoftState
from borough.raft.rawnode import Status as Status
from borough.raft.readonly import ReadState as ReadState
from borough.raft.records import ConfState as ConfState
from borough.raft.records import Entry as Entry
from borough.raft.records import EntryKind as EntryKind
from borough.raft.records import HardState as HardState
from borough.raft.records import NodeId as NodeId
from borough.raft.records import SnapshotMeta as SnapshotMeta
from borough.raft.role import Role as Role
from borough.raft.storage import LogCompacted as LogCompacted
from borough.raft.storage import LogStorage as LogStorage
from borough.raft.storage import LogUnavailable as LogUnavailable

__all__ = [
    "ChangeType",
    "ConfChange",
    "ConfChangeInProgress",
    "ConfChangeSingle",
    "ConfState",
    "Entry",
    "EntryKind",
    "HardState",
    "InvalidConfChange",
    "LeadershipTransferInProgress",
    "LogCompacted",
    "LogStorage",
    "LogUnavailable",
    "MemoryLogStorage",
    "Message",
    "NodeId",
    "PeerStatus",
    "ProgressState",
    "RaftConfig",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "Transition",
    "decode_conf_change",
    "decode_message",
    "encode_message",
]
