"""Shared vocabulary: how user keys and values become bytes (the key/value codec).

A key is ``str`` (stored and ordered as UTF-8) or ``bytes``; a value is anything CBOR encodes, encoded once by
the caller and carried as bytes through the log to the store. Both sides of the wire and the store use these
functions, so a key or value is judged the same way everywhere. A stored value was encoded by some client, so
it is decoded as input from outside: bounded work and an allow-list of tags (``cbor_safe``). A leaf module: it
needs only cbor2, ``borough.cbor_safe`` and ``borough.errors``, so a client can encode values without loading
the store or LevelDB.
"""

from __future__ import annotations

from typing import Any

import cbor2

from borough.cbor_safe import CborRejected, safe_loads
from borough.errors import StorageError

__all__ = ["decode_value", "encode_bound", "encode_key", "encode_value"]


def encode_key(key: str | bytes) -> bytes:
    """The bytes a user key is stored and ordered by: a ``str`` as UTF-8, ``bytes`` as they are.

    Raises ``TypeError`` for any other type and ``ValueError`` for an empty key or a ``str`` that is not valid
    Unicode text (lone surrogates cannot be encoded as UTF-8).
    """
    if isinstance(key, str):
        kb = _utf8(key)
    elif isinstance(key, bytes):
        kb = bytes(key)  # no copy for plain bytes; a bytes subclass becomes plain bytes
    else:
        raise TypeError(f"a key must be str or bytes, not {type(key).__name__}: {key!r:.60}")
    if not kb:
        raise ValueError("a key must not be empty: use at least one character or byte")
    return kb


def encode_bound(bound: str | bytes) -> bytes:
    """Like ``encode_key`` for an iteration bound, where the empty key is allowed (it sorts before any key)."""
    if isinstance(bound, str):
        return _utf8(bound)
    if isinstance(bound, bytes):
        return bytes(bound)
    raise TypeError(f"an iteration bound must be str or bytes, not {type(bound).__name__}: {bound!r:.60}")


def _utf8(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"key {s!r:.60} is not valid Unicode text ({exc.reason}); use bytes for raw data") from None


def encode_value(value: object) -> bytes:
    """Encode a value once, as CBOR, for a ``("put", key, encoded)`` op (and for the Raft log commands).

    Raises ``TypeError`` naming the type CBOR cannot encode, or ``ValueError`` (a cyclic structure, ...).
    """
    try:
        return cbor2.dumps(value)
    except cbor2.CBOREncodeValueError as exc:
        raise ValueError(f"value cannot be encoded as CBOR: {exc}; store plain data") from None
    except cbor2.CBOREncodeError as exc:
        raise TypeError(
            f"value of type {type(value).__name__} (or something inside it) cannot be encoded as CBOR: {exc}; "
            "store str, bytes, numbers, bools, None, lists and dicts of them, or another type cbor2 encodes"
        ) from None


def decode_value(data: bytes) -> Any:
    """The inverse of ``encode_value``. Raises ``StorageError`` if ``data`` is not CBOR Borough accepts (see
    ``cbor_safe``: bounded size and work, an allow-list of tags)."""
    try:
        return safe_loads(data)
    except CborRejected as exc:
        raise StorageError(
            f"a stored value cannot be decoded ({exc}): it is corrupt, or a client stored CBOR that Borough does "
            f"not accept; overwrite or delete it"
        ) from None
