"""``borough.raft`` re-exports exactly the names its driver needs, and each is the object from its module."""

from __future__ import annotations

import borough.raft as raft
from borough.raft import rawnode


def test_every_export_exists_and_nothing_else_is_public() -> None:
    public = {n for n in vars(raft) if not n.startswith("_")}
    modules = {
        "confchange",
        "config",
        "errors",
        "memory_storage",
        "messages",
        "progress",
        "rawnode",
        "readonly",
        "records",
        "role",
        "storage",
        "quorum",
        "log",
        "conf_history",
        "core",
        "leader",
    }
    assert public - modules == set(raft.__all__)
    assert raft.RawNode is rawnode.RawNode
