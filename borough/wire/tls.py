"""Mutual TLS: the SSL contexts, the role a certificate carries, and ``TlsNetwork`` (any ``Network`` wrapped in
``tls_stream.TlsStream``, a TLS stream for one reader and one writer: see there why not ``trio.SSLStream``).

Rules (copied from CockroachDB and etcd, see docs/ and the README's "Running with certificates"):
- Both sides present a certificate signed by the cluster CA (``ca.crt``): ``CERT_REQUIRED`` both ways, TLS 1.2
  at least. The dialer also checks that the name it dialled (IP or DNS) is in the node certificate's SAN.
- A certificate's role is its subject's organizational unit: ``OU=borough-node`` (a member node; extended key
  usage serverAuth and clientAuth, since a node both accepts and dials) or ``OU=borough-client`` (clientAuth only,
  so OpenSSL itself refuses it as a server). Anything else is refused. ``borough certs`` makes both kinds.
- The handshake's HELLO must declare the role its certificate carries (a node id for a node, none for a client):
  ``role_refusal`` is the handshake's check, so a client certificate can never act as a node.
- The TLS handshake is a network wait: the accept side bounds it with ``handshake_timeout`` and drops a peer that
  opens TCP and never finishes; the dial side is bounded by the transport's ``connect_timeout``. Handshakes are
  explicit (``do_handshake``), never implicit in the first read.
- No session tickets (``num_tickets = 0``: links are long-lived and we never resume a session) and no TLS 1.2
  renegotiation (``OP_NO_RENEGOTIATION``): after the handshake only application data and alerts flow.

It knows nothing about frames, calls, Raft or the node; the transport asks it for the peer's certificate.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Literal

import attrs
import trio

from borough.errors import ConfigError
from borough.wire import codec as c
from borough.wire.network import Handler, Network, describe_stream, parse_address
from borough.wire.records import PeerCertificate, PeerRole
from borough.wire.tls_stream import TlsStream

__all__ = [
    "CLIENT_UNIT",
    "NODE_UNIT",
    "TlsContexts",
    "TlsNetwork",
    "load_contexts",
    "make_contexts",
    "peer_certificate",
    "role_refusal",
    "tls_failure",
]

log = logging.getLogger(__name__)

NODE_UNIT = "borough-node"
CLIENT_UNIT = "borough-client"
_UNIT_ROLES: dict[str, PeerRole] = {NODE_UNIT: "node", CLIENT_UNIT: "client"}

#: The files a node or a client loads from its certs dir.
FILES: dict[PeerRole, tuple[str, str]] = {"node": ("node.crt", "node.key"), "client": ("client.crt", "client.key")}
_MAKE: dict[PeerRole, str] = {
    "node": "borough certs create-node --certs-dir DIR HOST...",
    "client": "borough certs create-client --certs-dir DIR NAME",
}


@attrs.frozen(kw_only=True)
class TlsContexts:
    """The contexts of one process: ``server`` accepts (None for a client, which never listens), ``client`` dials."""

    client: ssl.SSLContext
    server: ssl.SSLContext | None


def _context(purpose: Literal["server", "client"], ca: str, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == "server" else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED  # PROTOCOL_TLS_SERVER leaves CERT_NONE: client certificates are mandatory
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default: the same verdict on every version
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    if purpose == "server":
        ctx.num_tickets = 0  # TLS 1.3 tickets are for resumption, which a long-lived link never does
    if purpose == "client":
        ctx.check_hostname = True
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def make_contexts(*, ca: str, cert: str, key: str, listen: bool) -> TlsContexts:
    """Contexts from explicit files, without checking the certificate's role (see ``load_contexts``)."""
    try:
        client = _context("client", ca, cert, key)
        server = _context("server", ca, cert, key) if listen else None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files {cert}, {key}, {ca}: {exc}; make them with `borough certs`") from exc
    return TlsContexts(client=client, server=server)


def load_contexts(certs_dir: str, role: PeerRole) -> TlsContexts:
    """A node's (``role="node"``) or client's contexts from ``certs_dir``: ``ca.crt`` and the role's pair. Raises
    ``ConfigError`` saying which command makes a missing file, or when the certificate carries another role."""
    cert_name, key_name = FILES[role]
    paths = {name: os.path.join(certs_dir, name) for name in ("ca.crt", cert_name, key_name)}
    for name, path in paths.items():
        if not os.path.isfile(path):
            make = "borough certs create-ca --certs-dir DIR" if name == "ca.crt" else _MAKE[role]
            raise ConfigError(f"{path} is missing: make it with `{make}` (or point --certs-dir elsewhere)")
    cert = paths[cert_name]
    found = _role_of_file(cert)
    if found != role:
        raise ConfigError(f"{cert} is not a Borough {role} certificate (OU {found!r}); make one with `{_MAKE[role]}`")
    return make_contexts(ca=paths["ca.crt"], cert=cert, key=paths[key_name], listen=role == "node")


def _role_of_file(path: str) -> PeerRole | None:
    from cryptography import x509  # only when loading certificates: the wire otherwise never needs it

    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the certificate {path}: {exc}; make it with `borough certs`") from exc
    units = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    return _UNIT_ROLES.get(str(units[0].value)) if len(units) == 1 else None


def peer_certificate(stream: trio.abc.Stream) -> PeerCertificate | None:
    """The verified certificate of a TLS stream whose handshake is done (None for a stream without TLS).

    Raises ``ConfigError`` when the certificate carries no Borough role (one OU, ``borough-node`` or
    ``borough-client``)."""
    if not isinstance(stream, (TlsStream, trio.SSLStream)):
        return None
    cert = stream.getpeercert()
    if not cert:  # cannot happen with CERT_REQUIRED; refuse rather than guess
        raise ConfigError("the peer presented no certificate; give it one made with `borough certs`")
    units: list[str] = []
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "organizationalUnitName":
                units.append(value)
            elif key == "commonName":
                names.append(value)
    role = _UNIT_ROLES.get(units[0]) if len(units) == 1 else None
    if role is None:
        raise ConfigError(
            f"the peer's certificate has no Borough role (OU {units}); make it with `borough certs create-node` "
            "or `create-client`"
        )
    return PeerCertificate(role=role, name=names[0] if names else "")


def role_refusal(certificate: PeerCertificate | None, hello: c.Hello) -> str | None:
    """Why a peer whose certificate is ``certificate`` may not declare what ``hello`` declares (None: it may).

    Without TLS (``certificate`` None) the declaration stands. A HELLO with a node id claims membership and needs
    a node certificate; a HELLO without one is a client and needs a client certificate."""
    if certificate is None:
        return None
    declared: PeerRole = "client" if hello.node_id is None else "node"
    if declared == certificate.role:
        return None
    if certificate.role == "client":
        return (
            f"a client certificate ({certificate.name!r}) cannot act as node {hello.node_id}; "
            "give the node a node certificate (borough certs create-node)"
        )
    return "a node certificate cannot connect as a client; give the client a client certificate"


def tls_failure(exc: BaseException, address: str) -> ConfigError | None:
    """A ``ConfigError`` with what to do when ``exc`` (or what caused it) is a TLS verification failure when
    dialling ``address``: our certificate refused by the peer, or the peer's refused by us. None otherwise."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, ssl.SSLError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    if isinstance(seen, ssl.SSLCertVerificationError):
        return ConfigError(
            f"{address} presented a certificate we do not trust ({seen.verify_message}); give every node and "
            "client certificates of the same CA, listing each address nodes are dialled at (borough certs)"
        )
    reason = (seen.reason or str(seen)).lower()
    if "alert" in reason and any(word in reason for word in ("certificate", "unknown_ca", "unknown ca")):
        return ConfigError(
            f"{address} refused our certificate ({seen.reason}); use a node or client certificate of the "
            "cluster's CA (borough certs)"
        )
    if "unexpected_eof" in reason:  # the peer hung up without an alert (or its alert was lost)
        return ConfigError(
            f"{address} hung up during the TLS handshake (it may not trust our certificate, or not speak TLS); "
            "give every node and client certificates of the same CA (borough certs)"
        )
    if "wrong_version" in reason or "record_layer" in reason or "http_request" in reason:
        return ConfigError(f"{address} does not speak TLS ({seen.reason}); run it with --certs-dir, or drop ours")
    return None


class TlsNetwork:
    """``inner`` (TCP, or the simulator) with mutual TLS (a ``TlsStream``) on every connection. See the module
    docstring."""

    def __init__(
        self, inner: Network, contexts: TlsContexts, *, handshake_timeout: float = 5.0, max_handshaking: int = 128
    ) -> None:
        self.inner = inner
        self.contexts = contexts
        self.handshake_timeout = handshake_timeout
        self._handshakes = trio.Semaphore(max_handshaking)
        #: Connections closed at once because ``max_handshaking`` TLS handshakes were already under way.
        self.refused = 0

    async def connect(self, address: str) -> trio.abc.Stream:
        host, _port = parse_address(address)
        raw = await self.inner.connect(address)
        stream = TlsStream(raw, self.contexts.client, server_hostname=host)
        try:
            await stream.do_handshake()
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(raw)
            if isinstance(exc, trio.BrokenResourceError):
                refusal = tls_failure(exc, address)
                if refusal is not None:
                    raise refusal from exc
            raise
        return stream

    async def serve(
        self, address: str, handler: Handler, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        server = self.contexts.server
        if server is None:
            raise ConfigError(f"cannot listen on {address} with client certificates: a node needs node.crt")

        async def secured(raw: trio.abc.Stream) -> None:
            remote = describe_stream(raw)
            try:
                self._handshakes.acquire_nowait()
            except trio.WouldBlock:
                self.refused += 1  # a flood of connections that never finish TLS: bounded, not queued
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning("refused %d connections: too many TLS handshakes under way", self.refused)
                return
            stream = TlsStream(raw, server, server_side=True)
            with trio.move_on_after(self.handshake_timeout) as scope:
                try:
                    await stream.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    level = logging.WARNING if tls_failure(exc, remote) is not None else logging.INFO
                    log.log(level, "refused a TLS connection from %s: %s", remote, _cause(exc), extra={"peer": remote})
                    return
                finally:
                    self._handshakes.release()
            if scope.cancelled_caught:
                log.warning(
                    "closing the connection from %s: no TLS handshake within %.1f s",
                    remote,
                    self.handshake_timeout,
                    extra={"peer": remote},
                )
                return
            await handler(stream)

        await self.inner.serve(address, secured, task_status=task_status)


def _cause(exc: BaseException) -> BaseException:
    return exc.__cause__ if exc.__cause__ is not None else exc
