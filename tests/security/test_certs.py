"""``borough.certs`` and ``borough certs ...``: what goes into each certificate, the files and their modes, and
the refusals (an existing file, a missing or mismatched CA key, no hosts)."""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from borough import certs
from borough.cli import main
from borough.errors import ConfigError
from borough.wire.tls import CLIENT_UNIT, NODE_UNIT, load_contexts


def read(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def unit(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value)


def test_a_ca_and_its_node_and_client_certificates(tmp_path: Path) -> None:
    d = str(tmp_path / "certs")
    ca = certs.create_ca(d)
    node = certs.create_node(d, ["127.0.0.1", "::1", "localhost", "node1.example"])
    client = certs.create_client(d, "alice")
    assert sorted(os.listdir(d)) == ["ca.crt", "ca.key", "client.crt", "client.key", "node.crt", "node.key"]
    assert [mode(f.key) for f in (ca, node, client)] == [0o600] * 3
    assert mode(ca.cert) == 0o644

    ca_cert = read(ca.cert)
    constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign

    n = read(node.cert)
    assert unit(n) == NODE_UNIT and n.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node"
    assert set(n.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    san = n.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "node1.example"]
    assert n.issuer == ca_cert.subject

    c = read(client.cert)
    assert unit(c) == CLIENT_UNIT and c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    # The strict checks of Python 3.13 (VERIFY_X509_STRICT) accept the chain: load it and verify it with them.
    for role in ("node", "client"):
        contexts = load_contexts(d, role)
        assert contexts.client.verify_flags & ssl.VERIFY_X509_STRICT
    assert load_contexts(d, "client").server is None and load_contexts(d, "node").server is not None


def test_nothing_is_overwritten_unless_asked(tmp_path: Path) -> None:
    d = str(tmp_path)
    certs.create_ca(d)
    before = Path(d, "ca.crt").read_bytes()
    with pytest.raises(ConfigError, match="ca.key already exists: remove it, or pass --overwrite"):
        certs.create_ca(d)
    certs.create_ca(d, overwrite=True)
    assert Path(d, "ca.crt").read_bytes() != before
    certs.create_client(d, "a")
    with pytest.raises(ConfigError, match="client.key already exists"):
        certs.create_client(d, "b")


def test_the_ca_key_may_live_elsewhere(tmp_path: Path) -> None:
    d, secret = str(tmp_path / "certs"), str(tmp_path / "ca.key")
    certs.create_ca(d, ca_key=secret)
    assert not os.path.exists(os.path.join(d, "ca.key")) and os.path.exists(secret)
    with pytest.raises(ConfigError, match="ca.key is missing: run `borough certs create-ca.*--ca-key PATH"):
        certs.create_node(d, ["127.0.0.1"])
    certs.create_node(d, ["127.0.0.1"], ca_key=secret)
    other = str(tmp_path / "other")
    certs.create_ca(other)
    with pytest.raises(ConfigError, match="is not the key of"):
        certs.create_client(d, "x", ca_key=os.path.join(other, "ca.key"))


def test_bad_requests_say_what_to_do(tmp_path: Path) -> None:
    d = str(tmp_path)
    certs.create_ca(d)
    with pytest.raises(ConfigError, match="needs the hosts"):
        certs.create_node(d, [])
    with pytest.raises(ConfigError, match="needs a client NAME"):
        certs.create_client(d, " ")
    with pytest.raises(ConfigError, match="ca.crt is missing: run `borough certs create-ca"):
        certs.create_client(str(tmp_path / "empty"), "x")
    with pytest.raises(ConfigError, match="node.crt is missing: make it with `borough certs create-node"):
        load_contexts(d, "node")


def test_the_cli_makes_a_certs_dir(tmp_path: Path) -> None:
    d = str(tmp_path / "certs")
    runner = CliRunner()
    for args in (["create-ca"], ["create-node", "127.0.0.1", "localhost"], ["create-client", "bob"]):
        result = runner.invoke(main, ["certs", args[0], "--certs-dir", d, *args[1:]], env={})
        assert result.exit_code == 0, result.output
        assert result.output.startswith("wrote ")
    again = runner.invoke(main, ["certs", "create-ca", "--certs-dir", d], env={})
    assert again.exit_code == 1 and "already exists" in again.output and len(again.output.strip().splitlines()) == 1
    assert load_contexts(d, "node").server is not None
    from_env = runner.invoke(main, ["certs", "create-client", "carol", "--overwrite"], env={"BOROUGH_CERTS_DIR": d})
    assert from_env.exit_code == 0, from_env.output
    assert read(os.path.join(d, "client.crt")).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "carol"
