"""Bounded CBOR decoding: the one way Borough turns CBOR it did not make itself into Python objects.

Owns the decoder policy for everything that comes from outside this process: frames from peers and stored
values (which clients encoded). Stock cbor2 builds whatever a tag asks for: a tag-30 fraction of two 128 KB
integers costs a second of gcd on the event loop, a 4 MB bignum cannot even be printed in an error message.
Here a document is decoded only if
- it keeps within the work budget of ``cbor_budget`` (item count, depth, composite keys), checked before
  anything is built, and
- every tag in it is on the allow-list ``USER_DATA_TAGS``, with contents the size the tag needs: bignums of at
  most ``max_bignum_bytes`` (so every integer prints, and every fraction's gcd is cheap), a date-time string of
  at most 64 characters, a UUID of 16 bytes. Any other tag (shared values, regular expressions, MIME, IP
  addresses, string references, unknown numbers) is refused.

The allow-list is what Borough's values need: the types ``cbor2.dumps`` writes for plain data (date-times,
dates, big integers, ``Decimal``, ``Fraction``, ``UUID``, sets). The frame level uses the same list because call
bodies, replies and messages carry user data inline. Refusals raise ``CborRejected``; the caller turns it into
its own error (``RemoteProtocolError`` on the wire, ``StorageError`` for stored values).
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable
from typing import Any, Final

import attrs
import cbor2

from borough.cbor_budget import SCAN_ABOVE, BudgetExceeded, check_budget

__all__ = ["USER_DATA_TAGS", "CborLimits", "CborRejected", "SafeDecoder", "safe_loads"]


class CborRejected(ValueError):
    """A CBOR document was refused: over a budget, a tag not on the allow-list, or malformed."""


@attrs.frozen(kw_only=True)
class CborLimits:
    """The bounds one decoded document must keep within (see the module docstring and ``cbor_budget``).

    The defaults fit Borough's largest legitimate documents (a 10 000-item scan page is about 30 000 items, a
    4096-entry Raft append about 16 400) and keep the worst document's decode near ten milliseconds."""

    max_items: int = 65536
    max_depth: int = 64
    max_composite_keys: int = 256
    max_bignum_bytes: int = 64


DEFAULT_LIMITS: Final = CborLimits()


# ---------------------------------------------------------------------------------------------------- tags


def _builtin(tag: int, content: Any) -> Any:
    # The stock decoder for one allowed tag whose content was already checked to be small: re-encoding it costs
    # a few microseconds and gives exactly the objects cbor2 users know.
    return cbor2.loads(cbor2.dumps(cbor2.CBORTag(tag, content)))


def _is_int(x: object) -> bool:
    return type(x) is int


def _bignum(negative: bool) -> Callable[[CborLimits], Callable[[Any, bool], Any]]:
    def make(limits: CborLimits) -> Callable[[Any, bool], Any]:
        def decode(content: Any, _immutable: bool) -> Any:
            if type(content) is not bytes or len(content) > limits.max_bignum_bytes:
                raise CborRejected(
                    f"a big integer (tag {3 if negative else 2}) must be a byte string of at most "
                    f"{limits.max_bignum_bytes} bytes, got {_kind(content)}"
                )
            n = int.from_bytes(content, "big")
            return -1 - n if negative else n

        return decode

    return make


def _checked(tag: int, what: str, ok: Callable[[Any], bool]) -> Callable[[CborLimits], Callable[[Any, bool], Any]]:
    def make(_limits: CborLimits) -> Callable[[Any, bool], Any]:
        def decode(content: Any, _immutable: bool) -> Any:
            if not ok(content):
                raise CborRejected(f"tag {tag} must hold {what}, got {_kind(content)}")
            return _builtin(tag, content)

        return decode

    return make


def _set(_limits: CborLimits) -> Callable[[Any, bool], Any]:
    def decode(content: Any, immutable: bool) -> Any:
        if type(content) not in (list, tuple):
            raise CborRejected(f"a set (tag 258) must hold an array, got {_kind(content)}")
        value = _builtin(258, list(content))
        return frozenset(value) if immutable else value

    return decode


def _pair_of_ints(x: Any) -> bool:
    return type(x) in (list, tuple) and len(x) == 2 and _is_int(x[0]) and _is_int(x[1])


#: Tags a document may hold, and the check each one's content must pass (integers inside are already bounded:
#: plain CBOR integers are 64-bit and bignums are limited above).
_ALLOWED: Final[dict[int, Callable[[CborLimits], Callable[[Any, bool], Any]]]] = {
    0: _checked(0, "a date-time string of at most 64 characters", lambda x: type(x) is str and len(x) <= 64),
    1: _checked(1, "a number of seconds since the epoch", lambda x: type(x) in (int, float)),
    2: _bignum(negative=False),
    3: _bignum(negative=True),
    4: _checked(4, "[exponent, mantissa] integers (a decimal fraction)", _pair_of_ints),
    30: _checked(30, "[numerator, denominator] integers (a fraction)", lambda x: _pair_of_ints(x) and x[1] != 0),
    37: _checked(37, "a 16-byte string (a UUID)", lambda x: type(x) is bytes and len(x) == 16),
    100: _checked(100, "an integer number of days (a date)", _is_int),
    1004: _checked(1004, "a date string of at most 16 characters", lambda x: type(x) is str and len(x) <= 16),
    258: _set,
}

USER_DATA_TAGS: Final = frozenset(_ALLOWED)

#: Tags stock cbor2 decodes by itself (found by decoding every tag below 2**16): each must be overridden, or
#: it would bypass the allow-list. Tags it does not know reach ``tag_hook``.
_STOCK_TAGS: Final = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 43000, 55799)


def _refuse(tag: int) -> Callable[..., Any]:
    def refuse(*_args: object) -> Any:
        raise CborRejected(f"CBOR tag {tag} is not allowed here; send plain data (allowed tags: {_tag_list()})")

    return refuse


def _refuse_unknown(tag: cbor2.CBORTag, _immutable: bool) -> Any:
    raise CborRejected(f"CBOR tag {tag.tag} is not allowed here; send plain data (allowed tags: {_tag_list()})")


def _tag_list() -> str:
    return ", ".join(str(t) for t in sorted(USER_DATA_TAGS))


@functools.lru_cache(maxsize=8)
def _semantic_decoders(limits: CborLimits) -> dict[int, Callable[..., Any]]:
    decoders: dict[int, Callable[..., Any]] = {tag: _refuse(tag) for tag in _STOCK_TAGS}
    for tag, make in _ALLOWED.items():
        decoders[tag] = make(limits)
    return decoders


def _kind(x: object) -> str:
    # Describes without printing the value: a refused value may be too large to print.
    if isinstance(x, (bytes, str, list, tuple, dict)):
        return f"{type(x).__name__} of length {len(x)}"
    if isinstance(x, int):
        return f"an integer of {x.bit_length()} bits"
    return type(x).__name__


# ---------------------------------------------------------------------------------------------------- decoding


class SafeDecoder:
    """Decodes one document at a time under ``limits``; reusable (one per connection), since building a cbor2
    decoder costs more than decoding a small frame. Not thread-safe."""

    def __init__(self, limits: CborLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._decoder = cbor2.CBORDecoder(
            io.BytesIO(b""),
            tag_hook=_refuse_unknown,
            semantic_decoders=_semantic_decoders(limits),
            max_depth=limits.max_depth,
            allow_indefinite=False,
        )

    def decode(self, data: bytes, *, max_items: int | None = None) -> Any:
        """The one CBOR document ``data`` holds (no trailing bytes). Raises ``CborRejected`` saying why not.

        ``max_items`` overrides ``limits.max_items`` for this document."""
        limits = self.limits
        items = limits.max_items if max_items is None else max_items
        try:
            if len(data) > min(SCAN_ABOVE, items):
                check_budget(
                    data, max_items=items, max_depth=limits.max_depth, max_composite_keys=limits.max_composite_keys
                )
            fp = io.BytesIO(data)
            self._decoder.fp = fp
            value = self._decoder.decode()
        except CborRejected:
            raise
        except BudgetExceeded as exc:
            raise CborRejected(str(exc)) from None
        except Exception as exc:  # cbor2 raises many types on hostile input; all mean "malformed"
            refusal = exc.__cause__ or exc.__context__
            if isinstance(refusal, CborRejected):  # ours, from a tag check, wrapped by cbor2
                raise CborRejected(str(refusal)) from None
            raise CborRejected(f"not valid CBOR ({type(exc).__name__}: {safe_str(exc)})") from exc
        if fp.tell() != len(data):
            raise CborRejected(f"{len(data) - fp.tell()} bytes of trailing garbage after the CBOR value")
        return value


_per_thread = threading.local()


def safe_loads(data: bytes) -> Any:
    """Decode one document from outside under the default limits (see ``SafeDecoder.decode``). Safe to call
    from several threads at once (store scans run in a worker thread): each thread has its own decoder."""
    decoder: SafeDecoder | None = getattr(_per_thread, "decoder", None)
    if decoder is None:
        decoder = _per_thread.decoder = SafeDecoder()
    return decoder.decode(data)


def safe_str(x: object, limit: int = 200) -> str:
    """``str(x)`` cut to ``limit`` characters, never raising (a huge integer inside cannot be printed)."""
    try:
        text = str(x)
    except Exception as exc:
        return f"<{type(x).__name__} that cannot be printed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
