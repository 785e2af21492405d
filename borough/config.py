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

__all__ = ["NodeConfig", "parse_address"]

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
    """Everything a node can be told. Times are seconds of trio time (virtual time in simulation)."""

    listen: str = DEFAULT_LISTEN
    #: The address other nodes and clients use to reach this node; defaults to ``listen`` (with the real port
    #: when ``listen`` asks for port 0).
    advertise: str | None = None
    join: tuple[str, ...] = attrs.field(default=(), converter=_join_list)
    data_dir: str | None = DEFAULT_DATA_DIR  # None: keep everything in memory (tests, simulation)
    #: Create a new cluster when the data dir is empty and ``join`` is empty. With False the node waits for
    #: ``await node.join(address)``.
    bootstrap: bool = True
    replicas: int = attrs.field(default=3, validator=_positive("replicas"))
    #: Raft timing: one tick every ``tick_interval``; elections after ``election_ticks`` to twice that.
    tick_interval: float = attrs.field(default=0.1, validator=_positive("tick_interval"))
    election_ticks: int = attrs.field(default=10, validator=_positive("election_ticks"))
    heartbeat_ticks: int = attrs.field(default=1, validator=_positive("heartbeat_ticks"))
    #: Default bound on every public call, on top of the caller's own cancel scope.
    request_timeout: float = attrs.field(default=10.0, validator=_positive("request_timeout"))
    #: A member unreachable this long is marked dead in the member table.
    dead_after: float = attrs.field(default=30.0, validator=_positive("dead_after"))
    #: Largest accepted key and value (encoded bytes). Bigger payloads belong in streams.
    max_key_bytes: int = attrs.field(default=64 * 1024, validator=_positive("max_key_bytes"))
    max_value_bytes: int = attrs.field(default=1024 * 1024, validator=_positive("max_value_bytes"))
    #: Raft flow control per group.
    max_uncommitted_bytes: int = attrs.field(default=32 * 1024 * 1024, validator=_positive("max_uncommitted_bytes"))
    max_msg_bytes: int = attrs.field(default=1024 * 1024, validator=_positive("max_msg_bytes"))
    #: Compact a group's log once this many entries are applied past its last snapshot.
    snapshot_entries: int = attrs.field(default=10_000, validator=_positive("snapshot_entries"))
    #: Seconds of log time after its last write a client session is forgotten by a partition (see
    #: ``borough.node.session_table``). A leader stamps it into each write, so replicas never disagree; it must
    #: outlast any caller's deadline, or a retry after it could apply a write twice.
    session_expiry: float = attrs.field(default=900.0, validator=_positive("session_expiry"))
    #: Snapshots this node streams at once (catching up followers, moving partitions to new members).
    max_snapshot_sends: int = attrs.field(default=4, validator=_positive("max_snapshot_sends"))
    #: Partitions one caller (a client or another node) may create per second through this node, in bursts of as
    #: many; past it the caller is told Overloaded (and its client backs off and retries).
    max_partition_creates_per_second: int = attrs.field(
        default=1000, validator=_positive("max_partition_creates_per_second")
    )
    #: Connections peers and clients may hold open to this node at once, and of those still in their handshake
    #: (TLS, then HELLO); past either a new connection is closed at once (counted and logged).
    max_connections: int = attrs.field(default=1024, validator=_positive("max_connections"))
    max_handshaking: int = attrs.field(default=128, validator=_positive("max_handshaking"))
    #: Snapshots this node receives at once (each buffers one chunk); past it a sender is told Overloaded.
    max_snapshot_receives: int = attrs.field(default=4, validator=_positive("max_snapshot_receives"))
    #: Bytes per second of snapshot data this node sends, all streams together (0: unbounded). A rebalance
    #: then never takes the whole link or disk from foreground traffic.
    snapshot_bytes_per_second: int = attrs.field(default=64 * 1024 * 1024)
    #: Partitions this node moves towards the ring at once (each one placement step at a time).
    max_moving_partitions: int = attrs.field(default=8, validator=_positive("max_moving_partitions"))
    #: Linearizable reads: "safe" (ReadIndex, a heartbeat round per batch of reads) or "lease".
    read_mode: str = attrs.field(default="safe")
    #: fsync every Raft write (group-committed). Turning it off loses acknowledged writes on power loss.
    fsync: bool = True
    #: Mutual TLS: a directory with ``ca.crt``, ``node.crt`` and ``node.key`` (see ``borough certs``). None: no TLS,
    #: which a node listening on a non-loopback address refuses unless ``insecure``.
    certs_dir: str | None = None
    #: Run without TLS on a non-loopback address: anyone who reaches the port can act as a member.
    insecure: bool = False
    #: Seed for the node's random.Random; None draws one from the OS (simulation always passes one).
    seed: int | None = None

    @snapshot_bytes_per_second.validator
    def _check_snapshot_rate(self, _attr: Any, value: int) -> None:
        if value < 0:
            raise ConfigError(f"snapshot_bytes_per_second must be 0 (unbounded) or positive, got {value!r}")

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
