"""libp2p application protocols: identify, ping, perf (and, later, AutoNAT, relay, DCUtR...)."""
