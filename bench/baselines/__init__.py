"""Baselines measured in the same run as flarelab benchmarks: raw TCP, ChaCha pipe, py-libp2p."""
