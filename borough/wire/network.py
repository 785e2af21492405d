"""The ``Network`` interface (dial an address, serve an address) and its TCP implementation.

Owns address parsing (``host:port``, ``[v6]:port``), connect timeouts, and the accept loop that runs one handler
task per inbound connection and never lets a failing handler take the listener down. It knows nothing about
frames, handshakes or peers; the transport puts those on top. ``simnet.SimNetwork`` is the other implementation.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from borough.errors import ConfigError

__all__ = ["Handler", "Network", "TcpNetwork", "describe_stream", "format_address", "parse_address"]

log = logging.getLogger(__name__)

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


class Network(Protocol):
    """What the transport needs from a network. Both methods are cancellable."""

    async def connect(self, address: str) -> trio.abc.Stream:
        """A stream to whoever serves ``address``; raises ``OSError`` (``ConnectionRefusedError``,
        ``TimeoutError``, ...) when refused or unreachable within the network's connect timeout."""
        ...

    async def serve(
        self, address: str, handler: Handler, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``address``, call ``task_status.started(bound_address)`` once listening (the real port if
        port 0 was asked), then run ``handler(stream)`` in its own task per inbound connection until cancelled.
        The stream is closed after the handler returns; a handler's exception is logged, not propagated."""
        ...


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` to ``(host, port)``; ``ValueError`` saying what is wrong."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {address!r} is not of the form host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {address!r} has a port that is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address {address!r} has a port outside 0..65535")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_stream(stream: trio.abc.Stream) -> str:
    """The remote end of a stream for log lines: ``ip:port`` for TCP (under TLS too), the simulated address, or
    the type."""
    inner = getattr(stream, "transport_stream", None)  # tls_stream.TlsStream, trio.SSLStream
    if isinstance(inner, trio.abc.Stream):
        stream = inner
    sock = getattr(stream, "socket", None)
    if sock is not None:
        try:
            name = sock.getpeername()
            return format_address(str(name[0]), int(name[1]))
        except (OSError, IndexError, TypeError, ValueError):
            pass
    remote = getattr(stream, "remote_address", None)
    if isinstance(remote, str):
        return remote
    return type(stream).__name__


async def run_handler(handler: Handler, stream: trio.abc.Stream, close_timeout: float = 1.0) -> None:
    """Run one connection's handler; log (never propagate) its failure; always close the stream, bounded."""
    try:
        await handler(stream)
    except Exception:
        remote = describe_stream(stream)
        log.exception("the handler for a connection from %s failed", remote, extra={"peer": remote})
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(close_timeout):
            await trio.aclose_forcefully(stream)


class TcpNetwork:
    """Real TCP via ``trio.open_tcp_stream`` / ``trio.open_tcp_listeners``. ``TCP_NODELAY`` is on (trio's default)."""

    def __init__(self, *, connect_timeout: float = 5.0) -> None:
        self.connect_timeout = connect_timeout

    async def connect(self, address: str) -> trio.abc.Stream:
        host, port = parse_address(address)
        with trio.move_on_after(self.connect_timeout):
            return await trio.open_tcp_stream(host, port)
        raise TimeoutError(errno.ETIMEDOUT, f"connecting to {address} timed out after {self.connect_timeout} s")

    async def serve(
        self, address: str, handler: Handler, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        host, port = parse_address(address)
        try:
            listeners = await trio.open_tcp_listeners(port, host=host or None)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {address}: {exc.strerror or exc}; another process may be using that port "
                "(stop it, or give this node another --listen HOST:PORT)"
            ) from exc
        bound = listeners[0].socket.getsockname()
        bound_address = format_address(host or str(bound[0]), int(bound[1]))
        async with trio.open_nursery() as nursery:

            async def accepted(stream: trio.abc.Stream) -> None:
                await run_handler(handler, stream)

            task_status.started(bound_address)
            await trio.serve_listeners(accepted, listeners, handler_nursery=nursery)
