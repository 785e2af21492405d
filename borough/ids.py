"""Shared vocabulary: the id types every layer speaks of (a node's id, a Raft term, a log index).

A leaf module: it imports nothing from Borough, so the ring, the store and the wire can name a node without
loading the Raft core.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["Index", "NodeId", "Term"]

NodeId = NewType("NodeId", str)
Term = NewType("Term", int)
Index = NewType("Index", int)
