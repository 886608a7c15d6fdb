"""HolePunchConfig: how the hole-punch service behaves (times in seconds)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import LocalProtocolError
from ...transports.quic.config import InitialResend
from .addresses import MAX_DIAL_ADDRS, MAX_OFFERED_ADDRS

__all__ = ["HolePunchConfig"]


@dataclass(frozen=True)
class HolePunchConfig:
    """Timeouts, attempts and limits of DCUtR, with go- and rust-libp2p's choices.

    go: 3 attempts, a 5 s direct (reversal) dial, 5 s per hole-punch dial, a 1 min stream
    deadline; rust: 3 attempts, 10 s stream timeouts.
    """

    #: CONNECT/SYNC rounds (and punches) before giving up (the spec: B retries twice)
    max_attempts: int = 3
    #: B dials A's public addresses before punching (the spec's connection reversal);
    #: this needs A's identify first, one relayed RTT (False: start at once, as rust)
    connection_reversal: bool = True
    reversal_timeout: float = 5.0
    #: how long B waits for identify on the relayed connection (A's addresses, protocols)
    identify_timeout: float = 10.0
    #: one CONNECT/SYNC exchange, on either side
    exchange_timeout: float = 10.0
    #: one attempt's dial or punch
    punch_timeout: float = 5.0
    #: B's QUIC punch: random bytes at random intervals in this range (the spec: 10-200 ms)
    punch_interval: tuple[float, float] = (0.010, 0.200)
    punch_packet_size: int = 64
    #: A's QUIC dial re-sends its first flight (Initial) this often until B answers, at
    #: most ``quic_initial_resends`` times (0: never), because B's NAT drops the Initial
    #: that arrives before B's first punch; QUIC alone would retry only after its PTO
    quic_initial_resend_interval: float = 0.010
    quic_initial_resends: int = 10
    #: close the relayed connection this long after the direct one opened (None: keep it)
    relay_grace: float | None = 5.0
    #: offer observed addresses that identify has not confirmed yet (rust does; a single
    #: observer could then make our peer dial an address of its choosing)
    trust_unconfirmed_observations: bool = False
    #: act as B: upgrade inbound relayed connections (False: only answer as A)
    initiate: bool = True
    #: B-side upgrades running at once (one per peer in any case)
    max_concurrent_upgrades: int = 32
    #: A-side rounds running at once (one per peer in any case)
    max_concurrent_rounds: int = 32
    #: rounds A serves over one relayed connection (B needs at most max_attempts)
    max_rounds_per_connection: int = 6
    max_offered_addrs: int = MAX_OFFERED_ADDRS
    max_dial_addrs: int = MAX_DIAL_ADDRS

    def __post_init__(self) -> None:
        low, high = self.punch_interval
        if not 0 < low <= high:
            raise LocalProtocolError(f"punch_interval must be 0 < low <= high, not {low, high}")
        if self.max_attempts < 1 or self.max_rounds_per_connection < 1:
            raise LocalProtocolError("max_attempts and max_rounds_per_connection must be >= 1")
        for name in ("reversal_timeout", "identify_timeout", "exchange_timeout",
                     "punch_timeout"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"{name} must be positive")
        self.quic_initial_resend()  # checks the interval and count

    def quic_initial_resend(self) -> InitialResend | None:
        """A's schedule for copies of a QUIC hole-punch dial's first flight (None: off)."""
        if self.quic_initial_resends == 0:
            InitialResend(self.quic_initial_resend_interval, 0)  # still check the interval
            return None
        return InitialResend(self.quic_initial_resend_interval, self.quic_initial_resends)
