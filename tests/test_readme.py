"""The README's code runs as written (with a free port and a temporary data dir)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_embed_example_runs(tmp_path: Path) -> None:
    [embed] = [b for b in python_blocks((ROOT / "README.md").read_text()) if "open_node(" in b]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = embed.replace("127.0.0.1:7001", f"127.0.0.1:{port}").replace('"data/b"', repr(str(tmp_path / "b")))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "{'visits': 1}" in result.stdout and "'first': 'Ada'" in result.stdout
