"""Every code example in README.md and docs/ runs in CI, as written.

Each fenced block whose language is ``python`` (``py``) or ``sh`` (``bash``, ``shell``, ``console``) is found
anywhere in ``README.md`` and ``docs/**/*.md`` (so a new page or a rewritten example is picked up by itself) and
handled by the marker on the line right above its fence, an HTML comment that neither GitHub nor mkdocs shows:

* no marker: **run** it as a script in an empty temporary directory: Python with this interpreter, a shell
  block with ``bash -euo pipefail`` (the ``borough`` command on ``PATH``); it must exit 0. Every
  ``127.0.0.1:70NN`` in it becomes a free port first (the same port for the same address), so examples can
  say ``127.0.0.1:7000`` without colliding with anything else on the machine;
* ``<!-- example: cluster -->``: the same against a live cluster of three ``borough serve`` processes (one
  cluster for the whole module): ``127.0.0.1:7000``, ``:7001`` and ``:7002`` become their addresses, and
  ``BOROUGH_CLUSTER`` names them all;
* ``<!-- example: pytest -->``: a test module; it is written to a file in an empty directory (so none of this
  project's pytest settings apply) and run with ``python -m pytest``; every test in it must pass;
* ``<!-- example: same-as PATH -->``: code quoted from a file that CI runs; the block must appear in ``PATH``
  verbatim;
* ``<!-- example: skip REASON -->``: not run, and the reason says why (a fragment that names objects of a
  running program, a command for other machines' addresses, one that runs until stopped) and where the same
  thing is tested. A Python fragment must still parse (top-level ``await`` allowed).

Blocks in any other language (``text``, none: program output, diagrams) are not code and are left alone.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh", "console": "sh"}
MODES = ("run", "cluster", "pytest", "same-as", "skip")
MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<mode>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
EXAMPLE_ADDRESS = re.compile(r"127\.0\.0\.1:70\d\d")
TIMEOUT = 180


@attrs.frozen
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str  # "python" or "sh"
    code: str
    mode: str
    arg: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse(path: Path, root: Path = ROOT) -> tuple[list[Block], list[str]]:
    """The code blocks of one Markdown file, and its problems (a marker not right above a code fence, an
    unknown mode, a fence never closed)."""
    rel = str(path.relative_to(root))
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker is not None:
            nxt = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if nxt is None or nxt["lang"] not in LANGUAGES:
                problems.append(f"{rel}:{i + 1}: an example marker must stand right above a python or sh code fence")
            if marker["mode"] not in MODES:
                problems.append(f"{rel}:{i + 1}: unknown example mode {marker['mode']!r} (one of {', '.join(MODES)})")
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent, start = fence["indent"], i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            problems.append(f"{rel}:{i + 1}: a code fence is never closed")
            break
        i = end + 1
        lang = LANGUAGES.get(fence["lang"])
        if lang is None:
            continue
        code = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines[start + 1 : end])
        above = MARKER.match(lines[start - 1]) if start > 0 else None
        mode, arg = (above["mode"], above["arg"]) if above is not None else ("run", "")
        blocks.append(Block(rel, start + 1, lang, code + "\n", mode, arg))
    return blocks, problems


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in parse(path)[0]]


BLOCKS = all_blocks()
MARKS = {"cluster": (pytest.mark.e2e,)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any BOROUGH_* setting (an example must not depend on the caller's),
    with this interpreter's scripts (``borough``) first on PATH and the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOROUGH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def execute(block: Block, cwd: Path, code: str, env: dict[str, str]) -> None:
    args = [sys.executable, "-c", code] if block.lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (
        f"the example at {block.id} failed (exit {result.returncode}):\n{code}\n--- stdout\n"
        f"{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


# ----------------------------------------------------------------------------------------------- the conventions


def test_the_examples_follow_the_conventions() -> None:
    problems = [p for path in documents() for p in parse(path)[1]]
    for b in BLOCKS:
        if b.mode == "skip" and len(b.arg) < 20:
            problems.append(f"{b.id}: a skipped example needs a reason (what it is, and where it is tested)")
        if b.mode == "same-as" and not (ROOT / b.arg).is_file():
            problems.append(f"{b.id}: same-as names {b.arg!r}, which is not a file of the repository")
        if b.mode in ("run", "cluster", "pytest") and b.arg:
            problems.append(f"{b.id}: mode {b.mode} takes no argument ({b.arg!r})")
        if b.mode == "pytest" and b.lang != "python":
            problems.append(f"{b.id}: a pytest example must be python")
    assert problems == []
    # The checks below see the examples this test counts: the README and the guides have runnable ones.
    assert {b.path for b in BLOCKS if b.mode != "skip"} >= {"README.md", "docs/tutorial.md", "docs/testing.md"}


def test_the_parser_finds_blocks_markers_and_their_problems(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    doc.write_text(
        "text\n```python\nprint(1)\n```\n<!-- example: skip a fragment: names a running node -->\n```sh\n"
        "borough x\n```\n```text\nout\n```\n- item\n\n    ```py\n    x = 1\n    ```\n<!-- example: bogus -->\n"
        "<!-- example: run -->\ntext\n",
        encoding="utf-8",
    )
    blocks, problems = parse(doc, tmp_path)
    assert [(b.line, b.lang, b.code, b.mode, b.arg) for b in blocks] == [
        (2, "python", "print(1)\n", "run", ""),
        (6, "sh", "borough x\n", "skip", "a fragment: names a running node"),
        (14, "python", "x = 1\n", "run", ""),
    ]
    assert len(problems) == 3 and "bogus" in problems[1]


# ----------------------------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=MARKS.get(b.mode, ())) for b in BLOCKS])
def test_the_example(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One test per example, whatever its mode (so a mode with no example yet leaves no empty test behind)."""
    if block.mode == "run":
        ports: dict[str, str] = {}
        code = EXAMPLE_ADDRESS.sub(lambda m: ports.setdefault(m[0], f"127.0.0.1:{free_port()}"), block.code)
        execute(block, tmp_path, code, clean_env())
    elif block.mode == "cluster":
        cluster: list[str] = request.getfixturevalue("cluster")
        code = block.code
        for n, address in enumerate(cluster):
            code = code.replace(f"127.0.0.1:700{n}", address)
        assert not EXAMPLE_ADDRESS.search(code), f"{block.id}: a cluster example may name 127.0.0.1:7000-7002 only"
        execute(block, tmp_path, code, clean_env(BOROUGH_CLUSTER=",".join(cluster)))
    elif block.mode == "pytest":
        run_pytest_example(block, sys.executable, tmp_path)
    elif block.mode == "same-as":
        source = (ROOT / block.arg).read_text(encoding="utf-8")
        assert block.code in source, f"{block.id} shows code that {block.arg} does not have:\n{block.code}"
    else:
        assert block.mode == "skip"
        if block.lang == "python":
            compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


def run_pytest_example(block: Block, python: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    (cwd / "pytest.ini").write_text("[pytest]\n")  # this directory is the root: no project settings apply
    (cwd / "test_example.py").write_text(block.code, encoding="utf-8")
    result = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0 and " passed" in result.stdout, (
        f"the test at {block.id} failed:\n{block.code}\n--- pytest says\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    )


def wait_serving(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while "serving at" not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"borough serve exited early:\n{log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"borough serve did not start within 60 s:\n{log.read_text()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Three ``borough serve`` processes, as the tutorial starts them; their addresses."""
    where = tmp_path_factory.mktemp("cluster")
    procs: list[subprocess.Popen[bytes]] = []
    addresses: list[str] = []
    try:
        for n in range(3):
            addresses.append(f"127.0.0.1:{free_port()}")
            args = ["borough", "serve", "--listen", addresses[-1], "--data", str(where / f"n{n}")]
            if n:
                args += ["--join", addresses[0]]
            log = where / f"n{n}.log"
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(args, stdout=out, stderr=out, env=clean_env(), cwd=where))
            wait_serving(procs[-1], log)
        yield addresses
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)


@pytest.mark.e2e
def test_the_testing_guide_installs_what_its_tests_need(tmp_path: Path) -> None:
    """docs/testing.md's install line, from a checkout, into a new virtual environment with nothing else in it;
    then its test examples pass there (so the ``testing`` extra and the named packages are all they need) and
    ``borough.testing.strategies`` imports (it needs Hypothesis, which the extra brings)."""
    doc = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    [line] = re.findall(r"From a checkout: `pip install ([^`]+)`", doc)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", *shlex.split(line)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run(
        [python, "-c", "import borough.testing.strategies, hypothesis; print(borough.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert check.returncode == 0 and str(venv) in check.stdout, check.stderr[-3000:]
    tests = [b for b in BLOCKS if b.path == "docs/testing.md" and b.mode == "pytest"]
    assert tests
    for n, block in enumerate(tests):
        where = tmp_path / f"example{n}"
        where.mkdir()
        run_pytest_example(block, python, where, env=env)
