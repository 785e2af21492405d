"""Whether the running CPython is a build that runs Borough's hot paths at full speed.

A ``python`` executable that calls into a shared ``libpython`` compiled without ``-fno-semantic-interposition``
(what ``./configure --enable-shared`` gives without ``--enable-optimizations``: pyenv's default build, for one)
makes each of the interpreter's calls into itself an indirect call through the library's symbol table. Borough's
node is allocation- and dictionary-heavy Python, and pays for it: on the project's benchmark machine the same tree
put 8 to 13% fewer writes a second at 64 clients and waited 1.32 to 1.45 ms for a lone put where Debian's
``python3`` (statically linked, optimized) waited 1.20 to 1.25 ms (``docs/benchmarks.md``). ``borough serve``
says so when it starts on such a build.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Mapping

#: Build variables that carry the compiler and configure flags a CPython was built with.
_FLAG_VARS = ("CONFIG_ARGS", "CONFIGURE_CFLAGS_NODIST", "PY_CFLAGS_NODIST", "PY_CFLAGS", "CFLAGS", "PY_LDFLAGS_NODIST")


def _maps() -> str | None:
    try:
        with open("/proc/self/maps") as f:
            return f.read()
    except OSError:  # not Linux, or no /proc: nothing to say
        return None


def _interpreter_address() -> int | None:
    """Where the interpreter's own code lives in this process: the address of one of its C functions."""
    try:
        import ctypes

        address: int | None = ctypes.cast(ctypes.pythonapi.Py_IsInitialized, ctypes.c_void_p).value
        return address
    except (ImportError, AttributeError, OSError, ValueError):
        return None


def _mapped_file(maps: str, address: int) -> str | None:
    """The file mapped at ``address`` in a ``/proc/<pid>/maps`` text (None: anonymous, or not mapped)."""
    for line in maps.splitlines():
        span, _, rest = line.partition(" ")
        low, _, high = span.partition("-")
        try:
            if not int(low, 16) <= address < int(high, 16):
                continue
        except ValueError:
            continue
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else None
    return None


def slow_build(
    maps: str | None = None, config: Mapping[str, object] | None = None, address: int | None = None
) -> str | None:
    """Why this interpreter runs Borough slower than an optimized build of the same version, or None when it
    does not (or when that cannot be told). ``maps`` is the process's memory map (``/proc/self/maps``),
    ``config`` its build variables (``sysconfig``) and ``address`` where the interpreter's code is mapped; each
    defaults to this process's own."""
    if sys.implementation.name != "cpython":
        return None
    maps = _maps() if maps is None else maps
    address = _interpreter_address() if address is None else address
    if maps is None or address is None:
        return None
    shared = _mapped_file(maps, address)
    if shared is None or "/libpython3" not in shared:
        return None  # the interpreter is linked into the executable: its calls into itself are direct
    if config is None:
        config = {name: sysconfig.get_config_var(name) for name in _FLAG_VARS}
    flags = " ".join(str(value) for value in config.values() if value)
    if "-fno-semantic-interposition" in flags or "--enable-optimizations" in flags:
        return None  # (3.10 and later add the flag to an optimized shared build)
    return (
        f"this Python runs on a shared libpython built without optimizations ({shared}; pyenv's default build "
        "is one): Borough's hot paths run markedly slower than on an optimized build of the same version (a "
        "distribution's python3, python.org's, or pyenv with PYTHON_CONFIGURE_OPTS='--enable-optimizations "
        "--with-lto'); see 'The Python interpreter' in docs/operations.md"
    )
