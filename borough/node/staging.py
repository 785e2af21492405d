"""A snapshot streamed to a replica, staged in the store until its Raft core decides whether to install it.

This module owns the life of one staged install: begun when a leader's stream arrives (replacing any earlier
unfinished one), offered to the core as an ``InstallSnapshot`` once every chunk is written, and then either
finished into the Ready's write batch (the core accepted exactly that snapshot) or aborted (the core refused it,
a newer stream replaced it, or the replica stopped). It never touches the core itself: the replica's driver
reports what the core saw and what the next Ready carried.
"""

from __future__ import annotations

from borough.errors import StorageError
from borough.raft.messages import InstallSnapshot, Message
from borough.raft.records import SnapshotMeta
from borough.store.base import Store
from borough.store.batch import WriteBatch
from borough.store.snapshot import SnapshotInstall

__all__ = ["SnapshotStaging"]


class SnapshotStaging:
    def __init__(self, store: Store, partition: str) -> None:
        self._store = store
        self._partition = partition
        self._install: SnapshotInstall | None = None
        self._meta: SnapshotMeta | None = None
        self._offered: InstallSnapshot | None = None  # the staged snapshot's message, once offered to the core
        self._stepped = False  # the core has seen the offer: the next Ready says whether it took it

    def begin(self, install: SnapshotInstall | None = None) -> SnapshotInstall:
        """Stage a new stream (an earlier unfinished one is aborted), in ``install`` if the store began it
        already (beginning writes to the store: the receiver does that off the event loop)."""
        if install is not None and install.partition != self._partition:
            raise ValueError(f"an install of {install.partition!r} cannot stage a snapshot of {self._partition!r}")
        self.abort()
        self._install = install if install is not None else self._store.begin_snapshot_install(self._partition)
        return self._install

    def offer(self, install: SnapshotInstall, message: InstallSnapshot) -> bool:
        """Every chunk of ``install`` is staged: returns whether ``message`` should go to the core (False when a
        newer stream replaced this one, whose data is then dropped)."""
        if self._install is not install or not install.done:
            install.abort()  # replaced by a newer stream, or incomplete: the core must never see it
            return False
        self._meta = message.meta
        self._offered = message
        return True

    def stepping(self, message: Message) -> None:
        """The driver is about to step ``message`` into the core."""
        if message is self._offered:
            self._offered = None
            self._stepped = True

    def settle(self, batch: WriteBatch, install: SnapshotMeta | None) -> None:
        """After the core's next Ready: finish the staged data into ``batch`` if the Ready installs it, or drop
        it if the core has seen the offer and did not take it."""
        if install is not None:
            staged, self._install = self._install, None
            if staged is None or self._meta != install:
                raise StorageError(
                    f"partition {self._partition!r}: the core accepted a snapshot whose data was not staged"
                )
            staged.finish(batch, install)
        elif self._stepped:
            self.abort()
        self._stepped = False

    def abort(self) -> None:
        if self._install is not None:
            self._install.abort()
        self._install = None
        self._meta = None
        self._offered = None
        self._stepped = False
