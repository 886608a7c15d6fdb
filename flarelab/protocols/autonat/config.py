"""AutoNATConfig: what the AutoNAT service does, how often, and within which limits.

Defaults are go-libp2p's (p2p/host/autonat and p2p/protocol/autonatv2); every interval and
timeout is in seconds and can be made tiny for tests and simulations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .ratelimit import RateLimits
from .reachability import DEFAULT_MAX_CONFIDENCE

__all__ = ["AutoNATConfig"]


@dataclass(frozen=True)
class AutoNATConfig:
    """How the AutoNAT service behaves (client and server, v1 and v2)."""

    # ------------------------------------------------------------------ what runs
    #: answer v1 requests (/libp2p/autonat/1.0.0)
    server_v1: bool = True
    #: answer v2 requests (/libp2p/autonat/2/dial-request)
    server_v2: bool = True
    #: probe our reachability with v1 (drives the node-level status)
    client_v1: bool = True
    #: probe each of our addresses with v2 (and accept v2 dial-backs)
    client_v2: bool = True

    # ------------------------------------------------------------------ client schedule
    #: wait this long after start before the first probe (peers connect meanwhile)
    boot_delay: float = 15.0
    #: next probe while the status is unknown or not fully confident
    retry_interval: float = 90.0
    #: next probe once the status is settled
    refresh_interval: float = 15 * 60.0
    #: never probe twice within this gap (go: 1 s)
    min_probe_gap: float = 1.0
    #: do not ask the same server again within this period (go: 90 s for v1, 2 min for v2)
    throttle_server_period: float = 90.0
    #: the most agreeing answers a status keeps as confidence (more than this many flip it)
    max_confidence: int = DEFAULT_MAX_CONFIDENCE
    #: our addresses named in one request (go's servers look at 16)
    max_request_addrs: int = 16
    #: v2: addresses whose reachability we track
    max_tracked_addrs: int = 32
    #: a whole v1 probe (the server dials with its own timeout inside it; go: 30 s)
    v1_request_timeout: float = 30.0
    #: a whole v2 probe (go: 15 s stream deadline; dial data and a dial-back fit in it)
    v2_request_timeout: float = 30.0
    #: v2: wait this long for the dial-back after an OK response (go: 5 s)
    dial_back_wait: float = 5.0
    #: v2: pay dial data when a server asks (to have addresses on other IPs tested)
    send_dial_data: bool = True
    #: v2: refuse a server that asks for more dial data than this (spec: 30-100 kB)
    max_dial_data: int = 100_000

    # ------------------------------------------------------------------ server
    #: v1: one dial-back over all candidate addresses (go: 15 s)
    v1_dial_timeout: float = 15.0
    #: v1: stagger between the dial-backs of several candidate addresses
    v1_dial_stagger: float = 0.25
    #: v1: after a failed dial-back, answer only when the timeout is over, so the response
    #: time does not tell a port scanner which ports are closed (as go does)
    hide_dial_timing: bool = True
    #: v1: requested addresses the server dials at most (go: 16)
    max_dial_addrs: int = 16
    #: v2: the dial of the one chosen address (go: 10 s)
    v2_dial_timeout: float = 10.0
    #: v2: the dial-back stream exchange (go: 5 s)
    dial_back_timeout: float = 5.0
    #: how long a server waits for the client's request and dial data (go v2: 15 s)
    server_stream_timeout: float = 15.0
    #: v2: dial data asked when the address's IP is not the observed one (spec: 30-100 kB)
    dial_data_min: int = 30_000
    dial_data_max: int = 100_000
    #: v2: wait a random time up to this before an amplification-guarded dial (go: 3 s)
    amplification_dial_wait: float = 3.0
    #: v1 limits (go: 30 per minute, 3 per peer)
    v1_limits: RateLimits = field(
        default_factory=lambda: RateLimits(per_window=30, per_peer_per_window=3,
                                           max_in_flight_per_peer=1, dial_data_per_window=0)
    )
    #: v2 limits (go: 60 per minute, 12 per peer, 12 with dial data, 2 in flight per peer)
    v2_limits: RateLimits = field(
        default_factory=lambda: RateLimits(per_window=60, per_peer_per_window=12,
                                           max_in_flight_per_peer=2, dial_data_per_window=12)
    )

    #: random choices that need no secrecy (server order, dial data size, waits); nonces
    #: always come from the ``secrets`` module
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.dial_data_min <= self.dial_data_max:
            raise ValueError("need 0 < dial_data_min <= dial_data_max")
        if self.max_dial_data < 0 or self.max_confidence < 0:
            raise ValueError("max_dial_data and max_confidence must be >= 0")
