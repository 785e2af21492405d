"""A serializability checker over recorded transactions, and a recorder of handler transactions (issue 18).

``check_serializable`` takes committed transactions, each with its place in commit order, the version of each
key it read and the version of each key it wrote, and says whether some serial order explains them (Adya's
direct serialization graph: write-write, write-read and read-write anti-dependency edges between committed
transactions; serializable iff the graph has no cycle). Each key's versions are ordered by the commit order of
their writers; a read of version ``v`` saw the latest write of ``v`` committed before the reader (so a value
written, overwritten and written again is still placed right), or the key's initial version (``INITIAL``,
e.g. missing). A read of a version no earlier committed transaction wrote is a dirty read (of an aborted or a
not yet committed write) and is reported as such. Any value can serve as a version as long as a key's versions
are distinguishable where it matters: a counter's values, unique ids, or the digests the recorder uses.

``record_handler_transactions`` records the handler transactions the partitions of a ``SimCluster`` (or any
nodes in this process) commit, as every replica applies them, and plain writes as transactions that only write,
so users can check their own handlers the same way: keys are ``(partition, key)``, versions are digests of the
encoded values (None: missing), commit order is
``(partition, log index)`` (transactions touch one partition; their effects on others are separate
writes, not part of the transaction).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

__all__ = ["INITIAL", "SerialResult", "Txn", "check_serializable", "record_handler_transactions"]

#: The version of a key no transaction wrote yet.
INITIAL: Any = None


@attrs.frozen(kw_only=True)
class Txn:
    """One committed transaction: ``commit`` its place in commit order (unique; any ordered value, such as
    ``(partition, log index)``), ``reads`` and ``writes`` the version of each key it read (the first time) and
    wrote (the last time)."""

    id: Hashable
    commit: Any
    reads: Mapping[Hashable, Hashable] = attrs.field(factory=dict)
    writes: Mapping[Hashable, Hashable] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class SerialResult:
    ok: bool
    explanation: str = ""
    #: The transactions of a cycle found (each depends on the next), if that is why it is not serializable.
    cycle: tuple[Hashable, ...] = ()


def check_serializable(txns: Iterable[Txn]) -> SerialResult:
    """Whether the committed transactions ``txns`` are serializable (see the module docstring)."""
    ordered = sorted(txns, key=lambda t: t.commit)
    writers: dict[Hashable, list[Txn]] = defaultdict(list)  # per key, in commit order
    for txn in ordered:
        for key in txn.writes:
            writers[key].append(txn)
    edges: dict[Hashable, set[Hashable]] = {t.id: set() for t in ordered}
    why: dict[tuple[Hashable, Hashable], str] = {}

    def edge(a: Txn, b: Txn, kind: str, key: Hashable) -> None:
        if a.id != b.id:
            edges[a.id].add(b.id)
            why.setdefault((a.id, b.id), f"{kind} on {key!r}")

    for key, chain in writers.items():
        for a, b in zip(chain, chain[1:], strict=False):
            edge(a, b, "ww", key)
    for txn in ordered:
        for key, version in txn.reads.items():
            chain = writers.get(key, [])
            before = [w for w in chain if w.commit < txn.commit]
            source = next((w for w in reversed(before) if w.writes[key] == version), None)
            if source is None and version != INITIAL:
                return SerialResult(
                    ok=False,
                    explanation=f"{txn.id!r} read {key!r} = {version!r}, which no transaction committed before it "
                    "wrote (a dirty read of an aborted or uncommitted write)",
                )
            if source is not None:
                edge(source, txn, "wr", key)
            after = chain[chain.index(source) + 1 :] if source is not None else chain
            nxt = next((w for w in after if w.id != txn.id), None)
            if nxt is not None:
                edge(txn, nxt, "rw", key)
    cycle = _find_cycle(edges)
    if cycle:
        steps = ", ".join(f"{a!r} -{why[(a, b)]}-> {b!r}" for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True))
        return SerialResult(ok=False, explanation=f"dependency cycle: {steps}", cycle=tuple(cycle))
    return SerialResult(ok=True)


def _find_cycle(edges: Mapping[Hashable, set[Hashable]]) -> list[Hashable]:
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for root in edges:
        if colour[root] != white:
            continue
        stack: list[tuple[Hashable, Iterator[Hashable]]] = [(root, iter(sorted(edges[root], key=repr)))]
        path = [root]
        colour[root] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = black
                stack.pop()
                path.pop()
            elif colour[child] == grey:
                return path[path.index(child) :]
            elif colour[child] == white:
                colour[child] = grey
                stack.append((child, iter(sorted(edges[child], key=repr))))
                path.append(child)
    return []


@contextmanager
def record_handler_transactions() -> Iterator[list[Txn]]:
    """Record every handler transaction committed in this process while the block runs (see the module
    docstring), and every plain write as a transaction that only writes (so the versions handlers read from
    them are known); the list fills in as replicas apply them, one ``Txn`` per (partition, log index)."""
    from borough.node.statemachine import KvStateMachine
    from borough.node.txn_command import Committed, TxnCommand, value_digest

    recorded: list[Txn] = []
    seen: set[tuple[str, int]] = set()
    txn_entries: set[tuple[str, int]] = set()
    original_txn = KvStateMachine._apply_txn
    original_apply = KvStateMachine.apply

    def add(p: str, index: int, reads: Mapping[Hashable, Hashable], ops: Iterable[list[Any]]) -> None:
        if (p, index) in seen:
            return  # another replica applied it already
        seen.add((p, index))
        writes: dict[Hashable, Hashable] = {
            (p, _k(op[1])): value_digest(op[2] if op[0] == "put" else None) for op in ops
        }
        recorded.append(Txn(id=(p, index), commit=(p, index), reads=reads, writes=writes))

    def watched_txn(
        self: KvStateMachine, index: int, stamp: float, txn: TxnCommand, ops: list[Any], pending: Any
    ) -> Any:
        txn_entries.add((self.partition, index))
        result = original_txn(self, index, stamp, txn, ops, pending)
        if isinstance(result, Committed) and not result.duplicate and (txn.ops or txn.reads):
            add(self.partition, index, {(self.partition, _k(k)): d for k, d in txn.reads}, txn.ops)
        return result

    def watched_apply(self: KvStateMachine, entries: Any) -> tuple[list[Any], dict[int, Any]]:
        ops: list[Any] = []
        results: dict[int, Any] = {}
        for entry in entries:  # one at a time (the state machine's round spans the calls): each index's own ops
            new_ops, new_results = original_apply(self, [entry])
            ops += new_ops
            results.update(new_results)
            if new_ops and (self.partition, entry.index) not in txn_entries:
                add(self.partition, entry.index, {}, new_ops)
        return ops, results

    KvStateMachine._apply_txn = watched_txn  # type: ignore[method-assign]
    KvStateMachine.apply = watched_apply  # type: ignore[method-assign]
    try:
        yield recorded
    finally:
        KvStateMachine._apply_txn = original_txn  # type: ignore[method-assign]
        KvStateMachine.apply = original_apply  # type: ignore[method-assign]


def _k(key: str | bytes) -> bytes:
    from borough.kv import encode_key

    return encode_key(key)
