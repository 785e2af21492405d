"""Making certificates for mutual TLS (``borough certs ...``), with the ``cryptography`` package.

Owns the files of a certs dir and what goes into them; knows nothing of sockets or nodes (``wire.tls`` reads
what this writes). Names follow CockroachDB: ``ca.crt``/``ca.key`` (the cluster CA), ``node.crt``/``node.key``
(``CN=node``, every host the node is dialled at in the SAN), ``client.crt``/``client.key`` (``CN=<name>``). The
role is the subject's OU (``borough-node`` / ``borough-client``, see ``wire.tls``) and the extended key usage
(node: serverAuth + clientAuth; client: clientAuth only). Certificates are RFC 5280-clean (critical basic
constraints and key usage, subject and authority key identifiers) so Python 3.13's ``VERIFY_X509_STRICT``
accepts them. Keys are ECDSA P-256 (fast handshakes), written with mode 0600; nothing is overwritten unless
asked. Validity dates come from the wall clock (a certificate's dates are calendar dates, not trio time).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from borough.errors import ConfigError
from borough.files import write_durably
from borough.wire.tls import CLIENT_UNIT, NODE_UNIT

__all__ = ["CertFiles", "create_ca", "create_client", "create_node"]

CA_DAYS = 10 * 366
LEAF_DAYS = 5 * 366
_ORG = "Borough"


@attrs.frozen(kw_only=True)
class CertFiles:
    """The two files written: a certificate and its private key."""

    cert: str
    key: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: str, data: bytes, *, private: bool, overwrite: bool) -> None:
    if os.path.exists(path) and not overwrite:
        raise ConfigError(f"{path} already exists: remove it, or pass --overwrite to replace it")
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o700 if private else 0o755, exist_ok=True)  # (only dirs made here get it)
    write_durably(path, data, 0o600 if private else 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _prepare(certs_dir: str) -> None:
    try:
        os.makedirs(certs_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the certs dir {certs_dir}: {exc.strerror or exc}") from exc


def create_ca(certs_dir: str, *, ca_key: str | None = None, days: int = CA_DAYS, overwrite: bool = False) -> CertFiles:
    """Write ``ca.crt`` into ``certs_dir`` and its key to ``ca_key`` (default ``certs_dir/ca.key``)."""
    _prepare(certs_dir)
    key = _new_key()
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG), x509.NameAttribute(NameOID.COMMON_NAME, "Borough CA")]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    files = CertFiles(cert=os.path.join(certs_dir, "ca.crt"), key=ca_key or os.path.join(certs_dir, "ca.key"))
    _write(files.key, _key_pem(key), private=True, overwrite=overwrite)
    _write(files.cert, _cert_pem(cert), private=False, overwrite=overwrite)
    return files


def _load_ca(certs_dir: str, ca_key: str | None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path = os.path.join(certs_dir, "ca.crt")
    key_path = ca_key or os.path.join(certs_dir, "ca.key")
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{exc.filename} is missing: run `borough certs create-ca --certs-dir {certs_dir}` first, "
            "or give the CA key with --ca-key PATH"
        ) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the CA ({cert_path}, {key_path}): {exc}; make one with create-ca") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ConfigError(f"{key_path} is not the key of {cert_path}: give the matching one with --ca-key PATH")
    return cert, key


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        text = host.strip().strip("[]")
        if not text:
            raise ConfigError("an empty host name: list each IP address or DNS name the node is dialled at")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            names.append(x509.DNSName(text))
    return x509.SubjectAlternativeName(names)


def _leaf(
    certs_dir: str,
    *,
    stem: str,
    common_name: str,
    unit: str,
    usages: list[x509.ObjectIdentifier],
    san: x509.SubjectAlternativeName | None,
    ca_key: str | None,
    days: int,
    overwrite: bool,
) -> CertFiles:
    ca_cert, signing_key = _load_ca(certs_dir, ca_key)
    key = _new_key()
    now = _now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(signing_key, hashes.SHA256())
    files = CertFiles(cert=os.path.join(certs_dir, f"{stem}.crt"), key=os.path.join(certs_dir, f"{stem}.key"))
    _write(files.key, _key_pem(key), private=True, overwrite=overwrite)
    _write(files.cert, _cert_pem(cert), private=False, overwrite=overwrite)
    return files


def create_node(
    certs_dir: str, hosts: Sequence[str], *, ca_key: str | None = None, days: int = LEAF_DAYS, overwrite: bool = False
) -> CertFiles:
    """Write ``node.crt``/``node.key``, valid for every IP or DNS name in ``hosts`` (those nodes and clients dial
    this node at), signed by the CA in ``certs_dir`` (its key from ``ca_key`` if given)."""
    if not hosts:
        raise ConfigError("create-node needs the hosts the node is reached at, e.g. 127.0.0.1 localhost node1.lan")
    return _leaf(
        certs_dir,
        stem="node",
        common_name="node",
        unit=NODE_UNIT,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        san=_san(hosts),
        ca_key=ca_key,
        days=days,
        overwrite=overwrite,
    )


def create_client(
    certs_dir: str, name: str, *, ca_key: str | None = None, days: int = LEAF_DAYS, overwrite: bool = False
) -> CertFiles:
    """Write ``client.crt``/``client.key`` for the client ``name`` (its common name), signed by the CA."""
    if not name.strip():
        raise ConfigError("create-client needs a client NAME (it becomes the certificate's common name)")
    return _leaf(
        certs_dir,
        stem="client",
        common_name=name.strip(),
        unit=CLIENT_UNIT,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        san=None,
        ca_key=ca_key,
        days=days,
        overwrite=overwrite,
    )
