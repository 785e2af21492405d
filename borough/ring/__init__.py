"""Placement and membership: the hash ring, SWIM failure detection and the placement planner."""
