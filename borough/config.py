"""Node settings: one frozen record, built from keyword arguments, ``BOROUGH_*`` environment variables and
defaults, in that order of precedence. Every bad setting is a ``ConfigError`` that names the setting and says
what would be accepted. This module knows nothing about how the settings are used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from borough.errors import ConfigError

__all__ = ["SETTINGS", "NodeConfig", "parse_address", "reference_markdown"]

DEFAULT_LISTEN = "127.0.0.1:7000"
DEFAULT_DATA_DIR = "./borough-data"


def parse_address(value: str, *, setting: str = "address") -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:7000``); raise ConfigError naming ``setting`` when malformed."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{setting}: {value!r} is not HOST:PORT (for example 127.0.0.1:7000)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{setting}: port {port} is out of range 0-65535")
    return host, port


def _join_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, Sequence):
        items = [str(v).strip() for v in value]
    else:
        raise ConfigError(f"join: expected HOST:PORT addresses, got {type(value).__name__}")
    result = tuple(v for v in items if v)
    for item in result:
        parse_address(item, setting="join")
    return result


def _positive(name: str) -> Any:
    def check(_inst: Any, _attr: Any, value: float) -> None:
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")

    return check


_MAX_WRITE_BYTES = 4 * 1024 * 1024  # borough.node.records.MAX_WRITE_BYTES (config must not import the node layer)


@attrs.frozen(kw_only=True)
class NodeConfig:
    """Everything a node can be told; ``SETTINGS`` says what each setting means. Times are seconds of trio time
    (virtual time in simulation)."""

    listen: str = DEFAULT_LISTEN
    advertise: str | None = None
    join: tuple[str, ...] = attrs.field(default=(), converter=_join_list)
    data_dir: str | None = DEFAULT_DATA_DIR
    bootstrap: bool = True
    replicas: int = attrs.field(default=3, validator=_positive("replicas"))
    tick_interval: float = attrs.field(default=0.1, validator=_positive("tick_interval"))
    election_ticks: int = attrs.field(default=10, validator=_positive("election_ticks"))
    heartbeat_ticks: int = attrs.field(default=1, validator=_positive("heartbeat_ticks"))
    quiesce_ticks: int = attrs.field(default=1)
    request_timeout: float = attrs.field(default=10.0, validator=_positive("request_timeout"))
    dead_after: float = attrs.field(default=30.0, validator=_positive("dead_after"))
    max_key_bytes: int = attrs.field(default=64 * 1024, validator=_positive("max_key_bytes"))
    max_value_bytes: int = attrs.field(default=1024 * 1024, validator=_positive("max_value_bytes"))
    max_uncommitted_bytes: int = attrs.field(default=32 * 1024 * 1024, validator=_positive("max_uncommitted_bytes"))
    max_msg_bytes: int = attrs.field(default=1024 * 1024, validator=_positive("max_msg_bytes"))
    snapshot_entries: int = attrs.field(default=10_000, validator=_positive("snapshot_entries"))
    session_expiry: float = attrs.field(default=900.0, validator=_positive("session_expiry"))
    max_snapshot_sends: int = attrs.field(default=4, validator=_positive("max_snapshot_sends"))
    max_partition_creates_per_second: int = attrs.field(
        default=1000, validator=_positive("max_partition_creates_per_second")
    )
    max_connections: int = attrs.field(default=1024, validator=_positive("max_connections"))
    max_handshaking: int = attrs.field(default=128, validator=_positive("max_handshaking"))
    max_snapshot_receives: int = attrs.field(default=4, validator=_positive("max_snapshot_receives"))
    snapshot_bytes_per_second: int = attrs.field(default=4 * 1024 * 1024)
    max_moving_partitions: int = attrs.field(default=8, validator=_positive("max_moving_partitions"))
    read_mode: str = attrs.field(default="safe")
    fsync: bool = True
    certs_dir: str | None = None
    metrics_listen: str | None = None
    insecure: bool = False
    seed: int | None = None
    gc_threshold: int = attrs.field(default=50_000)

    @gc_threshold.validator
    def _check_gc_threshold(self, _attr: Any, value: int) -> None:
        if type(value) is not int or value < 0:
            raise ConfigError(
                f"gc_threshold must be 0 (leave the interpreter's alone) or a positive count, got {value!r}"
            )

    @snapshot_bytes_per_second.validator
    def _check_snapshot_rate(self, _attr: Any, value: int) -> None:
        if value < 0:
            raise ConfigError(f"snapshot_bytes_per_second must be 0 (unbounded) or positive, got {value!r}")

    @quiesce_ticks.validator
    def _check_quiesce_ticks(self, _attr: Any, value: int) -> None:
        if type(value) is not int or value < 0:
            raise ConfigError(f"quiesce_ticks must be 0 (never quiesce) or a positive number of ticks, got {value!r}")

    @read_mode.validator
    def _check_read_mode(self, _attr: Any, value: str) -> None:
        if value not in ("safe", "lease"):
            raise ConfigError(f"read_mode must be 'safe' or 'lease', got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.max_key_bytes + self.max_value_bytes > _MAX_WRITE_BYTES:
            raise ConfigError(
                f"max_key_bytes + max_value_bytes must be at most {_MAX_WRITE_BYTES} (one write is one Raft entry, "
                "which must fit in a message between nodes); send larger payloads as streams attached to requests"
            )
        parse_address(self.listen, setting="listen")
        if self.advertise is not None:
            parse_address(self.advertise, setting="advertise")
        if self.metrics_listen is not None:
            parse_address(self.metrics_listen, setting="metrics_listen")

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> NodeConfig:
        """Settings from ``BOROUGH_<NAME>`` variables, then ``overrides`` (keyword arguments) on top."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        fields = {f.name: f for f in attrs.fields(cls)}
        for name, field in fields.items():
            raw = env.get(f"BOROUGH_{name.upper()}")
            if raw is None:
                continue
            values[name] = _from_text(name, raw, field.default)
        for name, value in (overrides or {}).items():
            if name not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"unknown setting {name!r}; known settings: {known}")
            values[name] = value
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad setting: {exc}") from exc


def _from_text(name: str, raw: str, default: Any) -> Any:
    env_name = f"BOROUGH_{name.upper()}"
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{env_name}={raw!r}: expected true or false")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{env_name}={raw!r}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{env_name}={raw!r}: expected a number of seconds") from None
    if name in ("data_dir", "certs_dir") and raw.strip() == "":
        return None
    if name == "seed":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{env_name}={raw!r}: expected an integer") from None
    return raw


#: What each setting of ``NodeConfig`` means: the one description ``borough serve --help`` and
#: docs/configuration.md show (a test keeps all three in step).
SETTINGS: dict[str, str] = {
    "listen": "HOST:PORT to listen on (port 0: any free port)",
    "advertise": "HOST:PORT other nodes and clients reach this node at (default: the listen address)",
    "join": "HOST:PORT,... of nodes of the cluster to join (empty: start a new cluster, or resume one)",
    "data_dir": "data directory (LevelDB); in memory when none is given to open_node",
    "bootstrap": "create a new cluster when the data dir is empty and join is empty (false: wait for node.join)",
    "replicas": "replicas per partition",
    "tick_interval": "seconds per Raft tick",
    "election_ticks": "ticks without a leader before an election (randomised up to twice that)",
    "heartbeat_ticks": "ticks between a leader's heartbeats",
    "quiesce_ticks": "idle ticks in a row (nothing in flight, every replica holding the whole log, no read since the "
    "tick before) after which a group's leader lets the group go quiet: no heartbeats, no timers until a request or "
    "message wakes it (0: never)",
    "request_timeout": "seconds every operation may take, on the caller and on the server",
    "dead_after": "seconds a member may be unreachable before it is marked dead and its replicas move",
    "max_key_bytes": "largest key (encoded bytes)",
    "max_value_bytes": "largest value (encoded bytes); bigger payloads belong in streams attached to requests",
    "max_uncommitted_bytes": "bytes of uncommitted entries a group's leader accepts before refusing proposals",
    "max_msg_bytes": "bytes of entries in one Raft append",
    "snapshot_entries": "compact a group's log once this many entries are applied past its last snapshot",
    "max_snapshot_sends": "snapshots this node streams at once",
    "max_partition_creates_per_second": "partitions one caller may create per second through this node",
    "max_connections": "connections peers and clients may hold open to this node at once",
    "max_handshaking": "connections still in their TLS or HELLO handshake at once",
    "max_snapshot_receives": "snapshots this node receives at once (past it a sender is told Overloaded)",
    "snapshot_bytes_per_second": "bytes per second of snapshot data this node sends, all streams, and as many it "
    "receives: how fast partitions move when nodes join, leave or die (0: no limit; raise it where cores and disk "
    "are to spare, lower it if foreground latency suffers during a move)",
    "max_moving_partitions": "partitions this node moves towards the ring at once",
    "read_mode": "linearizable reads: safe (a ReadIndex round per batch of reads) or lease (none while the leader's "
    "lease holds; assumes clocks that keep time through pauses, see docs/architecture.md)",
    "fsync": "fsync every Raft write (off loses acknowledged writes on power loss)",
    "certs_dir": "mutual TLS: directory with ca.crt, node.crt, node.key (see borough certs)",
    "metrics_listen": "HOST:PORT of the HTTP listener: /metrics (Prometheus), /status (JSON), / (status page)",
    "insecure": "run without TLS on a non-loopback address (anyone who reaches the port can act as a member)",
    "seed": "seed of the node's randomness (default: drawn from the OS)",
    "session_expiry": "seconds of log time after its last write a client session is forgotten by a partition "
    "(it must outlast any caller's deadline)",
    "gc_threshold": "while a node runs, the interpreter's cycle collector takes its young generation every this "
    "many net allocations, or more rarely if the application asked for that (CPython's default, 700, costs a node "
    "with many partitions much CPU and long pauses; 0: leave the interpreter's settings alone)",
}


def reference_markdown() -> str:
    """docs/configuration.md: every setting, its environment variable, default and meaning."""
    lines = [
        "# Configuration",
        "",
        "Every setting can be given to `borough serve` as a flag, as a `BOROUGH_*` environment variable, or to",
        "`borough.open_node(...)` as a keyword argument (keyword arguments win over the environment). Times are",
        "seconds. This page is generated from `borough/config.py` (`SETTINGS`); a test keeps it in step.",
        "",
        "| setting | flag | environment | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for field in attrs.fields(NodeConfig):
        flag = "--data" if field.name == "data_dir" else "--" + field.name.replace("_", "-")
        default = "none" if field.default is None else repr(field.default).replace("|", "\\|")
        lines.append(
            f"| `{field.name}` | `{flag}` | `BOROUGH_{field.name.upper()}` | `{default}` | {SETTINGS[field.name]} |"
        )
    return "\n".join(lines) + "\n"
