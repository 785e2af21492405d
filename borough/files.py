"""Durable file system changes: what it takes for a new file, or a rename, to survive a power cut.

A file's ``fsync`` makes its contents durable, not its name: the directory entry that a creation or a rename
made is durable once the directory itself is synced (POSIX; ext4 happens to commit it with the file's next sync,
other file systems do not). Borough's own files outside LevelDB (certificates, backups) and LevelDB's new log
files go through here.
"""

from __future__ import annotations

import os

__all__ = ["sync_dir", "write_durably"]


def sync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of directory ``path`` (files created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes, mode: int) -> None:
    """Replace the file at ``path`` with ``data`` (permissions ``mode`` if it is new) in one rename: after a power
    cut the file holds the old contents or the new, never part of them; durable when this returns."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    sync_dir(os.path.dirname(path) or ".")
