"""``borough.interpreter``: telling a CPython that runs Borough slowly (a shared, unoptimized libpython)."""

from __future__ import annotations

import sys

import pytest

from borough.interpreter import slow_build

SHARED = (
    "55d0c2a00000-55d0c2a01000 r--p 00000000 08:01 1 /root/.pyenv/versions/3.11.7/bin/python3.11\n"
    "7f3a10000000-7f3a10200000 r-xp 00000000 08:01 2 /root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0\n"
    "7f3a20000000-7f3a20001000 r--p 00000000 08:01 3 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
)
STATIC = (
    "55d0c2a00000-55d0c2c00000 r-xp 00000000 08:01 1 /usr/bin/python3.11\n"
    "7f3a20000000-7f3a20001000 r--p 00000000 08:01 3 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
)
#: Where the interpreter's code is: in the shared library, or (a static build) in the executable.
IN_LIBPYTHON, IN_EXECUTABLE = 0x7F3A10000100, 0x55D0C2A00100
PYENV = {"CONFIG_ARGS": "'--prefix=/root/.pyenv/versions/3.11.7' '--enable-shared'", "PY_CFLAGS_NODIST": "-std=c11"}

pytestmark = pytest.mark.skipif(sys.implementation.name != "cpython", reason="only CPython builds are told apart")


def test_a_shared_unoptimized_libpython_is_slow_and_the_message_says_what_to_do() -> None:
    reason = slow_build(SHARED, PYENV, IN_LIBPYTHON)
    assert reason is not None
    assert "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0" in reason
    assert "--enable-optimizations" in reason and "docs/operations.md" in reason


def test_an_interpreter_linked_into_its_executable_is_not() -> None:
    assert slow_build(STATIC, PYENV, IN_EXECUTABLE) is None
    # ... even when something else loaded a libpython beside it: what counts is where the interpreter's code runs
    with_library = SHARED.replace("r--p 00000000 08:01 1", "r-xp 00000000 08:01 1")
    assert slow_build(with_library, PYENV, 0x55D0C2A00100) is None


def test_an_address_nothing_is_mapped_at_says_nothing() -> None:
    assert slow_build(SHARED, PYENV, 0x10) is None


@pytest.mark.parametrize(
    "config",
    [
        {"CONFIG_ARGS": "'--enable-shared' '--enable-optimizations' '--with-lto'"},
        {"CONFIG_ARGS": "'--enable-shared'", "CONFIGURE_CFLAGS_NODIST": "-fno-semantic-interposition"},
        {"CONFIG_ARGS": "'--enable-shared'", "PY_LDFLAGS_NODIST": "-fno-semantic-interposition -flto"},
    ],
)
def test_an_optimized_shared_libpython_is_not(config: dict[str, object]) -> None:
    assert slow_build(SHARED, config, IN_LIBPYTHON) is None


def test_this_process_is_judged_without_error() -> None:
    reason = slow_build()
    assert reason is None or "libpython" in reason
