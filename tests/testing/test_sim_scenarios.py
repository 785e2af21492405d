"""Scenarios as data: JSON round trips, fault schedules that end in awkward places, the seed-only generator."""

from __future__ import annotations

import pathlib

import pytest

from borough.testing import Fault, Scenario, Step, random_scenario, run_scenario


def test_a_scenario_survives_its_json_form() -> None:
    scenario = random_scenario(9, nodes=5, client_faults=True)
    assert Scenario.from_json(scenario.to_json()) == scenario
    with pytest.raises(ValueError, match="not a saved scenario"):
        Scenario.from_json('{"seed": 1}')
    with pytest.raises(ValueError, match="unknown fault"):
        Fault(delay=0, name="explode")


@pytest.mark.parametrize("seed", [3, 4, 8])
def test_a_schedule_ending_in_a_restart_races_the_final_healing_harmlessly(seed: int) -> None:
    # The last fault's restart runs in the background while healing restarts every node that is down; which
    # goes first depends on the seed (these seeds crashed the harness before restarts checked again).
    scenario = Scenario(
        seed=seed,
        clients=((Step(delay=0, kind="put", partition=1, key=0), Step(delay=0, kind="cas", partition=1, key=0)),),
        faults=(Fault(delay=0.5, name="crash", args=(0,)), Fault(delay=0, name="restart", args=(0,))),
    )
    result = run_scenario(scenario)
    assert result.ok, result.report()
    assert result.history.operations[-1].client_id == "final"


def test_every_fault_of_the_vocabulary_runs_and_the_run_checks_out() -> None:
    faults = (
        Fault(delay=0.2, name="latency", args=(0, 1, 0.05, 0.01)),
        Fault(delay=0.2, name="cut", args=(0, 1, True)),
        Fault(delay=0.2, name="cut-client", args=(1, 0, True)),
        Fault(delay=0.2, name="pause", args=(2,)),
        Fault(delay=0.5, name="resume", args=(2,)),
        Fault(delay=0.2, name="partition", args=(((0,), (1, 2, 3)),)),
        Fault(delay=0.2, name="isolate", args=(3,)),
        Fault(delay=0.2, name="rst", args=(1,)),
        Fault(delay=0.2, name="heal"),
        Fault(delay=0.2, name="add"),
        Fault(delay=0.2, name="remove", args=(3,)),
        Fault(delay=0.2, name="crash", args=(1,)),
        Fault(delay=0.2, name="restart", args=(1,)),
    )
    steps = tuple(
        Step(delay=0.3, kind=kind, partition=i % 2, key=0) for i, kind in enumerate(["put", "get", "cas", "delete"])
    )
    result = run_scenario(Scenario(seed=4, nodes=4, clients=(steps, steps), faults=faults))
    assert result.ok, result.report()
    assert "remove 3 DEAD" in " ".join(result.trace_tail) or result.leader_wait is not None


SAVED = pathlib.Path(__file__).resolve().parent / "scenarios"


@pytest.mark.parametrize(
    "name",
    [
        "retried-delete-3331.json",
        "readded-replica-181.json",
        "stale-system-learner-248.json",
        "stale-candidate-deleted-voter-5202.json",
        "stale-leader-removes-learner-178.json",
        "unborn-partition-on-dead-voters-120.json",
        "quiet-stale-system-leader-431.json",
        "quiet-stale-leader-477.json",
        "kill-during-promotion-521.json",
        "quiet-follower-missed-removal-698.json",
        "quiet-misplaced-leader-138.json",
        "remove-before-swap-885.json",
        "doubted-voter-removed-419.json",
        "ghost-member-after-lost-join-2833.json",
        "harness-stale-ring-kill-3128.json",
        "dead-voter-removed-came-back-5750.json",
    ],
)
def test_saved_fuzzer_finds_stay_fixed(name: str) -> None:
    # retried-delete-3331: a delete whose reply was lost was retried and applied again after a later put (then
    # fixed by not retrying: its outcome was unknown; now it carries its session, is retried and applies once,
    # see test_sim_retries.py).
    # readded-replica-181: a replica added back to _system replayed old configurations that did not list it,
    # deleted itself, was recreated by the leader's next message, and so on forever.
    # stale-system-learner-248: a node paused and restarted kept a _system replica the group had dropped; it
    # trusted that replica's stale member table, never saw it was declared DEAD and never announced itself.
    # stale-candidate-deleted-voter-5202: a node removed from _system deleted its replica; a vote request
    # from a lagging node whose stale configuration still listed it re-created the replica empty, which granted
    # the vote: two leaders of _system in one term, and the lagging one crashed on a match beyond its log.
    # stale-leader-removes-learner-178 (fuzz --topology --nodes 4): a node added to _system as a learner asked
    # whether it still belonged and was answered by a deposed leader (its node declared DEAD but running) whose
    # older configuration did not list it: it deleted its replica, while the real leader still listed it at
    # that incarnation and sent to a replica that no longer existed; its messages were dropped as meant for a
    # deleted incarnation, the learner never caught up. The sweep now takes a removal only from a leader of its
    # replica's term or later.
    # unborn-partition-on-dead-voters-120 (fuzz --topology --nodes 5): the harness killed a second node while a
    # partition was not registered yet; registered just after, on the ring's voters (both killed nodes among them,
    # not yet declared dead), it was wedged from birth. Two of three voters lost for good is beyond what three
    # replicas tolerate; the harness now refuses such a kill as it refuses one of a registered group's majority.
    # quiet-stale-system-leader-431 and quiet-stale-leader-477 (fuzz --topology --nodes 4; they failed before this
    # session's changes too): a node was paused while it led a quiet `_system`; the group elected another leader
    # and removed the node, which on resuming still led its stale copy, quiet, for ever (nothing woke it, and a
    # leader woken would have gone quiet again at once: its followers' last answers still counted), answering
    # the member table with a stale one, so the decommission never finished. A woken leader now goes quiet only
    # once a quorum answers it again, and a quiet `_system` leader is woken when gossip names a newer member
    # table than its own (the sweep wakes a quiet leader the ring does not place on its node), so check-quorum
    # deposes it.
    # kill-during-promotion-521 (fuzz --topology --nodes 4; failed before this session too): the harness killed a
    # second node while `_system` held a learner it was about to promote; the promotion's joint configuration
    # counted both killed nodes among its four incoming voters, and was wedged. Two of four lost for good is
    # beyond what the group tolerates; the harness now counts learners as voters-to-be when it judges a kill.
    # quiet-follower-missed-removal-698 (fuzz --nodes 5 --topology --client-faults; failed at c4b6c43 too): a node
    # cut off while `_system` was quiet missed its removal; the group moved to a leader its configuration did not
    # list and added it back as a learner. Quiet, its clock stood still, so it counted itself in touch with its
    # old leader for ever and ignored the new one's heartbeats as an outsider's; the decommission that needed it
    # never finished. Such a follower now wakes and pre-votes at once (golden file
    # quiesce_removed_follower_meets_new_leader.txt).
    # quiet-misplaced-leader-138 (fuzz --nodes 4 --topology --client-faults; failed at c4b6c43 too): a group went
    # quiet led by a node that was not its ring owner; placement hands the lead over only to an owner that looks
    # active, and a quiet leader's activity flags stay stale, so it waited for ever. For a quiet group the failure
    # detector's word now stands in for them (tests/node/test_reconcile.py).
    # remove-before-swap-885 (fuzz --nodes 5 --topology --client-faults; failed at c4b6c43 too): a voter that was
    # leaving and cut off was removed before its replacement, a learner still catching up, could be swapped in;
    # a second voter was killed during that removal's joint change, which, appended on the longest log, needed
    # it: the group was wedged for good although two of its three voters lived. A dead voter is now removed
    # first only when no ring target is waiting to replace it (placement rule 6).
    # doubted-voter-removed-419 (fuzz --nodes 4 --topology --client-faults --read-mode lease --quiesce-ticks 2
    # --partitions 6): a voter paused for 3 s, which the ring had just moved past (a node was added), was removed
    # as if dead while its replacement was not even a learner yet; the group was left with two voters, and the
    # kill of one of them during that removal's joint change wedged it for good.
    # dead-voter-removed-came-back-5750 (fuzz --nodes 5 --topology --client-faults --quiesce-ticks 2 --partitions
    # 8): the same with a voter the member table had declared DEAD, removed while its replacement was restarting;
    # the node came back, but the group had two voters, and a kill of one wedged it. Placement now never removes a
    # voter before every ring target votes: it is swapped out for its replacement in one joint change, or waits.
    # ghost-member-after-lost-join-2833 (fuzz --nodes 5 --topology --client-faults --read-mode lease
    # --quiesce-ticks 2 --partitions 8): a new node's join committed but its answer was lost; booted again, it
    # picked a new id and joined as a second member at the same address. The first id stayed ACTIVE until declared
    # dead, and the ring placed a new partition on it and on a node killed earlier (not yet declared dead): two of
    # its three voters never answered. A joining node now records its id before it asks, and rejoins under it.
    # harness-stale-ring-kill-3128 (fuzz --nodes 4 --topology --client-faults --read-mode lease --quiesce-ticks 2
    # --partitions 6; a harness bug, not Borough's): the harness judged where a partition not registered yet would
    # be placed by the first running node's ring, which had not seen a new node join; it killed that new node while
    # another killed node was not yet declared dead, and the partition was registered on both. Every running
    # node's ring counts now, and that kill is refused.
    result = run_scenario(Scenario.from_json((SAVED / name).read_text()))
    assert result.ok, result.report()
