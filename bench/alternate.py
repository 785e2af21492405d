"""Two or more trees, measured in turns: ``bench/per_call.py`` run in each, alternately, and the medians.

This machine's speed drifts by 20 to 50% within minutes, so a change is judged by running the tree before it and
the tree after it in turn, in the same window, and comparing the pairs and their medians. Each run is the tree's
own ``bench/per_call.py`` with the same arguments (its servers, its client); the figures are its ops/s, its p50
and its CPU a put: the load generator's and the three servers' together. The order of the trees alternates from
one turn to the next (A B, B A, ...), so a steady drift favours none of them; and each tree after the first is
also compared with the first turn by turn: the median of its ratios and their range, which drift moves less than
it moves the medians. A first run of the first tree, not counted, warms the machine up (``--warmup``). Run the
same tree twice (``. .``) to see what a ratio means on the machine of the day: on 2026-12-07, over 64 partitions
at 64 clients, four turns of one tree against itself gave ops/s x1.087 (1.027 to 1.183), and six turns in a
slower hour x1.091 (0.777 to 1.342): a change of less than 10 to 20% is not told apart from drift in such runs.
Counts that do not drift (``bench/sim_cost.py``: turns, messages, frames) are the steadier measure.

    git worktree add /tmp/before HEAD~3
    .venv/bin/python bench/alternate.py --runs 6 --args "put --clients 64 --seconds 3" . /tmp/before

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import statistics
import subprocess
import sys

RATE = re.compile(r": ([\d,]+) ops/s, p50 ([\d.]+) ms")
CPU = re.compile(r"^\s*(?:load generator|server \d+):\s+([\d.]+) us/op", re.MULTILINE)


def measure(tree: pathlib.Path, args: list[str]) -> tuple[float, float, float] | None:
    """(ops/s, p50 ms, CPU us a put over every process) of one run in ``tree``, or None if it printed none."""
    run = subprocess.run(
        [sys.executable, str(tree / "bench" / "per_call.py"), *args],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    rate = RATE.search(run.stdout)
    if rate is None:
        print(f"  {tree}: no figures ({run.stderr.strip()[-200:]})")
        return None
    cpu = sum(float(x) for x in CPU.findall(run.stdout))
    return float(rate.group(1).replace(",", "")), float(rate.group(2)), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=pathlib.Path, help="working trees (the first is usually '.')")
    parser.add_argument("--runs", type=int, default=4, help="turns per tree")
    parser.add_argument("--warmup", type=int, default=1, help="runs of the first tree made first and not counted")
    parser.add_argument("--args", default="put --clients 1 --seconds 3", help="bench/per_call.py's arguments")
    opts = parser.parse_args()
    args = shlex.split(opts.args)
    trees = [tree.resolve() for tree in opts.trees]
    # Figures by tree (by its place in the list: the same tree may be given twice) and turn.
    results: list[dict[int, tuple[float, float, float]]] = [{} for _ in trees]
    for _ in range(opts.warmup):  # (the first run after a pause is slower: caches, the disk)
        measure(trees[0], args)
    for turn in range(opts.runs):
        order = list(enumerate(trees))
        for place, tree in order if turn % 2 == 0 else reversed(order):
            figures = measure(tree, args)
            if figures is not None:
                results[place][turn] = figures
                print(f"turn {turn + 1} {tree}: {figures[0]:,.0f} ops/s, p50 {figures[1]:.2f} ms, {figures[2]:.1f} us")
    print(f"per_call.py {opts.args}, {opts.runs} turns (medians):")
    for tree, runs in zip(trees, results, strict=True):
        if runs:
            rate, p50, cpu = (statistics.median(run[i] for run in runs.values()) for i in range(3))
            print(f"  {tree}: {rate:,.0f} ops/s, p50 {p50:.2f} ms, {cpu:.1f} us of CPU an op ({len(runs)} runs)")
    for tree, runs in zip(trees[1:], results[1:], strict=True):
        print(f"  {tree} against {trees[0]}, turn by turn: {paired(results[0], runs)}")


def paired(first: dict[int, tuple[float, float, float]], other: dict[int, tuple[float, float, float]]) -> str:
    """The ratios of ``other``'s figures to ``first``'s in the turns both have: median (range)."""
    turns = sorted(first.keys() & other.keys())
    if not turns:
        return "no turn with figures from both"
    parts = []
    for i, name in ((0, "ops/s"), (1, "p50"), (2, "CPU an op")):
        ratios = sorted(other[t][i] / first[t][i] for t in turns)
        parts.append(f"{name} x{statistics.median(ratios):.3f} ({ratios[0]:.3f} to {ratios[-1]:.3f})")
    return ", ".join(parts) + f" over {len(turns)} turns"


if __name__ == "__main__":
    main()
