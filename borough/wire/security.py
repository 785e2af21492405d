"""Which network a process gets: mutual TLS from a certs dir, or plain TCP where that is safe or asked for.

Owns the rule "a node listening on a non-loopback address without certificates refuses to start unless told
``insecure``" (CockroachDB's ``--insecure``: without TLS anyone who can reach the port can take over the
cluster). Knows nothing of nodes beyond their listen address; ``tls`` does the TLS itself.
"""

from __future__ import annotations

import ipaddress

from borough.errors import ConfigError
from borough.wire.network import Network, TcpNetwork, parse_address
from borough.wire.records import PeerRole
from borough.wire.tls import TlsNetwork, load_contexts

__all__ = ["is_loopback", "open_network"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1); any other name or address, including
    the empty host (every interface), is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_network(
    *,
    role: PeerRole,
    certs_dir: str | None,
    insecure: bool = False,
    listen: str | None = None,
    inner: Network | None = None,
    handshake_timeout: float = 5.0,
    max_handshaking: int = 128,
) -> Network:
    """The network for a node (``role="node"``, listening on ``listen``) or a client: TLS over ``inner`` (TCP by
    default) with the files of ``certs_dir``, or ``inner`` itself without one. Raises ``ConfigError`` for a node
    on a non-loopback TCP address with neither certificates nor ``insecure``, and for both at once. The rule is
    about real sockets: a node given its own ``inner`` network (the simulator) is not refused."""
    if certs_dir is not None and insecure:
        raise ConfigError("give either --certs-dir (mutual TLS) or --insecure (no TLS), not both")
    if certs_dir is not None:
        contexts = load_contexts(certs_dir, role)
        return TlsNetwork(
            inner or TcpNetwork(), contexts, handshake_timeout=handshake_timeout, max_handshaking=max_handshaking
        )
    if inner is not None:
        return inner
    if role == "node" and listen is not None and not insecure:
        host, _port = parse_address(listen)
        if not is_loopback(host):
            raise ConfigError(
                f"refusing to listen on {listen} without certificates (anyone who reaches it could take over the "
                "cluster): give --certs-dir DIR (see `borough certs`), or --insecure to run without TLS"
            )
    return TcpNetwork()
