"""Tracing: span names and helpers (spans), per-node providers, the live span bus, exporters."""
