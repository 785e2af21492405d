"""``python -m borough.testing``: replay a simulated scenario, or run random ones by seed.

    python -m borough.testing replay SCENARIO.json   # a scenario a failing test saved (or its JSON text)
    python -m borough.testing replay --seed 123      # random_scenario(123), as the soak test runs it
    python -m borough.testing fuzz --seeds 0:1000    # random scenarios, stopping at the first failure
    python -m borough.testing fuzz --seeds 0:1000 --nodes 4 --topology --keep-going   # all of them

``--nodes``, ``--clients``, ``--ops``, ``--faults``, ``--partitions``, ``--keys``, ``--client-faults`` and
``--topology`` (also add, decommission and kill nodes, and check placement) set ``random_scenario``'s sizes for
``--seed`` and ``fuzz``, and ``--quiesce-ticks N`` every node's ``quiesce_ticks`` (0: groups never go quiet; the
default, 1: they go quiet and wake many times a run), ``--read-mode lease`` every node's ``read_mode`` (leaders
answer reads from their lease: the schedule's pauses and partitions test its clock assumption); ``--keep-going``
runs every seed and lists the failures at the end.

Each run prints its result and trace digest; a failure prints the full report and exits 1. Runs are
deterministic: a replay gives the same trace digest as the run that failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from borough.testing.scenario import Scenario, random_scenario, run_scenario

__all__ = ["main"]


def _load(text: str) -> Scenario:
    if os.path.exists(text):
        with open(text, encoding="utf-8") as f:
            text = f.read()
    return Scenario.from_json(text)


def _run(scenario: Scenario, verbose: bool) -> bool:
    result = run_scenario(scenario)
    print(
        f"seed {scenario.seed}: {'ok' if result.ok else 'FAILED'}; {len(result.history)} operations, "
        f"{result.virtual_seconds:.1f} virtual s in {result.wall_seconds:.2f} s; trace digest {result.digest}"
    )
    if result.topology:
        print(f"  topology: {'; '.join(result.topology)}")
    if verbose:
        print(result.history.describe())
    if not result.ok:
        print(result.report())
    return result.ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m borough.testing", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="run one scenario again")
    replay.add_argument("scenario", nargs="?", help="a saved scenario file, or its JSON text")
    replay.add_argument("--seed", type=int, help="replay random_scenario(SEED) instead")
    replay.add_argument("--history", action="store_true", help="print the whole history")
    fuzz = commands.add_parser("fuzz", help="run random scenarios until one fails")
    fuzz.add_argument("--seeds", default="0:100", help="START:STOP (default 0:100)")
    fuzz.add_argument("--keep-going", action="store_true", help="run every seed; list the failures at the end")
    for command in (replay, fuzz):
        # random_scenario's sizes (with --seed)
        command.add_argument("--nodes", type=int, default=3)
        command.add_argument("--clients", type=int, default=3)
        command.add_argument("--ops", type=int, default=12, help="operations per client")
        command.add_argument("--faults", type=int, default=6)
        command.add_argument("--partitions", type=int, default=2)
        command.add_argument("--keys", type=int, default=2, help="keys per partition")
        command.add_argument("--client-faults", action="store_true", help="also cut nodes from clients")
        command.add_argument(
            "--topology", action="store_true", help="also add, decommission and kill nodes (and check placement)"
        )
        command.add_argument(
            "--quiesce-ticks", type=int, default=None, help="every node's quiesce_ticks (small: groups go quiet often)"
        )
        command.add_argument(
            "--read-mode", choices=("safe", "lease"), default=None, help="every node's read_mode (default: safe)"
        )
    args = parser.parse_args(argv)
    sizes = {
        "nodes": args.nodes,
        "clients": args.clients,
        "ops": args.ops,
        "faults": args.faults,
        "partitions": args.partitions,
        "keys": args.keys,
        "client_faults": args.client_faults,
        "topology": args.topology,
        "quiesce_ticks": args.quiesce_ticks,
        "read_mode": args.read_mode,
    }
    flags = " ".join(
        f"--{name.replace('_', '-')}" + ("" if value is True else f" {value}")
        for name, value in sizes.items()
        if value is not False and value is not None
    )
    if args.command == "replay":
        if (args.scenario is None) == (args.seed is None):
            parser.error("replay takes a scenario file (or JSON) or --seed, not both")
        scenario = random_scenario(args.seed, **sizes) if args.seed is not None else _load(args.scenario)
        return 0 if _run(scenario, args.history) else 1
    start, _, stop = args.seeds.partition(":")
    failed: list[int] = []
    for seed in range(int(start), int(stop)):
        try:
            ok = _run(random_scenario(seed, **sizes), False)
        except Exception:
            # A node's task raised (a bug that stops the simulation itself): report it like a failed check.
            traceback.print_exc()
            print(f"seed {seed}: CRASHED")
            ok = False
        sys.stdout.flush()
        if not ok:
            print(f"replay: {sys.executable} -m borough.testing replay --seed {seed} {flags}")
            if not args.keep_going:
                return 1
            failed.append(seed)
    if args.keep_going:
        print(f"{int(stop) - int(start)} seeds, {len(failed)} failed: {' '.join(map(str, failed)) or '-'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
