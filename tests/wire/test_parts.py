"""Smaller parts: the export list, settings validation, address parsing, the error registry, handshakes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import borough.wire
from borough import errors
from borough.wire import codec as c
from borough.wire.errors_codec import ErrorRegistry, default_registry
from borough.wire.handshake import handshake, make_hello
from borough.wire.network import TcpNetwork, format_address, parse_address
from borough.wire.settings import WireSettings


def test_wire_exports() -> None:
    assert set(borough.wire.__all__) == {
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
    }
    for name in borough.wire.__all__:
        assert getattr(borough.wire, name) is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0}, "window must be positive"),
        ({"data_frame_size": 9 * 1024 * 1024}, "data_frame_size"),
        ({"keepalive_interval": 5, "liveness_timeout": 5}, "liveness_timeout"),
        ({"backoff_jitter": 2}, "backoff_jitter"),
        ({"backoff_initial": 3, "backoff_max": 1}, "backoff_max"),
        ({"max_frame_size": 2**31}, "max_frame_size"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(errors.ConfigError, match=match):
        WireSettings(**kwargs)


def test_addresses() -> None:
    assert parse_address("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert format_address("::1", 80) == "[::1]:80"
    for bad in ["nohost", ":80", "h:port", "h:70000"]:
        with pytest.raises(ValueError, match="address"):
            parse_address(bad)


class AppError(errors.BoroughError):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class SubUnavailable(errors.Unavailable):
    pass


def test_error_registry_round_trips() -> None:
    reg = default_registry
    for exc in [
        errors.Timeout("slow"),
        errors.Unavailable("no quorum; retry"),
        errors.Overloaded("full"),
        errors.ConfigError("bad"),
        errors.StorageError("disk"),
        errors.RemoteError("KeyError", "'x'"),
    ]:
        back = reg.decode(reg.encode(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
    nf = reg.decode(reg.encode(errors.NotFound(b"k", partition="p")))
    assert isinstance(nf, errors.NotFound) and (nf.key, nf.partition) == (b"k", "p")
    nl = reg.decode(reg.encode(errors.NotLeader("p", leader="n2", leader_address="h:2")))
    assert isinstance(nl, errors.NotLeader) and (nl.leader, nl.leader_address) == ("n2", "h:2")
    sub = reg.decode(reg.encode(SubUnavailable("subclass")))
    assert type(sub) is errors.Unavailable and str(sub) == "subclass"
    other = reg.decode(reg.encode(ZeroDivisionError("division by zero")))
    assert isinstance(other, errors.RemoteError)
    assert (other.type_name, other.message) == ("ZeroDivisionError", "division by zero")
    weird = reg.decode(reg.encode(errors.NotFound(object(), partition="p")))  # unencodable key
    assert isinstance(weird, errors.RemoteError) and weird.type_name == "NotFound"
    assert isinstance(reg.decode({"type": "NoSuchType", "message": "m"}), errors.RemoteError)
    assert isinstance(reg.decode({"type": "NotLeader", "message": "m", "fields": "garbage"}), errors.NotLeader)


def test_error_registry_accepts_new_types() -> None:
    reg = ErrorRegistry()
    reg.register(
        AppError,
        fields=lambda e: {"code": e.code},  # type: ignore[attr-defined]
        build=lambda message, f: AppError(message, f["code"]),
    )
    back = reg.decode(reg.encode(AppError("teapot", 418)))
    assert isinstance(back, AppError) and back.code == 418 and str(back) == "teapot"


async def _handshake_pair(a_cluster: str | None, b_cluster: str | None, b_version: int = 1) -> list[Any]:
    settings = WireSettings()
    sa, sb = trio.testing.memory_stream_pair()
    ha = make_hello(settings, cluster_id=a_cluster, node_id="a", address="a:1")
    hb = c.Hello(
        version=b_version,
        min_version=b_version,
        cluster_id=b_cluster,
        node_id="b",
        address="b:1",
        window=settings.window,
        max_frame_size=settings.max_frame_size,
    )
    out: list[Any] = [None, None]

    async def side(i: int, stream: trio.abc.Stream, role: c.Role, hello: c.Hello) -> None:
        try:
            codec = await handshake(stream, role=role, local=hello, settings=settings)
            out[i] = codec.peer_hello
        except Exception as exc:
            out[i] = exc

    async with trio.open_nursery() as n:
        n.start_soon(side, 0, sa, c.Role.DIALER, ha)
        n.start_soon(side, 1, sb, c.Role.ACCEPTOR, hb)
    return out


async def test_handshake_outcomes() -> None:
    a, b = await _handshake_pair("c1", "c1")
    assert a.node_id == "b" and b.node_id == "a"
    a, b = await _handshake_pair(None, "c1")
    assert a.cluster_id == "c1" and b.cluster_id is None
    a, b = await _handshake_pair("c1", "c2")
    assert isinstance(a, errors.ConfigError) and isinstance(b, errors.ConfigError)
    a, b = await _handshake_pair("c1", "c1", b_version=9)
    assert isinstance(a, errors.RemoteProtocolError) and "versions" in str(a)
    assert isinstance(b, errors.RemoteProtocolError)


async def test_tcp_connect_refused_is_an_oserror() -> None:
    async def ignore(stream: trio.abc.Stream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as n:
        address = await n.start(TcpNetwork().serve, "127.0.0.1:0", ignore)
        n.cancel_scope.cancel()
    with pytest.raises(OSError):
        await TcpNetwork(connect_timeout=2).connect(address)
