"""Raft, one group per partition: a sans-IO core (no trio, sockets, clocks or plyvel) and its records.

Import what you need from its modules; this package's ``__init__`` imports nothing, so naming the log's records
(``borough.raft.records``) or the storage interface (``borough.raft.storage``), as the store and the ring do,
never loads the core. The driver of a replica uses ``borough.raft.rawnode.RawNode`` (see its docstring for the
persist -> send -> apply -> advance contract), configured by ``borough.raft.config.RaftConfig`` over a
``borough.raft.storage.LogStorage``; messages between replicas are the records of ``borough.raft.messages``.
"""
