"""Two or more trees, measured in turns: ``bench/per_call.py`` run in each, alternately, and the medians.

This machine's speed drifts by 20 to 50% within minutes, so a change is judged by running the tree before it and
the tree after it in turn, in the same window, and comparing the pairs and their medians. Each run is the tree's
own ``bench/per_call.py`` with the same arguments (its servers, its client); the figures are its ops/s, its p50
and its CPU a put: the load generator's and the three servers' together.

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
    parser.add_argument("--args", default="put --clients 1 --seconds 3", help="bench/per_call.py's arguments")
    opts = parser.parse_args()
    args = shlex.split(opts.args)
    trees = [tree.resolve() for tree in opts.trees]
    results: dict[pathlib.Path, list[tuple[float, float, float]]] = {tree: [] for tree in trees}
    for turn in range(opts.runs):
        for tree in trees:
            figures = measure(tree, args)
            if figures is not None:
                results[tree].append(figures)
                print(f"turn {turn + 1} {tree}: {figures[0]:,.0f} ops/s, p50 {figures[1]:.2f} ms, {figures[2]:.1f} us")
    print(f"per_call.py {opts.args}, {opts.runs} turns (medians):")
    for tree, runs in results.items():
        if runs:
            rate, p50, cpu = (statistics.median(run[i] for run in runs) for i in range(3))
            print(f"  {tree}: {rate:,.0f} ops/s, p50 {p50:.2f} ms, {cpu:.1f} us of CPU an op ({len(runs)} runs)")


if __name__ == "__main__":
    main()
