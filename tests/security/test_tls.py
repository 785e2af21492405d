"""Mutual TLS over real sockets on 127.0.0.1: who may connect, with which role, and the bounds on the handshake.

Each refusal is checked on both sides: the one refused gets an error that says what to do, and the node that
refused never sees a message, a call or a member-role connection from it."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from click.testing import CliRunner

import borough
from borough.cli import main
from borough.errors import BoroughError, ConfigError, Unavailable
from borough.wire.network import Network, TcpNetwork, parse_address
from borough.wire.records import IncomingCall, PeerInfo
from borough.wire.security import is_loopback, open_network
from borough.wire.settings import WireSettings
from borough.wire.tls import TlsContexts, TlsNetwork, load_contexts, make_contexts
from borough.wire.transport import Identity, Transport, open_transport

from .conftest import Dirs

pytestmark = pytest.mark.e2e

SETTINGS = WireSettings(connect_timeout=5.0)
#: Fast Raft timing, so a three-node cluster forms in well under a second of real time.
FAST: dict[str, Any] = {"tick_interval": 0.02, "election_ticks": 10, "data_dir": None}


class Seen:
    """What a TLS node's transport was handed: every call and message, with the peer it came from."""

    def __init__(self) -> None:
        self.calls: list[PeerInfo] = []
        self.messages: list[PeerInfo] = []

    async def on_call(self, peer: PeerInfo, call: IncomingCall) -> Any:
        self.calls.append(peer)
        return {"peer": str(peer), "role": peer.role}

    def on_message(self, peer: PeerInfo, message: Any) -> None:
        self.messages.append(peer)


@asynccontextmanager
async def tls_node(dirs: Dirs, seen: Seen, *, handshake_timeout: float = 5.0) -> AsyncIterator[Transport]:
    network = TlsNetwork(TcpNetwork(), load_contexts(dirs.node, "node"), handshake_timeout=handshake_timeout)
    async with open_transport(
        network,
        identity=Identity(node_id="srv", cluster_id="c1"),
        listen="127.0.0.1:0",
        on_call=seen.on_call,
        on_message=seen.on_message,
        settings=SETTINGS,
    ) as transport:
        yield transport


@asynccontextmanager
async def dialer(network: Network, node_id: str | None) -> AsyncIterator[Transport]:
    async with open_transport(
        network, identity=Identity(node_id=node_id, cluster_id="c1" if node_id else None), settings=SETTINGS
    ) as transport:
        yield transport


def client_cert_contexts(dirs: Dirs, *, listen: bool) -> TlsNetwork:
    """A client certificate loaded as if it were a node's (``load_contexts`` itself refuses to)."""
    d = dirs.client
    ctx = make_contexts(ca=f"{d}/ca.crt", cert=f"{d}/client.crt", key=f"{d}/client.key", listen=listen)
    return TlsNetwork(TcpNetwork(), ctx)


async def refused(transport: Transport, address: str) -> BoroughError:
    """Call ``address`` (and send it a message), expecting the call to fail; return the error."""
    transport.send(address, ["swim", "ping"])
    with trio.fail_after(10), pytest.raises((ConfigError, Unavailable)) as info:
        await transport.call(address, "hello")
    return info.value


# ---------------------------------------------------------------------------------------------------- roles


async def test_node_and_client_certificates_give_their_roles_on_peer_info(dirs: Dirs) -> None:
    seen = Seen()
    async with tls_node(dirs, seen) as srv:
        assert srv.listen_address is not None
        async with dialer(TlsNetwork(TcpNetwork(), load_contexts(dirs.node, "node")), "n2") as node:
            reply = await node.call(srv.listen_address, "hi")
            assert reply.body["role"] == "node"
            (dialled,) = node.connections()
            assert (dialled.peer.role, dialled.peer.certificate_name, dialled.peer.node_id) == ("node", "node", "srv")
        async with dialer(TlsNetwork(TcpNetwork(), load_contexts(dirs.client, "client")), None) as client:
            reply = await client.call(srv.listen_address, "hi")
            assert reply.body["role"] == "client"
    node_peer, client_peer = seen.calls
    assert (node_peer.role, node_peer.is_client, node_peer.node_id, node_peer.certificate_name) == (
        "node",
        False,
        "n2",
        "node",
    )
    assert (client_peer.role, client_peer.is_client, client_peer.certificate_name) == ("client", True, "alice")


async def test_without_tls_the_role_is_the_handshakes_declaration() -> None:
    seen = Seen()
    async with open_transport(
        TcpNetwork(), identity=Identity(node_id="srv"), listen="127.0.0.1:0", on_call=seen.on_call
    ) as srv:
        assert srv.listen_address is not None
        for node_id in ("n2", None):
            async with dialer(TcpNetwork(), node_id) as t:
                await t.call(srv.listen_address, "hi")
    assert [(p.role, p.certificate_name) for p in seen.calls] == [("node", None), ("client", None)]


# ---------------------------------------------------------------------------------------------------- refusals


async def test_a_node_without_a_certificate_cannot_connect(dirs: Dirs) -> None:
    seen = Seen()
    async with tls_node(dirs, seen) as srv, dialer(TcpNetwork(), "plain") as plain:
        assert srv.listen_address is not None
        err = await refused(plain, srv.listen_address)
    assert "TLS" in str(err) or "closed" in str(err), err
    assert seen.calls == seen.messages == []


async def test_a_node_with_a_certificate_of_another_ca_cannot_connect_either_way(dirs: Dirs) -> None:
    seen = Seen()
    async with tls_node(dirs, seen) as srv:
        assert srv.listen_address is not None
        foreign = TlsNetwork(TcpNetwork(), load_contexts(dirs.other, "node"))
        async with dialer(foreign, "foreign") as t:
            err = await refused(t, srv.listen_address)
        assert isinstance(err, ConfigError)
        assert "do not trust" in str(err)  # the foreign node does not trust our node's certificate either
        # ... and our node, dialling a foreign listener, refuses its certificate.
        async with open_transport(foreign, identity=Identity(node_id="f"), listen="127.0.0.1:0") as foreign_srv:
            assert foreign_srv.listen_address is not None
            err = await refused(srv, foreign_srv.listen_address)
            assert isinstance(err, ConfigError) and "do not trust" in str(err)
    assert seen.calls == seen.messages == []


async def test_a_client_without_a_certificate_cannot_connect(dirs: Dirs) -> None:
    seen = Seen()
    async with tls_node(dirs, seen) as srv:
        assert srv.listen_address is not None
        async with dialer(TcpNetwork(), None) as plain:
            await refused(plain, srv.listen_address)
        # Trusting the CA is not enough: the node asks for a client certificate and gets none.
        only_ca = ssl.create_default_context(cafile=f"{dirs.none}/ca.crt")
        async with dialer(TlsNetwork(TcpNetwork(), TlsContexts(client=only_ca, server=None)), None) as t:
            err = await refused(t, srv.listen_address)
            assert isinstance(err, ConfigError) and "certificate" in str(err), err
        other_client = TlsNetwork(TcpNetwork(), load_contexts(dirs.other, "client"))
        async with dialer(other_client, None) as t:
            err = await refused(t, srv.listen_address)
            assert isinstance(err, ConfigError)
    assert seen.calls == seen.messages == []
    with pytest.raises(ConfigError, match="client.crt is missing: make it with `borough certs create-client"):
        load_contexts(dirs.none, "client")


async def test_a_client_certificate_cannot_act_as_a_node(dirs: Dirs, caplog: pytest.LogCaptureFixture) -> None:
    seen = Seen()
    async with tls_node(dirs, seen) as srv:
        assert srv.listen_address is not None
        # Dialling with a client certificate while claiming a node id: the handshake refuses it.
        async with dialer(client_cert_contexts(dirs, listen=False), "rogue") as rogue:
            with caplog.at_level(logging.WARNING, logger="borough.wire.transport"):
                await refused(rogue, srv.listen_address)
        assert "a client certificate ('alice') cannot act as node rogue" in caplog.text
        # Listening with a client certificate: a node dialling it refuses (its EKU is clientAuth only).
        async with open_transport(
            client_cert_contexts(dirs, listen=True), identity=Identity(node_id="rogue"), listen="127.0.0.1:0"
        ) as rogue_srv:
            assert rogue_srv.listen_address is not None
            err = await refused(srv, rogue_srv.listen_address)
            assert isinstance(err, ConfigError), err
    assert seen.calls == seen.messages == []
    # A node given a client certificate as node.crt refuses to start.
    with pytest.raises(ConfigError, match="is not a Borough node certificate"):
        load_contexts(dirs.client_as_node, "node")


async def test_a_node_certificate_cannot_pose_as_a_client(dirs: Dirs) -> None:
    seen = Seen()
    async with tls_node(dirs, seen) as srv:
        assert srv.listen_address is not None
        async with dialer(TlsNetwork(TcpNetwork(), load_contexts(dirs.node, "node")), None) as t:
            await refused(t, srv.listen_address)
    assert seen.calls == []


async def test_a_peer_that_never_finishes_the_tls_handshake_is_dropped_after_the_bound(dirs: Dirs) -> None:
    seen = Seen()
    async with tls_node(dirs, seen, handshake_timeout=0.5) as srv:
        assert srv.listen_address is not None
        host, port = parse_address(srv.listen_address)
        start = trio.current_time()
        silent = await trio.open_tcp_stream(host, port)
        half = await trio.open_tcp_stream(host, port)
        async with silent, half:
            await half.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start, then nothing
            with trio.fail_after(5):
                for stream in (silent, half):
                    assert await stream.receive_some() == b""  # closed by the node
            assert 0.45 < trio.current_time() - start < 5
        # The node goes on serving.
        async with dialer(TlsNetwork(TcpNetwork(), load_contexts(dirs.client, "client")), None) as client:
            assert (await client.call(srv.listen_address, "hi")).body["role"] == "client"


# ---------------------------------------------------------------------------------------------------- nodes


@asynccontextmanager
async def tls_cluster(dirs: Dirs, n: int = 3) -> AsyncIterator[list[borough.Node]]:
    async with trio.open_nursery() as nursery:
        nodes: list[borough.Node] = []
        for _ in range(n):
            join = [nodes[0].address] if nodes else []
            node = await nursery.start(
                lambda task_status, join=join: borough.serve(
                    task_status=task_status, listen="127.0.0.1:0", join=join, certs_dir=dirs.node, **FAST
                )
            )
            nodes.append(node)
        yield nodes
        nursery.cancel_scope.cancel()


async def test_a_tls_cluster_serves_puts_and_gets(dirs: Dirs) -> None:
    async with tls_cluster(dirs) as nodes:
        with trio.fail_after(30):
            async with borough.open_client([n.address for n in nodes], certs_dir=dirs.client) as client:
                p = client.partition("user:1")
                await p.put("name", {"first": "Ada"})
                assert await p.get("name") == {"first": "Ada"}
                members = await client.members()
                assert len(members.members) == 3


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


@pytest.mark.parametrize("who", ["no certificate", "another CA", "a client certificate"])
async def test_a_node_without_a_node_certificate_of_the_cluster_ca_cannot_join(dirs: Dirs, who: str) -> None:
    network: Network = {
        "no certificate": TcpNetwork(),
        "another CA": TlsNetwork(TcpNetwork(), load_contexts(dirs.other, "node")),
        "a client certificate": client_cert_contexts(dirs, listen=True),
    }[who]
    async with tls_cluster(dirs, n=1) as (first,):
        with trio.fail_after(20), pytest.raises(BaseException) as info:  # noqa: B017 -- the leaves are checked below
            async with borough.open_node(
                listen="127.0.0.1:0", join=[first.address], network=network, request_timeout=3.0, **FAST
            ):
                pass
        assert all(isinstance(e, BoroughError) for e in _leaves(info.value)), info.value
        async with borough.open_client([first.address], certs_dir=dirs.client) as client:
            assert len((await client.members()).members) == 1


# ---------------------------------------------------------------------------------------------------- refusing to start


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "10.0.0.1", "example.com", "192.168.1.2"))


def test_a_node_on_a_non_loopback_address_without_certificates_needs_insecure(dirs: Dirs) -> None:
    with pytest.raises(ConfigError, match=r"refusing to listen on 0.0.0.0:7000 without certificates.*--insecure"):
        open_network(role="node", certs_dir=None, listen="0.0.0.0:7000")
    assert isinstance(open_network(role="node", certs_dir=None, listen="0.0.0.0:7000", insecure=True), TcpNetwork)
    assert isinstance(open_network(role="node", certs_dir=None, listen="127.0.0.1:7000"), TcpNetwork)
    assert isinstance(open_network(role="node", certs_dir=dirs.node, listen="0.0.0.0:7000"), TlsNetwork)
    assert isinstance(open_network(role="client", certs_dir=None), TcpNetwork)
    with pytest.raises(ConfigError, match="not both"):
        open_network(role="node", certs_dir=dirs.node, insecure=True, listen="0.0.0.0:7000")


async def test_open_node_refuses_before_listening() -> None:
    with pytest.raises(BaseException) as info:  # noqa: B017 -- the leaves are checked below
        async with borough.open_node(listen="0.0.0.0:0", data_dir=None):
            pass
    (leaf,) = _leaves(info.value)
    assert isinstance(leaf, ConfigError) and "--insecure" in str(leaf)


def test_borough_serve_says_so_in_one_line(tmp_path: Any) -> None:
    result = CliRunner().invoke(main, ["serve", "--listen", "0.0.0.0:0", "--data", str(tmp_path / "d")], env={})
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--certs-dir" in lines[0] and "--insecure" in lines[0], result.output


def test_the_certs_dir_comes_from_the_environment(dirs: Dirs) -> None:
    config = borough.NodeConfig.from_env(env={"BOROUGH_CERTS_DIR": dirs.node, "BOROUGH_INSECURE": "false"})
    assert (config.certs_dir, config.insecure) == (dirs.node, False)
    assert borough.NodeConfig.from_env(env={"BOROUGH_CERTS_DIR": ""}).certs_dir is None
    assert os.path.isdir(dirs.node)
