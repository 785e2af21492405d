"""The backup's files on disk: durable when ``backup`` returns, and a damaged manifest is a clear error.

The export itself is exercised end to end by ``tests/node/test_cli_client.py`` (``borough backup``/``restore``
against real processes); here a stand-in client hands ``backup`` the pages, so what is checked is what
``backup`` does with the disk.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from borough.backup import backup, restore
from borough.errors import ConfigError


class _Export:
    applied_index = 7

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self._items = items

    async def __aenter__(self) -> _Export:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[list[tuple[str, Any]]]:
        yield self._items


class _Partition:
    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self._items = items

    def export(self) -> _Export:
        return _Export(self._items)


class _Client:
    def __init__(self, data: dict[str, list[tuple[str, Any]]]) -> None:
        self.data = data

    async def partitions(self) -> list[str]:
        return sorted(self.data)

    def partition(self, name: str) -> _Partition:
        return _Partition(self.data[name])


DATA = {"users": [("alice", {"age": 31}), ("bob", 2)], "orders": [("o1", "x")]}


async def test_a_finished_backup_is_synced_files_directories_and_manifest(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        synced.append(f"rename {os.path.basename(src)} -> {os.path.basename(dst)}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    root = tmp_path / "backup"
    assert await backup(_Client(DATA), root) == 2  # type: ignore[arg-type]
    data_dir, manifest_tmp = str(root / "data"), str(root / f"manifest.json.tmp-{os.getpid()}")
    # Each partition's file is synced before it is renamed into place.
    for i, event in enumerate(synced):
        if event.startswith("rename ") and event.endswith(".cbor"):
            assert synced[i - 1].endswith(".partial")
    # At the end: the data directory (those renames), then the manifest, then the directory holding it.
    renamed = f"rename manifest.json.tmp-{os.getpid()} -> manifest.json"
    assert synced[-4:] == [data_dir, manifest_tmp, renamed, str(root)]


async def test_a_damaged_manifest_is_a_clear_error_for_backup_and_restore(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "backup"
    await backup(_Client(DATA), root)  # type: ignore[arg-type]
    (root / "manifest.json").write_bytes(b'{"format": 1, "partitions": {"us')  # cut short, as a power cut can
    for run in (lambda: backup(_Client(DATA), root), lambda: restore(_Client(DATA), root)):  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="manifest.json is damaged .*remove it and run the backup again"):
            await run()
    (root / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a Borough backup manifest"):
        await restore(_Client(DATA), root)  # type: ignore[arg-type]
