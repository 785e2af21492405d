"""borough.testing: deterministic simulation of whole clusters, fault injection, linearizability checking."""
