"""borough.testing: deterministic simulation of whole clusters, fault injection, linearizability checking.

``SimCluster`` runs real Borough nodes in one trio run on virtual time over a simulated network and in-memory
disks, with faults (crash, restart, pause, partitions, one-way cuts, latency, membership changes); a run is a
function of its seed. ``History`` and ``check`` record and check what clients saw; ``check_serializable``
checks recorded handler transactions (``record_handler_transactions``). ``Scenario`` and
``run_scenario`` run a workload under a fault schedule and check it; ``borough.testing.strategies`` (which
imports Hypothesis) draws them. ``python -m borough.testing replay FILE`` replays a failure. See docs/testing.md.
"""

from borough.testing.checks import check_leaders as check_leaders
from borough.testing.checks import check_members as check_members
from borough.testing.checks import check_placement as check_placement
from borough.testing.checks import check_replicas as check_replicas
from borough.testing.checks import heal_all as heal_all
from borough.testing.checks import lost_writes as lost_writes
from borough.testing.history import NOT_FOUND as NOT_FOUND
from borough.testing.history import History as History
from borough.testing.history import Kind as Kind
from borough.testing.history import Operation as Operation
from borough.testing.history import Status as Status
from borough.testing.linearizability import CheckResult as CheckResult
from borough.testing.linearizability import Outcome as Outcome
from borough.testing.linearizability import check as check
from borough.testing.scenario import Fault as Fault
from borough.testing.scenario import Scenario as Scenario
from borough.testing.scenario import ScenarioFailed as ScenarioFailed
from borough.testing.scenario import ScenarioResult as ScenarioResult
from borough.testing.scenario import Step as Step
from borough.testing.scenario import random_scenario as random_scenario
from borough.testing.scenario import run_faults as run_faults
from borough.testing.scenario import run_scenario as run_scenario
from borough.testing.scenario import run_simulation as run_simulation
from borough.testing.serializability import INITIAL as INITIAL
from borough.testing.serializability import SerialResult as SerialResult
from borough.testing.serializability import Txn as Txn
from borough.testing.serializability import check_serializable as check_serializable
from borough.testing.serializability import record_handler_transactions as record_handler_transactions
from borough.testing.sim import SimCluster as SimCluster
from borough.testing.sim import SimNode as SimNode
from borough.testing.trace import Trace as Trace
from borough.testing.workload import ClientOps as ClientOps
from borough.testing.workload import cas_handler as cas_handler

__all__ = [
    "INITIAL",
    "NOT_FOUND",
    "CheckResult",
    "ClientOps",
    "Fault",
    "History",
    "Kind",
    "Operation",
    "Outcome",
    "Scenario",
    "ScenarioFailed",
    "ScenarioResult",
    "SerialResult",
    "SimCluster",
    "SimNode",
    "Status",
    "Step",
    "Trace",
    "Txn",
    "cas_handler",
    "check",
    "check_leaders",
    "check_members",
    "check_placement",
    "check_replicas",
    "check_serializable",
    "heal_all",
    "lost_writes",
    "random_scenario",
    "record_handler_transactions",
    "run_faults",
    "run_scenario",
    "run_simulation",
]
