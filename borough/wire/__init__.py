"""The wire: CBOR frames, multiplexed streams, peer links, over TCP or a simulated network.

What the node layer uses is re-exported here: ``open_transport`` and its records, the two networks, the
settings and the error registry. The modules stay importable for tests and tools (``codec`` is the sans-IO
core; ``mux`` the connection; ``simnet`` the simulator).
"""

from borough.wire.errors_codec import ErrorRegistry as ErrorRegistry
from borough.wire.errors_codec import default_registry as default_registry
from borough.wire.mux import MuxConnection as MuxConnection
from borough.wire.mux import open_mux as open_mux
from borough.wire.network import Network as Network
from borough.wire.network import TcpNetwork as TcpNetwork
from borough.wire.records import IncomingCall as IncomingCall
from borough.wire.records import PeerInfo as PeerInfo
from borough.wire.records import Reply as Reply
from borough.wire.records import StreamSource as StreamSource
from borough.wire.settings import WireSettings as WireSettings
from borough.wire.simnet import SimNetwork as SimNetwork
from borough.wire.streams import MuxStream as MuxStream
from borough.wire.transport import Identity as Identity
from borough.wire.transport import Transport as Transport
from borough.wire.transport import open_transport as open_transport

__all__ = [
    "ErrorRegistry",
    "Identity",
    "IncomingCall",
    "MuxConnection",
    "MuxStream",
    "Network",
    "PeerInfo",
    "Reply",
    "SimNetwork",
    "StreamSource",
    "TcpNetwork",
    "Transport",
    "WireSettings",
    "default_registry",
    "open_mux",
    "open_transport",
]
