"""Power cuts at every sync of a real LevelDB store, replayed from a trace of its file system calls.

A child process writes batches to a ``LevelDBStore`` (some synced, most not, as replicas do: a synced turn's batch
and the unsynced batches that apply) under an ``LD_PRELOAD`` shim (``powercut_trace.c``) that records every
creation, write, sync, rename and removal under its directory. The test then rebuilds, for each point in the
trace where something was synced, what a power cut right after it would leave on an ext4-like disk: a file's
contents as of its own last sync (unsynced data of any file is lost, as with delayed allocation), and the names
as of the last sync of anything (the journal commits every metadata change made so far). It opens each of those
images and checks that the store came back whole:
- every write acknowledged as synced before the cut is there;
- what is there is a prefix: the applied index says ``n`` and every write up to ``n`` is present, none missing
  in between. (Before the store watched LevelDB's log switches, a synced write after a switch kept its batch while
  the unsynced batches before the switch were lost: the second check failed at the cut right after it.)
"""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest

from borough.store import LevelDBStore

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIM = pathlib.Path(__file__).with_name("powercut_trace.c")
WRITES = 900

CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from borough.raft.records import Entry, HardState
    from borough.store import LevelDBStore, encode_value

    store = LevelDBStore.open({db!r}, write_buffer_size=64 << 10)
    acks = os.open({acks!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(acks, b"0\\n")  # the store is open: the cuts checked start here (see the test)
    for n in range(1, {writes} + 1):
        sync = n % 4 == 0
        b = store.write_batch()
        b.append("p", [Entry(term=1, index=n, data=b"cmd%d" % n)])
        b.apply("p", [("put", f"k{{n}}", encode_value("v" * 400 + str(n)))], n)
        b.set_hard_state("p", HardState(term=1, commit=n))
        store.write(b, sync=sync)
        if sync:
            os.write(acks, b"%d\\n" % n)  # (traced: the acknowledgement's place among the file system calls)
    store.close()
    """
)


def _records(trace: bytes) -> list[tuple[str, str, bytes, int]]:
    out = []
    at = 0
    while at < len(trace):
        kind = chr(trace[at])
        (plen,) = struct.unpack_from("<I", trace, at + 1)
        path = trace[at + 5 : at + 5 + plen].decode()
        at += 5 + plen
        (dlen,) = struct.unpack_from("<I", trace, at)
        data = trace[at + 4 : at + 4 + dlen]
        at += 4 + dlen
        (offset,) = struct.unpack_from("<q", trace, at)
        at += 8
        out.append((kind, path, data, offset))
    return out


class Disk:
    """What a power cut would leave: per file, its contents at its last sync; the names at the last sync."""

    def __init__(self) -> None:
        self.volatile: list[bytearray] = []  # per inode
        self.durable: list[bytes] = []
        self.names: dict[str, int] = {}
        self.durable_names: dict[str, int] = {}

    def apply(self, kind: str, path: str, data: bytes, offset: int) -> None:
        if kind == "C":
            if path not in self.names:
                self.names[path] = len(self.volatile)
                self.volatile.append(bytearray())
                self.durable.append(b"")
            elif offset:  # O_TRUNC of an existing file: LevelDB never does it, and this model has no answer
                raise AssertionError(f"{path} truncated")
        elif kind == "W":
            content = self.volatile[self.names[path]]
            if len(content) < offset:
                content.extend(bytes(offset - len(content)))
            content[offset : offset + len(data)] = data
        elif kind == "S":
            inode = self.names.get(path)  # (None: a directory)
            if inode is not None:
                self.durable[inode] = bytes(self.volatile[inode])
            self.durable_names = dict(self.names)
        elif kind == "R":
            self.names[data.decode()] = self.names.pop(path)
        elif kind == "U":
            self.names.pop(path, None)

    def image(self, prefix: str, into: pathlib.Path) -> None:
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir()
        for path, inode in self.durable_names.items():
            if path.startswith(prefix + "/"):
                (into / path[len(prefix) + 1 :]).write_bytes(self.durable[inode])


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build the trace shim")
def test_a_power_cut_after_any_sync_leaves_every_acknowledged_write_and_no_hole(tmp_path: pathlib.Path) -> None:
    shim = tmp_path / "trace.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(shim), str(SHIM), "-ldl", "-lpthread"], check=True)
    traced = tmp_path / "traced"
    traced.mkdir()
    db, acks, trace = str(traced / "db"), str(traced / "acks"), tmp_path / "trace.bin"
    env = {**os.environ, "LD_PRELOAD": str(shim), "BOROUGH_TRACE_DIR": str(traced), "BOROUGH_TRACE_OUT": str(trace)}
    script = CHILD.format(root=str(ROOT), db=db, acks=acks, writes=WRITES)
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr

    disk = Disk()
    acked = -1  # (until the child says the store is open)
    cuts = switches = 0
    image = tmp_path / "image"
    for kind, path, data, offset in _records(trace.read_bytes()):
        if path == acks:
            if kind == "W":
                acked = int(data)
            continue
        disk.apply(kind, path, data, offset)
        switches += kind == "C" and path.endswith(".log")
        if kind != "S" or acked < 0:
            # Cuts while LevelDB creates the database are not checked: it writes its first manifest without
            # syncing it (only the CURRENT file that names it), so a cut then can leave a database it refuses to
            # open. Opening it again rewrites the manifest, synced, before the store is used.
            continue
        cuts += 1
        disk.image(db, image)
        store = LevelDBStore.open(image)
        try:
            n = store.applied_index("p")
            where = f"a power cut after sync #{cuts} ({os.path.basename(path)}, {acked} acknowledged)"
            assert n >= acked, f"{where}: the store came back at {n}"
            present = set(store.iterate("p", values=False))
            missing = [i for i in range(1, n + 1) if f"k{i}" not in present]
            assert not missing, f"{where}: applied index {n} but writes {missing[:5]}... are gone"
            assert store.last_index("p") >= n
        finally:
            store.close()
    print(f"{cuts} cuts checked, {switches} log files started")
    assert acked == WRITES
    assert switches >= 4, "the memtable should have filled several times"
    assert cuts > WRITES // 4
