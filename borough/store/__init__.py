"""Storage: every replica's Raft state and key/value data in one LevelDB per node, and an in-memory twin."""
