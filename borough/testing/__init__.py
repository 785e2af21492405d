"""borough.testing: deterministic simulation of whole clusters, fault injection, linearizability checking."""

from borough.testing.history import NOT_FOUND as NOT_FOUND
from borough.testing.history import History as History
from borough.testing.history import Kind as Kind
from borough.testing.history import Operation as Operation
from borough.testing.history import Status as Status
from borough.testing.linearizability import CheckResult as CheckResult
from borough.testing.linearizability import Outcome as Outcome
from borough.testing.linearizability import check as check
from borough.testing.sim import SimCluster as SimCluster
from borough.testing.sim import SimNode as SimNode

__all__ = [
    "NOT_FOUND",
    "CheckResult",
    "History",
    "Kind",
    "Operation",
    "Outcome",
    "SimCluster",
    "SimNode",
    "Status",
    "check",
]
