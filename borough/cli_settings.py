"""What the ``borough`` command line shares between commands: one flag per node setting, and logging.

``setting_options`` turns every field of ``NodeConfig`` into a ``serve`` flag (``--tick-interval``, ...) with its
``BOROUGH_*`` variable and its meaning from ``borough.config.SETTINGS``, so the flags, the environment and
docs/configuration.md cannot drift apart. ``configure_logging`` is the one place logging output is set up:
``text`` or ``json`` lines on stderr, each with the ``extra=`` fields the code attached (the peer, the
partition), and an unknown level refused by click before anything runs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
import click

from borough.config import SETTINGS, NodeConfig

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "configure_logging", "setting_options", "settings_from"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")

#: Flags whose name is not the setting's (the data dir is ``--data``, as it always was).
_FLAGS = {"data_dir": "--data"}
_ENV_ALIASES = {"data_dir": ["BOROUGH_DATA"]}
#: Attributes every ``LogRecord`` has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def setting_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add a flag for every ``NodeConfig`` setting to a click command. A flag left out is None, so the
    environment and then ``NodeConfig``'s default decide (see ``settings_from``)."""
    for field in reversed(attrs.fields(NodeConfig)):
        name = field.name
        env = [f"BOROUGH_{name.upper()}", *_ENV_ALIASES.get(name, [])]
        default = "none" if field.default is None else repr(field.default)
        help_text = f"{SETTINGS[name]} [default: {default}]"
        kind = str(field.type)
        decls = [_flag(name), name]
        if kind == "bool":
            off = "--no-" + _flag(name)[2:]
            fn = click.option(f"{decls[0]}/{off}", name, envvar=env, default=None, show_envvar=True, help=help_text)(fn)
            continue
        param: Any = int if kind.startswith("int") else float if kind == "float" else str
        fn = click.option(*decls, envvar=env, default=None, type=param, show_envvar=True, help=help_text)(fn)
    return fn


def settings_from(values: dict[str, Any]) -> dict[str, Any]:
    """The settings given on the command line (or in its environment variables), for ``open_node``."""
    names = {field.name for field in attrs.fields(NodeConfig)}
    return {name: value for name, value in values.items() if name in names and value is not None}


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(extra.items()))
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log at ``level`` and above to stderr as ``fmt`` lines (``text`` or ``json``), ``extra=`` fields included."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
