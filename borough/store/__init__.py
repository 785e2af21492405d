"""Storage: every replica's Raft state and key/value data in one LevelDB per node, and an in-memory twin.

The names the rest of Borough uses are re-exported here; the modules behind them are private:
``encoding`` (key layout and codecs), ``batch`` (the write batch builder), ``state`` (what is kept in memory),
``translate`` (ops to raw puts and deletes), ``base`` (the ``Store`` every engine shares), ``memory`` and
``leveldb`` (the engines), ``snapshot`` (chunked snapshots), ``group_commit`` (the trio writer).

How the node uses it::

    store = LevelDBStore.open(data_dir, cluster_id=...)        # or MemoryStore() in simulation
    async with open_group_commit(store, offload=True) as gc:     # offload=False in simulation
        b = store.write_batch()
        b.set_hard_state(p, hs); b.append(p, entries)            # Raft persists...
        b.apply(p, [("put", key, encode_value(v)), ("del", key)], applied_index)   # ...and applies
        await gc.commit(b)                                       # returns once durable
        log = store.log_storage(p)                               # what the Raft core reads
        value = store.get(p, key); items = store.iterate(p, gte="a", limit=10)

``LevelDBStore`` is loaded on first use (``borough.store.LevelDBStore`` or ``borough.store.leveldb``), so that
importing Borough, or a client, never needs plyvel.

Reads are synchronous and never block on a write in flight; big scans (``iterate`` over many keys,
``snapshot_chunks``) should be consumed in a worker thread in production.
"""

from typing import Any

from borough.store.base import InvalidLogOperation as InvalidLogOperation
from borough.store.base import NodeMeta as NodeMeta
from borough.store.base import PartitionLog as PartitionLog
from borough.store.base import Store as Store
from borough.store.batch import WriteBatch as WriteBatch
from borough.store.encoding import FORMAT_VERSION as FORMAT_VERSION
from borough.store.encoding import decode_value as decode_value
from borough.store.encoding import encode_key as encode_key
from borough.store.encoding import encode_value as encode_value
from borough.store.group_commit import GroupCommit as GroupCommit
from borough.store.group_commit import open_group_commit as open_group_commit
from borough.store.memory import MemoryStore as MemoryStore
from borough.store.snapshot import SnapshotInstall as SnapshotInstall
from borough.store.snapshot import SnapshotReader as SnapshotReader

__all__ = [
    "FORMAT_VERSION",
    "GroupCommit",
    "InvalidLogOperation",
    "LevelDBStore",
    "MemoryStore",
    "NodeMeta",
    "PartitionLog",
    "SnapshotInstall",
    "SnapshotReader",
    "Store",
    "WriteBatch",
    "decode_value",
    "encode_key",
    "encode_value",
    "open_group_commit",
]


def __getattr__(name: str) -> Any:
    # LevelDBStore is the only name that loads plyvel: import it when it is asked for, not with the package.
    if name == "LevelDBStore":
        from borough.store.leveldb import LevelDBStore

        return LevelDBStore
    raise AttributeError(f"module 'borough.store' has no attribute {name!r}")
