"""REST conformance suite: the documented HTTP contract, run against the local mesh or any deployed edge."""
