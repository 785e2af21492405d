"""Certificate directories for the TLS tests: the cluster's CA with node and client certificates, and another CA."""

from __future__ import annotations

import shutil
from pathlib import Path

import attrs
import pytest

from borough import certs


@attrs.frozen(kw_only=True)
class Dirs:
    node: str  # ca.crt, node.crt, node.key (and ca.key: the CA's own dir)
    client: str  # ca.crt, client.crt, client.key
    other: str  # another CA, with a node and a client certificate
    none: str  # ca.crt only: a node or client with no certificate of its own
    client_as_node: str  # ca.crt, and the client certificate as node.crt/node.key


@pytest.fixture(scope="session")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> Dirs:
    root = tmp_path_factory.mktemp("certs")
    ca = str(root / "ca")
    certs.create_ca(ca)
    certs.create_node(ca, ["127.0.0.1", "localhost"])
    certs.create_client(ca, "alice")
    client = root / "client"
    client.mkdir()
    none = root / "none"
    none.mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        shutil.copy(Path(ca) / name, client / name)
    shutil.copy(Path(ca) / "ca.crt", none / "ca.crt")
    client_as_node = root / "client_as_node"
    client_as_node.mkdir()
    shutil.copy(Path(ca) / "ca.crt", client_as_node / "ca.crt")
    shutil.copy(Path(ca) / "client.crt", client_as_node / "node.crt")
    shutil.copy(Path(ca) / "client.key", client_as_node / "node.key")
    other = str(root / "other")
    certs.create_ca(other)
    certs.create_node(other, ["127.0.0.1", "localhost"])
    certs.create_client(other, "mallory")
    return Dirs(node=ca, client=str(client), other=other, none=str(none), client_as_node=str(client_as_node))
