"""``LevelDBStore``: the store over one LevelDB per node, through plyvel.

This is the only module in Borough that imports plyvel. It owns opening the data dir (and the clear errors
when it is locked, missing or corrupt), the engine primitives ``base.Store`` writes and reads through, and
translating plyvel's exceptions into ``StorageError`` / ``ConfigError``. Semantics live in ``base.Store``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, Self

import plyvel  # type: ignore[import-untyped]

from borough.errors import ConfigError, StorageError
from borough.files import sync_dir
from borough.store.base import RawBatch, Reader, Store
from borough.store.leveldb_logs import LogFiles

__all__ = ["LevelDBStore"]

logger = logging.getLogger(__name__)


def _make_dirs(path: str) -> list[str]:
    """``os.makedirs(path, exist_ok=True)``; returns the directories it created, outermost first (their entries in
    their parents are to be synced: POSIX asks for it, and LevelDB syncs no directory)."""
    made: list[str] = []
    at = os.path.abspath(path)
    while not os.path.exists(at) and os.path.dirname(at) != at:
        made.append(at)
        at = os.path.dirname(at)
    os.makedirs(path, exist_ok=True)
    return made[::-1]


def _creation_cut_short(path: str) -> bool:
    """Whether the LevelDB in ``path`` is one whose creation was cut short, and so never held data: ``CURRENT``
    names the first manifest (the one LevelDB writes unsynced; every later one is synced before ``CURRENT`` names
    it, and every open after the first makes a new one), there is no table file, and no log file has anything in
    it (every write goes through a log file and leaves it only for a table)."""
    try:
        with open(os.path.join(path, "CURRENT"), "rb") as f:
            if f.read() != b"MANIFEST-000001\n":
                return False
    except FileNotFoundError:
        return False
    for name in os.listdir(path):
        stem, _, ext = name.partition(".")
        if ext in ("ldb", "sst"):
            return False
        if ext == "log" and stem.isdigit() and os.path.getsize(os.path.join(path, name)) > 0:
            return False
    return True


def _remove_unfinished_creation(path: str) -> None:
    """Remove what LevelDB's creation of a database left in ``path`` (``CURRENT``, its manifests, its empty log
    files), durably; nothing else (its info log, files that are not LevelDB's) is touched."""
    for name in os.listdir(path):
        stem, _, ext = name.partition(".")
        if name == "CURRENT" or name.startswith("MANIFEST-") or (stem.isdigit() and ext in ("log", "dbtmp")):
            os.unlink(os.path.join(path, name))
    sync_dir(path)


def _message(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


class _SnapshotReader:
    """A LevelDB snapshot: every read through it sees the database as it was when it was taken."""

    __slots__ = ("_snap", "get")

    def __init__(self, snap: Any) -> None:
        self._snap = snap
        self.get = snap.get

    def scan(
        self, start: bytes, stop: bytes, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        if reverse:
            # plyvel's reverse iterator misses a range's only key when it equals ``start``; walk it by hand.
            return _reverse(self._snap.raw_iterator(), start, stop, limit)
        it = self._snap.iterator(start=start, stop=stop)
        if limit is None:
            return _closing(it)
        return _limited(it, limit)

    def scan_keys(self, start: bytes, stop: bytes, *, limit: int) -> Iterator[bytes]:
        return _limited(self._snap.iterator(start=start, stop=stop, include_value=False), limit)


def _closing(it: Any) -> Iterator[tuple[bytes, bytes]]:
    try:
        yield from it
    except RuntimeError as exc:  # plyvel: the database was closed under the iterator
        raise StorageError(f"LevelDB iteration failed: {exc}") from exc
    finally:
        it.close()


def _reverse(it: Any, start: bytes, stop: bytes, limit: int | None) -> Iterator[tuple[bytes, bytes]]:
    try:
        it.seek(stop)  # the first key >= stop, or invalid past the end
        if it.valid():
            it.prev()
        else:
            it.seek_to_last()
        n = 0
        while it.valid() and (limit is None or n < limit):
            key = it.key()
            if key < start:
                return
            yield key, it.value()
            n += 1
            it.prev()
    except RuntimeError as exc:
        raise StorageError(f"LevelDB iteration failed: {exc}") from exc
    finally:
        it.close()


def _limited(it: Any, limit: int) -> Iterator[Any]:
    try:
        for n, item in enumerate(it):
            if n >= limit:
                return
            yield item
    except RuntimeError as exc:
        raise StorageError(f"LevelDB iteration failed: {exc}") from exc
    finally:
        it.close()


class _Batch:
    """A plyvel write batch and whether it is to be synced (its ``put``/``delete`` are plyvel's own)."""

    __slots__ = ("delete", "put", "raw", "sync")

    def __init__(self, raw: Any, sync: bool) -> None:
        self.raw = raw
        self.put = raw.put
        self.delete = raw.delete
        self.sync = sync


class LevelDBStore(Store):
    """The store of a node's data dir. Open with ``LevelDBStore.open(path)``; close with ``close()``."""

    def __init__(self, db: Any, path: str) -> None:
        super().__init__()
        self._db = db
        self.path = path
        #: LevelDB's log files, watched so that a synced write covers every earlier one (``leveldb_logs``).
        self.logs = LogFiles(path)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        cluster_id: str | None = None,
        write_buffer_size: int = 16 << 20,
        lru_cache_size: int = 32 << 20,
    ) -> Self:
        """Open (or with ``create``, create) the data dir at ``path``.

        Raises ``ConfigError`` if the dir is missing (and ``create`` is False), is locked by another running
        node, holds a newer data format, is not a Borough data dir, or (with ``cluster_id``) belongs to
        another cluster; ``StorageError`` if LevelDB reports corruption or an I/O error.
        """
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"data dir {path} is a file, not a directory: point --data at a directory")
        made: list[str] = []
        if create:
            try:
                made = _make_dirs(path)  # LevelDB creates only the last level itself
            except OSError as exc:
                raise ConfigError(
                    f"cannot create data dir {path}: {exc.strerror}; check the path and permissions"
                ) from None
        options = {
            "create_if_missing": create,
            # A Raft log must not come back with holes: refuse to open rather than skip corrupt records.
            "paranoid_checks": True,
            "write_buffer_size": write_buffer_size,
            "lru_cache_size": lru_cache_size,
        }
        try:
            try:
                db = plyvel.DB(path, **options)
            except plyvel.CorruptionError as exc:
                if not (create and _creation_cut_short(path)):
                    raise
                # LevelDB (1.22) does not sync a new database's first manifest, only the CURRENT file naming it:
                # a power cut while it creates one leaves a database it calls corrupt, which never held anything
                # (``_creation_cut_short``): create it again.
                logger.warning(
                    "data dir %s: LevelDB cannot open it (%s), but it holds no data: its creation was cut short "
                    "(a power cut or crash during the node's first start); creating it again",
                    path,
                    _message(exc),
                )
                _remove_unfinished_creation(path)
                db = plyvel.DB(path, **options)
        except plyvel.IOError as exc:
            msg = _message(exc)
            if "lock" in msg.lower():
                raise ConfigError(
                    f"data dir {path} is in use by another running node (LevelDB says: {msg}); stop that node "
                    "first, or point --data at another directory"
                ) from None
            raise StorageError(f"cannot open data dir {path}: {msg}; check the path and its permissions") from exc
        except plyvel.CorruptionError as exc:
            raise StorageError(
                f"data dir {path} is corrupt (LevelDB says: {_message(exc)}); remove it and let the node "
                "catch up from its peers, or restore it from a backup"
            ) from exc
        except OSError as exc:  # (looking at or clearing an unfinished creation)
            raise StorageError(f"cannot open data dir {path}: {exc}; check the path and its permissions") from exc
        except plyvel.Error as exc:
            msg = _message(exc)
            if "does not exist" in msg:
                raise ConfigError(
                    f"data dir {path} does not exist: create it by starting the node with create=True, or "
                    "point --data at an existing data dir"
                ) from None
            raise StorageError(f"cannot open data dir {path}: {msg}") from exc
        try:
            # LevelDB makes a new manifest and log file at every open and renames CURRENT to the manifest without
            # syncing the directory: make those entries durable before anything is written or acknowledged, and
            # the entries of the directories made above in their parents (a data dir must not vanish).
            for created in made:
                sync_dir(os.path.dirname(created))
            sync_dir(path)
            store = cls(db, path)
        except OSError as exc:
            db.close()
            raise StorageError(
                f"cannot sync data dir {path} or watch its LevelDB log ({exc}): Borough needs a local file system "
                "that syncs files and directories; point --data at one"
            ) from exc
        except BaseException:
            db.close()
            raise
        try:
            store._load()
            while store.collect_garbage(1 << 16):  # finish what a crash interrupted
                pass
            if cluster_id is not None:
                store.check_cluster(cluster_id)
        except BaseException:
            store.close()
            db.close()
            store.logs.close()
            raise
        return store

    def describe(self) -> str:
        return f"data dir {self.path}"

    def _engine_reader(self) -> Reader:
        return _SnapshotReader(self._db.snapshot())

    def _engine_batch(self, sync: bool) -> RawBatch:
        return _Batch(self._db.write_batch(sync=sync), sync)

    def _engine_commit(self, raw: RawBatch) -> None:
        assert isinstance(raw, _Batch)
        try:
            if raw.sync:
                self.logs.before_synced(self._probe)
            raw.raw.write()
            self.logs.wrote(synced=raw.sync)
        except OSError as exc:  # (our own fstat, open or sync of a log file or the directory: ``LogFiles``)
            raise StorageError(
                f"syncing or watching LevelDB's log files in {self.describe()} failed ({exc}): the disk may be "
                "failing; the node stops writing; fix the disk and restart it"
            ) from exc
        except plyvel.Error as exc:
            raise StorageError(
                f"writing to {self.describe()} failed ({_message(exc)}): the disk may be full or failing; the "
                "node stops writing; fix the disk and restart it"
            ) from exc
        except RuntimeError as exc:
            raise StorageError(f"{self.describe()} is closed: {exc}") from exc

    def _probe(self) -> None:
        self._db.write_batch(sync=False).write()

    def _engine_close(self) -> None:
        self._db.close()
        self.logs.close()
