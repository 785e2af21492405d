"""LevelDB's write-ahead log files, watched so that a synced write makes every earlier write durable.

``base.Store.write(sync=True)`` promises that the batch *and every earlier write* are durable when it returns;
the group commit and the Raft layer build on it (a replica writes its applied state unsynced, because a later
synced write covers it). LevelDB keeps that promise only within one log file. When its memtable is full, the
next write switches to a new log file and LevelDB closes the old one without syncing it; the old file's
unsynced tail becomes durable only once the old memtable is flushed to a table file, in the background, tens to
hundreds of milliseconds later. A synced write made meanwhile syncs the new file alone (``strace`` shows its
``fdatasync`` before the table file's). A power cut in that window keeps the later write and loses earlier ones:
a replica would come back with applied state from an entry whose predecessors' effects are gone, or with a
snapshot's switch but not all of its data.

``LogFiles`` closes that window. After each write it checks, with one ``fstat``, whether the write grew the log
file it watches; if not, LevelDB switched files, and the old one is kept open if it holds unsynced writes.
Before a synced write, when writes since the last sync may not be durable:
- the replaced log files that hold such writes are synced first (``fdatasync`` on the files themselves);
- if the watched file holds such writes, an empty unsynced write goes first (``probe``). LevelDB switches log
  files at the start of a write, when its memtable is over the limit, and an empty write adds nothing to the
  memtable: so a switch that is due happens in the probe (and the file it leaves is synced, as above), and the
  synced write then goes to the file that holds the earlier writes, whose sync covers them.

LevelDB does not sync the directory when it creates a log file either (POSIX asks for it before the new
file's contents can be counted on; ext4 happens to commit the entry with the file's first sync). After a
switch, the directory is synced before the synced write that relies on the new file (or right after the synced
write that made the switch, before it returns).

Cost: one ``fstat`` a write; one empty write before a synced write that follows unsynced ones; per log switch
(once per memtable, 16 MiB), one directory sync, and one ``fdatasync`` of the old file if it held unsynced
writes.
It knows LevelDB's file layout (``NNNNNN.log``), nothing of Borough's keys. Its system calls raise ``OSError``,
which the store turns into the ``StorageError`` that stops the node's writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from borough.errors import StorageError
from borough.files import sync_dir

__all__ = ["LogFiles"]

logger = logging.getLogger(__name__)


def newest_log(path: str) -> str:
    """The log file LevelDB writes to now: the highest-numbered ``NNNNNN.log`` in ``path``."""
    best = -1
    for name in os.listdir(path):
        stem, dot, ext = name.partition(".")
        if dot and ext == "log" and stem.isdigit() and int(stem) > best:
            best = int(stem)
    if best < 0:
        raise StorageError(f"LevelDB in {path} has no log file: the data dir is damaged or not LevelDB's")
    return os.path.join(path, f"{best:06d}.log")


class LogFiles:
    """Watches the LevelDB log files of the database at ``path`` (open after the database is). Not thread-safe:
    the store calls it under its write lock."""

    def __init__(self, path: str) -> None:
        self._path = path
        self.current = newest_log(path)
        self._fd = os.open(self.current, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size
        #: The watched file holds writes that no sync has covered yet.
        self._dirty = False
        #: Replaced log files (open, so a flush that deletes them cannot race a sync) holding unsynced writes.
        self._stale: list[int] = []
        self._new_file = False  # a switch happened, and the directory has not been synced since
        #: Log switches seen, and those that left unsynced writes behind (``borough_store_log_switches*``).
        self.switches = 0
        self.unsynced_switches = 0

    def before_synced(self, probe: Callable[[], None]) -> None:
        """Call before a synced write: makes sure its sync covers every earlier write (see the module doc).
        ``probe`` makes an empty unsynced write."""
        if self._dirty:
            probe()
            self.wrote(synced=False)
        if self._stale:
            self._sync_stale()
        if self._new_file:
            self._sync_dir()

    def wrote(self, *, synced: bool) -> None:
        """Call after each successful write."""
        size = os.fstat(self._fd).st_size
        if size > self._size:
            self._size = size
            self._dirty = not synced
            return
        self._switched()
        if synced:
            if self._stale:  # (cannot happen after ``before_synced``: a synced write switched files)
                logger.error("LevelDB switched log files in a synced write that followed unsynced ones")
                self._sync_stale()
            self._sync_dir()
        self._dirty = not synced

    def _switched(self) -> None:
        old_fd, old_name, dirty = self._fd, self.current, self._dirty
        self.current = newest_log(self._path)
        if self.current == old_name:
            raise StorageError(
                f"LevelDB log file {old_name} did not grow with a write and no newer one exists: something else "
                "changes the data dir, or this LevelDB build holds its log writes back (Borough relies on each "
                "write reaching the file at once, as LevelDB 1.x does); stop the node and check both"
            )
        self._fd = os.open(self.current, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size
        self.switches += 1
        self._new_file = True
        if dirty:
            self.unsynced_switches += 1
            self._stale.append(old_fd)
        else:
            os.close(old_fd)

    def _sync_stale(self) -> None:
        stale, self._stale = self._stale, []
        try:
            for fd in stale:
                os.fdatasync(fd)
        finally:
            for fd in stale:
                os.close(fd)

    def _sync_dir(self) -> None:
        sync_dir(self._path)
        self._new_file = False

    def close(self) -> None:
        for fd in self._stale:
            os.close(fd)
        self._stale = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
