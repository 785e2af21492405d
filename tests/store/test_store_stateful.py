"""Each store implementation against a plain Python model (Hypothesis stateful testing).

The model knows nothing of key layouts or generations: a partition is its hard state, snapshot meta, applied
index, a dict of log entries and a dict of key/value data. Rules write random batches (log ops, key/value
ops, destroys, snapshot installs; valid and invalid ones mixed, several partitions whose names prefix each
other), crash the MemoryStore (the model falls back to what was synced) or reopen the LevelDB store, collect
garbage, and query everything with every bound and option; invariants compare the whole visible state and
count the stored keys, so nothing may leak either.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from borough.raft.records import ConfState, Entry, HardState, NodeId, SnapshotMeta
from borough.raft.storage import LogCompacted, LogUnavailable
from borough.store import InvalidLogOperation, LevelDBStore, MemoryStore, Store, WriteBatch, encode_value
from borough.store import encoding as enc

NAMES = ["a", "ab", "a\x00", "a\x00b", "b", "é"]
KeyT = str | bytes

keys = st.one_of(
    st.text(alphabet="ab\x00é", min_size=1, max_size=3),
    st.binary(min_size=1, max_size=3).filter(lambda b: b[:1] != b"\xff"),
    st.sampled_from([b"\xff", b"\xff\xff", "\U0001f600"]),
)
bounds = st.one_of(st.none(), keys, st.just(""))
values = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2))
names = st.sampled_from(NAMES)


def kb(key: KeyT) -> bytes:
    return key.encode() if isinstance(key, str) else key


@dataclass
class PModel:
    hard: HardState = HardState()
    snap: SnapshotMeta = SnapshotMeta()
    applied: int = 0
    log: dict[int, Entry] = field(default_factory=dict)
    data: dict[bytes, tuple[KeyT, Any]] = field(default_factory=dict)
    records: set[str] = field(default_factory=set)  # which optional PART records have been written

    def last(self) -> int:
        return max(self.log) if self.log else self.snap.index

    def set_snapshot(self, meta: SnapshotMeta) -> None:
        if meta.index < self.snap.index:
            raise InvalidLogOperation("back")
        if self.log and meta.index > max(self.log):
            self.log.clear()
        self.snap = meta
        self.records.add("snap")


Model = dict[str, PModel]


def apply_op(model: Model, op: tuple[Any, ...]) -> None:
    """The model's semantics of one batch op; raises InvalidLogOperation like the store."""
    kind, name = op[0], op[1]
    if kind == "destroy":
        model.pop(name, None)
        return
    pm = model.setdefault(name, PModel())
    if kind == "hard":
        pm.hard = op[2]
        pm.records.add("hard")
    elif kind == "append":
        entries: list[Entry] = op[2]
        first = entries[0].index
        if first <= pm.snap.index or first > pm.last() + 1:
            raise InvalidLogOperation("append")
        for i in [i for i in pm.log if i >= first]:
            del pm.log[i]
        pm.log.update({e.index: e for e in entries})
    elif kind == "truncate":
        if op[2] <= pm.snap.index:
            raise InvalidLogOperation("truncate")
        for i in [i for i in pm.log if i >= op[2]]:
            del pm.log[i]
    elif kind == "compact":
        if op[2] > pm.snap.index:
            raise InvalidLogOperation("compact")
        for i in [i for i in pm.log if i <= op[2]]:
            del pm.log[i]
    elif kind == "snapmeta":
        pm.set_snapshot(op[2])
    elif kind == "apply":
        _, _, ops, applied = op
        if applied < pm.applied:
            raise InvalidLogOperation("applied")
        for o in ops:
            if o[0] == "put":
                pm.data[kb(o[1])] = (o[1], o[2])
            else:
                pm.data.pop(kb(o[1]), None)
        pm.applied = applied
        pm.records.add("applied")
    else:  # pragma: no cover
        raise AssertionError(kind)


def add_to_batch(b: WriteBatch, op: tuple[Any, ...]) -> None:
    kind, name = op[0], op[1]
    if kind == "destroy":
        b.destroy(name)
    elif kind == "hard":
        b.set_hard_state(name, op[2])
    elif kind == "append":
        b.append(name, op[2])
    elif kind == "truncate":
        b.truncate_suffix(name, op[2])
    elif kind == "compact":
        b.compact(name, op[2])
    elif kind == "snapmeta":
        b.set_snapshot_meta(name, op[2])
    elif kind == "apply":
        encoded = [(o[0], o[1], encode_value(o[2])) if o[0] == "put" else o for o in op[2]]
        b.apply(name, encoded, op[3])


def iterate_model(pm: PModel | None, kw: dict[str, Any]) -> list[Any]:
    items = sorted((pm.data if pm else {}).items())
    tests: list[tuple[str, Callable[[bytes, bytes], bool]]] = [
        ("gt", lambda k, b: k > b),
        ("gte", lambda k, b: k >= b),
        ("lt", lambda k, b: k < b),
        ("lte", lambda k, b: k <= b),
    ]
    for bound, keep in tests:
        if kw.get(bound) is not None:
            b = kb(kw[bound])
            items = [it for it in items if keep(it[0], b)]
    if kw["reverse"]:
        items.reverse()
    if kw["limit"] is not None:
        items = items[: kw["limit"]]
    if kw["keys"] and kw["values"]:
        return [(k, v) for _, (k, v) in items]
    if kw["keys"]:
        return [k for _, (k, _) in items]
    return [v for _, (_, v) in items]


@st.composite
def abstract_ops(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    ops: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(names)
        kind = draw(st.sampled_from(["apply", "apply", "append", "append", "hard", "truncate", "compact",
                                     "snapmeta", "destroy"]))  # fmt: skip
        if kind == "apply":
            kv = draw(st.lists(st.tuples(st.sampled_from(["put", "put", "del"]), keys, values), max_size=4))
            ops.append(("apply", name, kv, draw(st.integers(-1, 3))))
        elif kind == "append":
            ops.append(("append", name, draw(st.integers(-2, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))))
        elif kind == "hard":
            hs = HardState(term=draw(st.integers(0, 3)), vote=draw(st.sampled_from([None, NodeId("n1")])), commit=2)
            ops.append(("hard", name, hs))
        elif kind in ("truncate", "compact", "snapmeta"):
            ops.append((kind, name, draw(st.integers(-2, 3))))
        else:
            ops.append(("destroy", name))
    return ops


class StoreMachine(RuleBasedStateMachine):
    """Shared rules; subclasses say how to open the store and what a crash or restart does."""

    def __init__(self) -> None:
        super().__init__()
        self.model: Model = {}
        self.store: Store = self.open_store()

    def open_store(self) -> Store:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ writes

    def concretize(self, scratch: Model, op: tuple[Any, ...]) -> tuple[Any, ...]:
        """Turn offsets relative to the partition's state into indexes (so both valid and invalid ops occur)."""
        kind, name = op[0], op[1]
        pm = scratch.get(name, PModel())
        if kind == "apply":
            _, _, kv, delta = op
            return ("apply", name, [(o, k, v) if o == "put" else (o, k) for o, k, v in kv], max(0, pm.applied + delta))
        if kind == "append":
            _, _, offset, n, term = op
            first = max(1, pm.last() + 1 + offset)
            return ("append", name, [Entry(term=term, index=i, data=b"%d" % i) for i in range(first, first + n)])
        if kind == "truncate":
            return ("truncate", name, max(0, pm.last() + 1 + op[2] - 1))
        if kind == "compact":
            return ("compact", name, max(0, pm.snap.index + op[2] - 1))
        if kind == "snapmeta":
            index = max(0, pm.snap.index + op[2] + 1)
            conf = ConfState(voters=[NodeId("n1"), NodeId(name)])
            return ("snapmeta", name, SnapshotMeta(index=index, term=index % 3, conf_state=conf))
        return op

    @rule(ops=abstract_ops(), sync=st.booleans())
    def write(self, ops: list[tuple[Any, ...]], sync: bool) -> None:
        scratch = copy.deepcopy(self.model)
        b = self.store.write_batch()
        valid = True
        for abstract in ops:
            op = self.concretize(scratch, abstract)
            add_to_batch(b, op)
            try:
                apply_op(scratch, op)
            except InvalidLogOperation:
                valid = False
                break
        if valid:
            self.store.write(b, sync=sync)
            self.model = scratch
            if sync:
                self.synced()
        else:
            with pytest.raises(InvalidLogOperation):
                self.store.write(b, sync=sync)

    @rule(src=names, dst=names, delta=st.integers(-1, 1), chunk=st.integers(1, 200), finish=st.booleans())
    def install_snapshot(self, src: str, dst: str, delta: int, chunk: int, finish: bool) -> None:
        spm = self.model.get(src, PModel())
        with self.store.snapshot_chunks(src, max_chunk_bytes=chunk) as reader:
            assert reader.applied_index == spm.applied
            chunks = list(reader)
        inst = self.store.begin_snapshot_install(dst)
        for c in chunks:
            inst.add_chunk(c)
        if not finish:
            inst.abort()
            return
        b = self.store.write_batch()
        meta = SnapshotMeta(index=spm.applied, term=1)
        inst.finish(b, meta)
        scratch = copy.deepcopy(self.model)
        pm = scratch.setdefault(dst, PModel())
        try:
            pm.set_snapshot(meta)
        except InvalidLogOperation:
            with pytest.raises(InvalidLogOperation):
                self.store.write(b)
            inst.abort()  # the switch was never written: release the staged data
            return
        pm.data = dict(spm.data)
        pm.applied = spm.applied
        pm.records.add("applied")
        self.store.write(b, sync=False)
        self.model = scratch

    @rule(max_keys=st.integers(1, 20))
    def collect_garbage(self, max_keys: int) -> None:
        assert self.store.collect_garbage(max_keys) <= max_keys

    def synced(self) -> None:
        pass

    # ------------------------------------------------------------------------------------ reads

    @rule(name=names, gt=bounds, gte=bounds, lt=bounds, lte=bounds, opts=st.data())
    def iterate(self, name: str, gt: Any, gte: Any, lt: Any, lte: Any, opts: st.DataObject) -> None:
        kw: dict[str, Any] = {
            "gt": gt,
            "gte": gte if gt is None else None,
            "lt": lt,
            "lte": lte if lt is None else None,
            "reverse": opts.draw(st.booleans()),
            "limit": opts.draw(st.one_of(st.none(), st.integers(0, 4))),
        }
        kw["keys"], kw["values"] = opts.draw(st.sampled_from([(True, True), (True, False), (False, True)]))
        assert list(self.store.iterate(name, **kw)) == iterate_model(self.model.get(name), kw)

    @rule(name=names, key=keys)
    def get(self, name: str, key: KeyT) -> None:
        pm = self.model.get(name)
        if pm is None or kb(key) not in pm.data:
            with pytest.raises(KeyError):
                self.store.get(name, key)
        else:
            assert self.store.get(name, key) == pm.data[kb(key)][1]

    @rule(name=names, lo=st.integers(0, 12), n=st.integers(-1, 5), max_bytes=st.integers(0, 80))
    def entries(self, name: str, lo: int, n: int, max_bytes: int) -> None:
        pm = self.model.get(name, PModel())
        hi = lo + n
        if lo > hi:
            with pytest.raises(ValueError):
                self.store.entries(name, lo, hi, max_bytes)
        elif lo <= pm.snap.index:
            with pytest.raises(LogCompacted):
                self.store.entries(name, lo, hi, max_bytes)
        elif hi > pm.last() + 1:
            with pytest.raises(LogUnavailable):
                self.store.entries(name, lo, hi, max_bytes)
        else:
            expected: list[Entry] = []
            total = 0
            for i in range(lo, hi):
                total += pm.log[i].size()
                if expected and total > max_bytes:
                    break
                expected.append(pm.log[i])
            assert self.store.entries(name, lo, hi, max_bytes) == expected

    # ------------------------------------------------------------------------------------ invariants

    @invariant()
    def state_matches(self) -> None:
        store = self.store
        assert store.replicas() == sorted(self.model)
        for name in NAMES:
            pm = self.model.get(name, PModel())
            assert store.hard_state(name) == pm.hard
            assert store.snapshot_meta(name) == pm.snap
            assert store.applied_index(name) == pm.applied
            assert (store.first_index(name), store.last_index(name)) == (pm.snap.index + 1, pm.last())
            log = store.log_storage(name)
            for i in range(max(0, pm.snap.index - 1), pm.last() + 2):
                if i < pm.snap.index:
                    with pytest.raises(LogCompacted):
                        log.term(i)
                elif i == pm.snap.index:
                    assert log.term(i) == pm.snap.term
                elif i > pm.last():
                    with pytest.raises(LogUnavailable):
                        log.term(i)
                else:
                    assert log.term(i) == pm.log[i].term
            assert list(store.iterate(name)) == [kv for _, kv in sorted(pm.data.items())]

    @invariant()
    def nothing_leaks(self) -> None:
        if self.store.has_garbage:
            return
        expected = 2  # format version and id counter
        for pm in self.model.values():
            expected += 3 + len(pm.records) + len(pm.log) + len(pm.data)  # dir, name, gen + records + log + data
        stored = list(self.store._engine_reader().scan(b"", b"\xff" * 16))
        if not self.model:
            stored = [kv for kv in stored if kv[0] != enc.META_NEXT_ID]
            expected -= 1
        assert len(stored) == expected, stored

    def teardown(self) -> None:
        self.store.close()


class MemoryStoreMachine(StoreMachine):
    def open_store(self) -> Store:
        self.durable: Model = {}
        return MemoryStore()

    def synced(self) -> None:
        self.durable = copy.deepcopy(self.model)

    @rule()
    def sync(self) -> None:
        self.store.sync()
        self.synced()

    @rule()
    def crash(self) -> None:
        assert isinstance(self.store, MemoryStore)
        self.store.crash()
        self.model = copy.deepcopy(self.durable)


class LevelDBStoreMachine(StoreMachine):
    def open_store(self) -> Store:
        self.dir = tempfile.mkdtemp(prefix="borough-store-stateful-")
        return LevelDBStore.open(self.dir + "/db")

    @rule(now=st.integers(0, 3))
    def reopen(self, now: int) -> None:
        if now:  # reopening costs several fsyncs: do it in a quarter of the draws only
            return
        self.store.close()
        self.store = LevelDBStore.open(self.dir + "/db")

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.dir, ignore_errors=True)


TestMemoryStoreAgainstModel = MemoryStoreMachine.TestCase
TestLevelDBStoreAgainstModel = LevelDBStoreMachine.TestCase
TestMemoryStoreAgainstModel.settings = settings(settings(), stateful_step_count=40)
TestLevelDBStoreAgainstModel.settings = settings(settings(), stateful_step_count=40)
