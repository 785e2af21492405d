"""Raft, one group per partition: a sans-IO core (no trio, sockets, clocks or plyvel) and its records."""
