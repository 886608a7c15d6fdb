"""Shared test configuration.

Rules for every test module (as trio-websocket states them): loopback only, port 0,
deterministic, no wall-clock sleeps -- use the ``autojump_clock`` fixture, events and
bounded waits (``trio.fail_after``).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci")
