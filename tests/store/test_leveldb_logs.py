"""A synced write makes every earlier write durable, also across LevelDB's log switches (``leveldb_logs``).

LevelDB closes a full memtable's log file without syncing it, and a synced write made before that memtable is
flushed syncs only the new file. The store must sync the old file first whenever it holds unsynced writes. A
power cut cannot be staged here, so these tests check the order of the system calls that make it safe.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import pytest

from borough.errors import StorageError
from borough.store import LevelDBStore, encode_value
from borough.store.leveldb_logs import LogFiles, newest_log

SMALL_MEMTABLE = 64 << 10


def write(store: LevelDBStore, n: int, *, sync: bool) -> None:
    b = store.write_batch()
    b.apply("p", [("put", f"k{n}", encode_value("v" * 300))], n)
    store.write(b, sync=sync)


@pytest.mark.parametrize("unsynced_between", [1, 2, 3, 5])
def test_log_files_holding_unsynced_writes_are_synced_before_any_later_synced_write(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, unsynced_between: int
) -> None:
    store = LevelDBStore.open(tmp_path / "data", write_buffer_size=SMALL_MEMTABLE)
    logs = store.logs
    events: list[tuple[object, ...]] = []
    real_fsync = os.fsync
    real_fdatasync, real_before, real_wrote, real_switched, real_probe = (
        os.fdatasync,
        logs.before_synced,
        logs.wrote,
        logs._switched,
        store._probe,
    )

    def fdatasync(fd: int) -> None:
        events.append(("fdatasync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            events.append(("directory synced",))
        real_fsync(fd)

    def before_synced(probe: Callable[[], None]) -> None:
        real_before(probe)
        events.append(("synced write",))  # what follows at once is the synced write itself

    def wrote(*, synced: bool) -> None:
        real_wrote(synced=synced)
        events.append(("written", synced))

    def switched() -> None:
        old, dirty = logs.current, logs._dirty
        real_switched()
        events.append(("switch", os.path.basename(old), dirty))

    def probe() -> None:
        events.append(("probe",))
        real_probe()

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    for name, fn in (("before_synced", before_synced), ("wrote", wrote), ("_switched", switched)):
        monkeypatch.setattr(logs, name, fn)
    monkeypatch.setattr(store, "_probe", probe)
    n = 0
    while logs.unsynced_switches < 6:
        for _ in range(unsynced_between):
            n += 1
            write(store, n, sync=False)
        n += 1
        write(store, n, sync=True)
        assert n < 20_000, "LevelDB never switched log files"
    monkeypatch.undo()

    owed: set[str] = set()  # log files holding writes no sync has covered
    in_synced = in_probe = new_file = False
    probe_switches = 0
    for event in events:
        kind = event[0]
        if kind == "switch":
            new_file = True
            _, old, dirty = event
            if dirty:
                assert not in_synced, f"a synced write started a new log file while {old} held unsynced writes"
                owed.add(old)  # type: ignore[arg-type]
                probe_switches += in_probe
        elif kind == "fdatasync":
            owed.discard(event[1])  # type: ignore[arg-type]
        elif kind == "directory synced":
            new_file = False
        elif kind == "probe":
            in_probe = True
        elif kind == "synced write":
            assert not owed, f"a synced write was made while {sorted(owed)} held unsynced writes"
            assert not new_file, "a synced write was made to a new log file before its directory was synced"
            in_synced, in_probe = True, False
        elif kind == "written" and event[1]:
            assert not new_file, "a synced write that started a new log file returned before the directory was synced"
            in_synced = False
    if unsynced_between == 1:
        # Each unsynced write follows a synced one, so only a switch in the empty write made before a synced
        # write can leave unsynced writes behind: every one of them happened there, and was synced.
        assert probe_switches == logs.unsynced_switches >= 6
    assert logs.current == newest_log(str(tmp_path / "data"))

    store.close()
    again = LevelDBStore.open(tmp_path / "data", write_buffer_size=SMALL_MEMTABLE)
    try:
        assert again.applied_index("p") == n
        assert sum(1 for _ in again.iterate("p", values=False)) == n
    finally:
        again.close()


def test_synced_writes_alone_cost_one_directory_sync_a_switch(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LevelDBStore.open(tmp_path / "data", write_buffer_size=SMALL_MEMTABLE)
    calls: list[str] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append("fdatasync"), real_fdatasync(fd)))
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    n = 0
    while store.logs.switches < 3:
        n += 1
        write(store, n, sync=True)
    assert store.logs.unsynced_switches == 0
    # (LevelDB's own syncs are not seen here.) Nothing was left unsynced, so only the new files' entries are synced.
    assert calls == ["fsync"] * 3
    store.close()


def test_a_log_file_that_does_not_grow_with_a_write_stops_the_store(tmp_path: pathlib.Path) -> None:
    store = LevelDBStore.open(tmp_path / "data")
    logs = LogFiles(str(tmp_path / "data"))
    try:
        with pytest.raises(StorageError, match="did not grow"):
            logs.wrote(synced=False)  # (no write was made: as if something else had replaced the files)
    finally:
        logs.close()
        store.close()


def test_a_data_dir_whose_directory_cannot_be_synced_is_refused_clearly(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync(fd: int) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageError, match="cannot sync data dir .*Invalid argument.*point --data at one"):
        LevelDBStore.open(tmp_path / "data")
    monkeypatch.undo()
    LevelDBStore.open(tmp_path / "data").close()  # (the refused open left the dir usable: LevelDB's lock released)
