"""Borough: a partitioned, replicated, fault-tolerant database and application server for trio programs.

Public names are re-exported here and only here; everything else is private to the package.
"""

import logging as _logging

from borough.client import Client as Client
from borough.client import open_client as open_client
from borough.config import NodeConfig as NodeConfig
from borough.errors import BoroughError as BoroughError
from borough.errors import ConfigError as ConfigError
from borough.errors import Forbidden as Forbidden
from borough.errors import LocalProtocolError as LocalProtocolError
from borough.errors import NotFound as NotFound
from borough.errors import Overloaded as Overloaded
from borough.errors import ProtocolError as ProtocolError
from borough.errors import RemoteError as RemoteError
from borough.errors import RemoteProtocolError as RemoteProtocolError
from borough.errors import StorageError as StorageError
from borough.errors import Timeout as Timeout
from borough.errors import Unavailable as Unavailable
from borough.node.node import Node as Node
from borough.node.node import open_node as open_node
from borough.node.node import serve as serve
from borough.node.records import MemberStatus as MemberStatus
from borough.partition import Partition as Partition
from borough.partition import PartitionInfo as PartitionInfo
from borough.partition import ReplicaInfo as ReplicaInfo
from borough.request import Request as Request
from borough.request import non_transactional as non_transactional

__version__ = "0.1.0"

# Borough logs through the standard library and never configures output: the application (or the CLI) does.
_logging.getLogger("borough").addHandler(_logging.NullHandler())

__all__ = [
    "BoroughError",
    "Client",
    "MemberStatus",
    "Node",
    "NodeConfig",
    "Partition",
    "PartitionInfo",
    "ReplicaInfo",
    "Request",
    "open_client",
    "open_node",
    "serve",
    "non_transactional",
    "ConfigError",
    "Forbidden",
    "LocalProtocolError",
    "NotFound",
    "Overloaded",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "StorageError",
    "Timeout",
    "Unavailable",
]
