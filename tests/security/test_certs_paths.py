"""``borough certs`` with a CA key in a directory that does not exist yet (the README's ``--ca-key safe/ca.key``):
the directory is made, private to its owner; a path that cannot be written is one line, not a traceback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from click.testing import CliRunner

from borough.cli import main


def test_the_ca_key_directory_is_made_private_when_missing(tmp_path: Path) -> None:
    key = tmp_path / "safe" / "deeper" / "ca.key"
    result = CliRunner().invoke(
        main, ["certs", "create-ca", "--certs-dir", str(tmp_path / "certs"), "--ca-key", str(key)], env={}
    )
    assert result.exit_code == 0, result.output
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "safe" / "deeper").stat().st_mode) & 0o077 == 0


def test_an_unwritable_key_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    result = CliRunner().invoke(
        main,
        ["certs", "create-ca", "--certs-dir", str(tmp_path / "certs"), "--ca-key", str(tmp_path / "file" / "ca.key")],
        env={},
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "certs" / "ca.crt")
