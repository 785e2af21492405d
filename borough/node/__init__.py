"""The machinery that runs a node: small services, each in a module named for its one job.

This package's ``__init__`` imports nothing, so a client can use the routed session (``session``, ``routing``,
``directory``, ``protocol``) without loading the Raft core or LevelDB. ``borough.Node`` (in ``node``) wires
the services together; see the README's layout table for who does what.
"""
