"""The wire: CBOR frames, multiplexed streams, peer links, over TCP or a simulated network."""
