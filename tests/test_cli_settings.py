"""The command line's settings and logging: a flag and a BOROUGH_* variable for every node setting, the
configuration reference kept in step, unknown log levels refused, and extra= fields in both log formats."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from borough.cli import main
from borough.cli_settings import configure_logging, settings_from
from borough.config import SETTINGS, NodeConfig, reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == reference_markdown(), (
        "docs/configuration.md is out of date: regenerate it with "
        "python -c \"from borough.config import reference_markdown; open('docs/configuration.md','w')"
        '.write(reference_markdown())"'
    )


def test_every_setting_has_a_meaning_a_serve_flag_and_an_environment_variable() -> None:
    names = [f.name for f in attrs.fields(NodeConfig)]
    assert sorted(SETTINGS) == sorted(names)
    serve = main.commands["serve"]
    options = {p.name: p for p in serve.params}
    for name in names:
        assert name in options, f"borough serve has no flag for {name}"
        assert f"BOROUGH_{name.upper()}" in (options[name].envvar or [])


def test_flags_reach_the_node_settings_and_unset_ones_are_left_to_the_defaults() -> None:
    assert settings_from({"tick_interval": 0.05, "fsync": False, "seed": None, "log_level": "info"}) == {
        "tick_interval": 0.05,
        "fsync": False,
    }


def test_an_unknown_log_level_is_refused() -> None:
    result = CliRunner().invoke(main, ["serve", "--log-level", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_carry_the_extra_fields(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("info", fmt)
        logging.getLogger("borough.test").warning("peer went away", extra={"peer": "n1@10.0.0.1:7000"})
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    if fmt == "json":
        entry = json.loads(line)
        assert entry["message"] == "peer went away" and entry["peer"] == "n1@10.0.0.1:7000"
        assert entry["level"] == "warning" and entry["logger"] == "borough.test"
    else:
        assert "peer went away" in line and "peer=n1@10.0.0.1:7000" in line
