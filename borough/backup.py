"""Backups: every partition of a cluster exported to a directory, and loaded into another cluster.

``backup(client, directory)`` writes one file per partition, ``data/<digest>.cbor``, from ``Partition.export``:
the partition's items as of one applied index, read from its leader after a read barrier, so each file holds
every write acknowledged before its export began and nothing half-applied. **Consistent per partition, not
across partitions**: partitions are exported one after another, each at its own index, so a write to partition
B made after A was exported is in the backup while a later write to A is not. (Applications that need a
cross-partition point in time must stop writing while the backup runs.) Each file is written beside its final
name and renamed once complete; ``manifest.json`` lists every finished partition with its applied index, item
count and SHA-256, and is rewritten after each one, so a backup that stopped halfway is resumed by running it
again: finished partitions whose file still matches its checksum are skipped. When ``backup`` returns, the backup
is durable: each file was synced before its rename, and at the end the directories and the manifest are synced
(the manifest rewritten after each partition is not: a power cut in the middle only makes the resumed backup
export again what it cannot find).

``restore(client, directory)`` checks every file against the manifest first, then writes each partition's items
in batches; it refuses a partition that already holds data (restore into a new cluster), unless ``overwrite``.

File format: length-prefixed CBOR frames ``["borough-backup", 1, partition, applied_index]``, then
``["items", [[key, value], ...]]`` pages, then ``["end", count]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import trio

from borough.cbor_safe import safe_loads
from borough.client import Client
from borough.errors import ConfigError
from borough.files import sync_dir, write_durably
from borough.kv import encode_value

__all__ = ["backup", "restore"]

FORMAT = 1
_LEN = struct.Struct(">I")
#: Bytes of keys and values per restore batch (well under one write's limit).
RESTORE_BATCH_BYTES = 1024 * 1024

Progress = Callable[[str, int], None]


def _file_for(name: str) -> str:
    return "data/" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32] + ".cbor"


def _frame(obj: Any) -> bytes:
    body = cbor2.dumps(obj)
    return _LEN.pack(len(body)) + body


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.exists():
        return {"format": FORMAT, "partitions": {}}
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is damaged ({exc}): remove it and run the backup again (files that still match are exported "
            "again too), or restore from another backup"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a Borough backup manifest of format {FORMAT}")
    return manifest


def _save_manifest(directory: Path, manifest: dict[str, Any], *, durable: bool = False) -> None:
    """Replace the manifest in one rename; ``durable``: synced, file and directory, before this returns."""
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    if durable:
        write_durably(str(directory / "manifest.json"), data, 0o644)
        return
    tmp = directory / "manifest.json.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, directory / "manifest.json")


async def backup(client: Client, directory: str | os.PathLike[str], *, progress: Progress | None = None) -> int:
    """Export every partition into ``directory`` (resuming a backup that stopped); returns how many partitions
    were exported now. ``progress(partition, items)`` is told of each finished partition."""
    root = Path(directory)
    (root / "data").mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(root)
    done: dict[str, Any] = manifest["partitions"]
    exported = 0
    for name in await client.partitions():
        entry = done.get(name)
        if entry is not None and (root / entry["file"]).exists() and _sha256(root / entry["file"]) == entry["sha256"]:
            continue
        final = root / _file_for(name)
        partial = final.with_suffix(".partial")
        count = 0
        async with client.partition(name).export() as export:
            with partial.open("wb") as out:
                out.write(_frame(["borough-backup", FORMAT, name, export.applied_index]))
                async for page in export:
                    out.write(_frame(["items", [[key, value] for key, value in page]]))
                    count += len(page)
                out.write(_frame(["end", count]))
                out.flush()
                os.fsync(out.fileno())
            applied = export.applied_index
        os.replace(partial, final)
        done[name] = {"file": _file_for(name), "applied_index": applied, "items": count, "sha256": _sha256(final)}
        _save_manifest(root, manifest)
        exported += 1
        if progress is not None:
            progress(name, count)
        await trio.lowlevel.checkpoint()
    sync_dir(root / "data")  # (the renames of the files the manifest names, before the manifest)
    _save_manifest(root, manifest, durable=True)
    return exported


def _frames(path: Path) -> Iterator[Any]:
    with path.open("rb") as f:
        while head := f.read(4):
            if len(head) < 4:
                raise ConfigError(f"{path} is cut short")
            (size,) = _LEN.unpack(head)
            body = f.read(size)
            if len(body) < size:
                raise ConfigError(f"{path} is cut short")
            yield safe_loads(body)


def _read_file(path: Path, name: str) -> Iterator[list[list[Any]]]:
    """The pages of items of one partition's file, checked as they are read (its checksum was checked before)."""
    frames = _frames(path)
    head = next(frames, None)
    if not isinstance(head, list) or head[:3] != ["borough-backup", FORMAT, name]:
        raise ConfigError(f"{path} is not a backup of partition {name!r}")
    total = 0
    for frame in frames:
        if isinstance(frame, list) and len(frame) == 2 and frame[0] == "end":
            if frame[1] != total:
                raise ConfigError(f"{path} is damaged: it says {frame[1]} items and holds {total}")
            return
        total += len(frame[1])
        yield frame[1]
    raise ConfigError(f"{path} is not a complete backup of partition {name!r}")


async def restore(
    client: Client, directory: str | os.PathLike[str], *, overwrite: bool = False, progress: Progress | None = None
) -> int:
    """Load the backup in ``directory`` into the cluster ``client`` talks to; returns the items written."""
    root = Path(directory)
    manifest = _load_manifest(root)
    entries: dict[str, Any] = manifest["partitions"]
    if not entries:
        raise ConfigError(f"{root} holds no finished backup (no manifest.json with partitions)")
    for name, entry in entries.items():  # every file checked before anything is written
        if _sha256(root / entry["file"]) != entry["sha256"]:
            raise ConfigError(f"{root / entry['file']} (partition {name!r}) does not match its checksum")
    written = 0
    for name, entry in sorted(entries.items()):
        partition = client.partition(name)
        if not overwrite:
            async for _ in partition.iterator(limit=1, values=False):
                raise ConfigError(f"partition {name!r} already holds data: restore into a new cluster")
        count = 0
        for page in _read_file(root / entry["file"], name):
            batch: list[tuple[str, Any, Any]] = []
            size = 0
            for key, value in page:
                item_size = len(encode_value(value)) + len(key) + 16
                if batch and size + item_size > RESTORE_BATCH_BYTES:
                    await partition.batch(batch)
                    batch, size = [], 0
                batch.append(("put", key, value))
                size += item_size
            if batch:
                await partition.batch(batch)
            count += len(page)
        written += count
        if progress is not None:
            progress(name, count)
    return written
