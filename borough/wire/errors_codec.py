"""How typed errors cross the wire: a registry mapping exception classes to and from CBOR maps.

Owns the error map carried by a RESET frame: ``{"type": name, "message": str(exc), "fields": {...}}``. A
registered ``BoroughError`` arrives as the same class with the same message (and its structured fields, e.g.
``NotFound.key`` or ``NotLeader.leader_address``); a subclass that is not registered arrives as its nearest
registered base; any other exception arrives as ``RemoteError(type_name, message)``. It knows nothing of
frames, streams or trio; the node layer registers its own error types on ``default_registry``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import cbor2

from borough import errors

__all__ = ["ErrorRegistry", "default_registry"]

FieldsOf = Callable[[BaseException], dict[str, Any]]
Build = Callable[[str, dict[str, Any]], BaseException]


@attrs.frozen
class _Entry:
    cls: type[BaseException]
    name: str
    fields: FieldsOf
    build: Build


def _no_fields(_exc: BaseException) -> dict[str, Any]:
    return {}


class ErrorRegistry:
    """Classes that cross the wire typed. Thread-unsafe by design: register at import/startup time."""

    def __init__(self) -> None:
        self._by_cls: dict[type[BaseException], _Entry] = {}
        self._by_name: dict[str, _Entry] = {}

    def register(
        self,
        cls: type[BaseException],
        *,
        name: str | None = None,
        fields: FieldsOf | None = None,
        build: Build | None = None,
    ) -> None:
        """Let ``cls`` cross the wire. ``fields(exc)`` gives CBOR-encodable structured data; ``build(message,
        fields)`` makes the exception again on the other side (default: ``cls(message)``). ``name`` defaults to
        the class name and must be the same on every node."""
        entry = _Entry(
            cls=cls,
            name=name or cls.__name__,
            fields=fields or _no_fields,
            build=build or (lambda message, _fields: cls(message)),
        )
        self._by_cls[cls] = entry
        self._by_name[entry.name] = entry

    def encode(self, exc: BaseException) -> dict[str, Any]:
        """The error map for ``exc`` (always CBOR-encodable)."""
        for klass in type(exc).__mro__:
            entry = self._by_cls.get(klass)
            if entry is None:
                continue
            try:
                fields = entry.fields(exc)
                cbor2.dumps(fields)
            except Exception:
                break  # unencodable details: fall back to the plain type name and message
            return {"type": entry.name, "message": str(exc), "fields": fields}
        if isinstance(exc, errors.RemoteError):
            return {
                "type": "RemoteError",
                "message": str(exc),
                "fields": {"type_name": exc.type_name, "message": exc.message},
            }
        return {
            "type": "RemoteError",
            "message": str(exc),
            "fields": {"type_name": type(exc).__name__, "message": str(exc)},
        }

    def decode(self, payload: dict[str, Any]) -> BaseException:
        """The exception an error map stands for; unknown or malformed ones become ``RemoteError``. Never
        raises, whatever the peer put in the map: an error that cannot be rebuilt, or whose text cannot be
        shown, still arrives as a ``RemoteError`` saying so."""
        try:
            name = payload.get("type", "Exception")
            message = payload.get("message", "")
            name, message = str(name), str(message)
        except Exception as exc:  # e.g. an integer too large to print
            return errors.RemoteError(
                "ProtocolError", f"the peer sent an error that cannot be shown ({type(exc).__name__})"
            )
        raw_fields = payload.get("fields")
        fields: dict[str, Any] = raw_fields if isinstance(raw_fields, dict) else {}
        entry = self._by_name.get(name)
        if entry is not None:
            try:
                error = entry.build(message, fields)
                str(error)  # the caller will print it: fields that cannot be shown must not surface later
                return error
            except Exception:
                pass  # the peer sent fields we cannot use; still report what it said
        return errors.RemoteError(name, message)


def _not_found_fields(exc: BaseException) -> dict[str, Any]:
    assert isinstance(exc, errors.NotFound)
    return {"key": exc.key, "partition": exc.partition}


def _build_not_found(_message: str, f: dict[str, Any]) -> BaseException:
    partition = f.get("partition")
    return errors.NotFound(f.get("key"), partition if isinstance(partition, str) else None)


def _not_leader_fields(exc: BaseException) -> dict[str, Any]:
    assert isinstance(exc, errors.NotLeader)
    return {"partition": exc.partition, "leader": exc.leader, "leader_address": exc.leader_address}


def _build_not_leader(_message: str, f: dict[str, Any]) -> BaseException:
    def opt(key: str) -> str | None:
        v = f.get(key)
        return v if isinstance(v, str) else None

    return errors.NotLeader(str(f.get("partition", "")), leader=opt("leader"), leader_address=opt("leader_address"))


def _remote_fields(exc: BaseException) -> dict[str, Any]:
    assert isinstance(exc, errors.RemoteError)
    return {"type_name": exc.type_name, "message": exc.message, "from_handler": exc.from_handler}


def _build_remote(message: str, f: dict[str, Any]) -> BaseException:
    name, text = str(f.get("type_name", "Exception")), str(f.get("message", message))
    return errors.RemoteError(name, text, from_handler=f.get("from_handler") is not False)


def _make_default() -> ErrorRegistry:
    reg = ErrorRegistry()
    for cls in (
        errors.BoroughError,
        errors.Timeout,
        errors.Unavailable,
        errors.Overloaded,
        errors.ProtocolError,
        errors.LocalProtocolError,
        errors.RemoteProtocolError,
        errors.StorageError,
        errors.ConfigError,
        errors.Forbidden,
    ):
        reg.register(cls)
    reg.register(errors.NotFound, fields=_not_found_fields, build=_build_not_found)
    reg.register(errors.NotLeader, fields=_not_leader_fields, build=_build_not_leader)
    reg.register(errors.RemoteError, fields=_remote_fields, build=_build_remote)
    return reg


default_registry = _make_default()
"""The registry transports use unless given another; the node layer adds its error types here."""
