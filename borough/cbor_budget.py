"""The CBOR work budget: a pre-scan that bounds what decoding a document may cost, before anything is built.

Owns the shape rules a CBOR document from outside must meet so that decoding it takes time and memory
proportional to a small budget, not to what its bytes can make a decoder do:
- at most ``max_items`` data items (every array or map element, map key, tag and scalar counts one), so a
  frame of a million empty maps (70 bytes of Python objects per byte of CBOR) is refused unbuilt;
- nesting at most ``max_depth`` deep (arrays, maps and tags);
- no indefinite-length items (Borough's encoder never writes them) and no reserved or stray "break" bytes;
- at most ``max_composite_keys`` map keys or set elements that are arrays, maps or tags: Python hashes those
  (tuples, frozen maps, big integers) with unkeyed functions, so many keys crafted to collide would make
  building one dict quadratic; text, byte strings and 64-bit integers as keys are never a problem.

It checks shape and counts only: which tags are allowed and what their contents may be is ``cbor_safe``'s job,
and whether a value is well-formed in every other way is the decoder's. A leaf module: pure functions over
bytes, no cbor2, no I/O.

Cost: the scan visits item heads only (string bodies are skipped in O(1)); measured about 60 ns per scalar and
300-600 ns per array or map with CPython 3.11, so its time is bounded by the item budget. Documents no longer
than ``SCAN_ABOVE`` bytes skip it: they hold too few items to exceed any budget that matters, and the decoder
enforces the depth.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SCAN_ABOVE", "BudgetExceeded", "check_budget"]

#: Documents of at most this many bytes are not scanned (see the module docstring).
SCAN_ABOVE: Final = 1024


class BudgetExceeded(ValueError):
    """A CBOR document is over a budget or has a shape the budget cannot account for."""


# What to do for each initial byte (RFC 8949 §3): major type in the high 3 bits, argument info in the low 5.
_SCALAR, _STRING, _ARRAY, _MAP, _TAG, _INVALID, _EMPTY = range(7)


def _tables() -> tuple[bytes, bytes, bytes, bytes]:
    act, extra, skip_any, skip_key = bytearray(256), bytearray(256), bytearray(256), bytearray(256)
    for ib in range(256):
        major, info = ib >> 5, ib & 31
        n = {24: 1, 25: 2, 26: 4, 27: 8}.get(info, 0)
        extra[ib] = n
        if info > 27:
            act[ib] = _INVALID  # 28-30 reserved, 31 indefinite length or break
        elif major in (0, 1, 7):
            act[ib] = _SCALAR  # integers up to 64 bits, simple values, floats
            skip_any[ib] = skip_key[ib] = 1 + n
        elif major in (2, 3):
            act[ib] = _STRING
            if info < 24:
                skip_any[ib] = skip_key[ib] = 1 + info
        elif major in (4, 5) and info == 0:
            act[ib] = _EMPTY
            skip_any[ib] = 1  # an empty array or map is a scalar, except where it would be a key
        else:
            act[ib] = {4: _ARRAY, 5: _MAP, 6: _TAG}[major]
    return bytes(act), bytes(extra), bytes(skip_any), bytes(skip_key)


_ACT, _EXTRA, _SKIP_ANY, _SKIP_KEY = _tables()

# What the items of the container being scanned are; packed with the count left into one int on the stack.
_PLAIN, _KEYED_MAP, _SET_ITEMS, _SET_TAG = range(4)
_SET: Final = 258  # the tag of a set: its array's elements are hashed like map keys
_RUN: Final = 8  # containers with at least this many items left take the fast lane


def check_budget(data: bytes, *, max_items: int, max_depth: int, max_composite_keys: int) -> int:
    """Raise ``BudgetExceeded`` unless the one CBOR document filling ``data`` keeps within the budgets; return
    its item count. Work is bounded by ``max_items`` whatever ``data`` holds."""
    act_of, extra_of = _ACT, _EXTRA
    end = len(data)
    pos = 0
    left = max_items
    composites = max_composite_keys
    remaining, kind = 1, _PLAIN  # items left in the innermost open container, and what they are
    stack: list[int] = []
    push, pop = stack.append, stack.pop
    try:
        while True:
            if not remaining:
                if not stack:
                    break
                packed = pop()
                remaining, kind = packed >> 2, packed & 3
                continue
            if remaining >= _RUN:
                # Fast lane: a run of items that need no bookkeeping (scalars, short strings, and empty
                # containers where they cannot be keys), bounded by what is left of the budget.
                skip_of = _SKIP_ANY if kind == _PLAIN else _SKIP_KEY
                run = start = remaining if remaining <= left else left + 1
                while run:
                    skip = skip_of[data[pos]]
                    if not skip:
                        break
                    pos += skip
                    run -= 1
                remaining -= start - run
                left -= start - run
                if left < 0:
                    break
                if not remaining:
                    continue
            remaining -= 1
            left -= 1
            if left < 0:
                break
            ib = data[pos]
            act = act_of[ib]
            n = extra_of[ib]
            if act == _SCALAR:
                pos += 1 + n
                continue
            arg = ib & 31 if n == 0 else int.from_bytes(data[pos + 1 : pos + 1 + n], "big")
            pos += 1 + n
            if act == _STRING:
                pos += arg
                continue
            if act == _INVALID:
                raise BudgetExceeded(
                    f"byte 0x{ib:02x} at offset {pos - 1} starts an indefinite-length or reserved item, "
                    f"which Borough never sends"
                )
            if kind == _SET_ITEMS or (kind == _KEYED_MAP and remaining & 1):
                composites -= 1
                if composites < 0:
                    raise BudgetExceeded(
                        f"more than {max_composite_keys} map keys or set elements are arrays, maps or tags"
                    )
            if act == _EMPTY:
                continue
            if len(stack) >= max_depth:
                raise BudgetExceeded(f"items are nested more than {max_depth} deep")
            push(remaining << 2 | kind)
            if act == _ARRAY:
                remaining, kind = arg, _SET_ITEMS if kind == _SET_TAG else _PLAIN
            elif act == _MAP:
                remaining, kind = 2 * arg, _KEYED_MAP
            else:
                remaining, kind = 1, _SET_TAG if arg == _SET else _PLAIN
    except IndexError:
        raise BudgetExceeded(f"the document ends in the middle of an item ({end} bytes)") from None
    if left < 0:
        raise BudgetExceeded(f"more than {max_items} data items in one document")
    if pos > end:
        raise BudgetExceeded(f"the document ends in the middle of a string ({end} bytes)")
    return max_items - left
