"""The public surface: what ``borough`` exports, and the error hierarchy DESIGN.md promises."""

from __future__ import annotations

import pytest

import borough
from borough import errors

EXPECTED_EXPORTS = {
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
}


def test_exports_are_exactly_the_public_names() -> None:
    assert set(borough.__all__) == EXPECTED_EXPORTS
    for name in borough.__all__:
        assert getattr(borough, name) is not None
    subpackages = {
        "errors",
        "raft",
        "store",
        "wire",
        "ring",
        "testing",
        "cli",
        "cli_client",
        "cli_settings",
        "backup",
        "certs",
        "interpreter",
        "files",
        "client",
        "config",
        "node",
        "partition",
        "request",
        "ids",
        "kv",
        "cbor_safe",
        "cbor_budget",
        "runnable",
    }
    public = {name for name in vars(borough) if not name.startswith("_")}
    assert public - subpackages == EXPECTED_EXPORTS
    for name in ["NotFound", "Timeout", "RemoteError", "ConfigError"]:
        assert getattr(borough, name) is getattr(errors, name)
    # NotLeader is internal: routing retries it, callers never see it.
    assert not hasattr(borough, "NotLeader")


@pytest.mark.parametrize(
    "cls",
    [
        errors.NotFound,
        errors.Timeout,
        errors.Unavailable,
        errors.Overloaded,
        errors.RemoteError,
        errors.ProtocolError,
        errors.StorageError,
        errors.ConfigError,
        errors.NotLeader,
    ],
)
def test_every_error_is_a_borough_error(cls: type[Exception]) -> None:
    assert issubclass(cls, borough.BoroughError)


def test_error_details() -> None:
    nf = borough.NotFound("k", partition="p")
    assert isinstance(nf, KeyError)
    assert str(nf) == "key 'k' not found in partition 'p'"
    assert issubclass(borough.LocalProtocolError, borough.ProtocolError)
    assert issubclass(borough.RemoteProtocolError, borough.ProtocolError)
    assert isinstance(borough.Timeout("slow"), TimeoutError)
    remote = borough.RemoteError("ValueError", "bad stock")
    assert (remote.type_name, remote.message) == ("ValueError", "bad stock")
    assert "ValueError" in str(remote) and "bad stock" in str(remote)
    nl = errors.NotLeader("p", leader="n2")
    assert nl.leader == "n2" and "n2" in str(nl)
