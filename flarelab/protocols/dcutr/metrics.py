"""go-libp2p's hole-punch metric family (``libp2p_holepunch_*``) on the OpenTelemetry API.

Names drop the ``_total`` suffix the Prometheus exporter adds back, as everywhere in
flarelab (``tracing/CONVENTIONS.md``); labels are go's:

=========================================  =======  ===========================================
instrument                                 kind     attributes
=========================================  =======  ===========================================
``libp2p_holepunch_direct_dials``          counter  outcome (success, failed): reversal dials
``libp2p_holepunch_outcomes``              counter  side, num_attempts, outcome
``libp2p_holepunch_address_outcomes``      counter  side, num_attempts, ipv, transport, outcome
``libp2p_holepunch_time_to_direct``        hist, s  side, transport (flarelab: from the relayed
                                                    connection's opening to the direct one)
=========================================  =======  ===========================================

``outcome`` of ``libp2p_holepunch_outcomes`` is our taxonomy (go's success / failed /
no_suitable_address, plus timeout, protocol_error, direct_dial, connection_reversed). Per
address, as go computes it: each of our offered addresses is ``success`` if the direct
connection used its IP version and transport, ``cancelled`` if a connection came on
another, ``failed`` if none came although the peer offered that kind, and
``no_suitable_address`` if the peer offered none of that kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from .addresses import punch_key

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

    from ...multiaddr import Multiaddr

__all__ = [
    "HOLEPUNCH_ADDRESS_OUTCOMES",
    "HOLEPUNCH_DIRECT_DIALS",
    "HOLEPUNCH_OUTCOMES",
    "HOLEPUNCH_TIME_TO_DIRECT",
    "HolePunchMetrics",
]

HOLEPUNCH_DIRECT_DIALS: Final = "libp2p_holepunch_direct_dials"
HOLEPUNCH_OUTCOMES: Final = "libp2p_holepunch_outcomes"
HOLEPUNCH_ADDRESS_OUTCOMES: Final = "libp2p_holepunch_address_outcomes"
HOLEPUNCH_TIME_TO_DIRECT: Final = "libp2p_holepunch_time_to_direct"  # flarelab

#: seconds: 10 ms .. 60 s
TIME_TO_DIRECT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
)


def num_attempts_label(n: int) -> str:
    """go's label: "0".."5", then "> 5"."""
    return str(n) if 0 <= n <= 5 else "> 5"


def _kind(addr: Multiaddr) -> tuple[str, str] | None:
    key = punch_key(addr)
    return None if key is None else (f"ip{key[0]}", key[1])


class HolePunchMetrics:
    """Recording methods return at once when ``enabled`` is False (a no-op meter)."""

    def __init__(self, meter: Meter, enabled: bool) -> None:
        self.enabled = enabled
        self._direct_dials = meter.create_counter(
            HOLEPUNCH_DIRECT_DIALS, description="Direct Dials Total")
        self._outcomes = meter.create_counter(
            HOLEPUNCH_OUTCOMES, description="Hole Punch outcomes overall")
        self._address_outcomes = meter.create_counter(
            HOLEPUNCH_ADDRESS_OUTCOMES, description="Hole Punch outcomes by Transport")
        self._time_to_direct = meter.create_histogram(
            HOLEPUNCH_TIME_TO_DIRECT, unit="s",
            description="From a relayed connection's opening to a direct connection",
            explicit_bucket_boundaries_advisory=TIME_TO_DIRECT_BUCKETS)

    def record_direct_dial(self, *, ok: bool) -> None:
        """Count a connection-reversal dial."""
        if self.enabled:
            self._direct_dials.add(1, {"outcome": "success" if ok else "failed"})

    def record_finished(
        self,
        *,
        side: str,
        attempts: int,
        outcome: str,
        ours: Iterable[Multiaddr],
        theirs: Iterable[Multiaddr],
        direct: Multiaddr | None,
        elapsed: float | None = None,
    ) -> None:
        """Count the end of an upgrade (B) or of a round (A), overall and per address."""
        if not self.enabled:
            return
        num = num_attempts_label(attempts)
        self._outcomes.add(1, {"side": side, "num_attempts": num, "outcome": outcome})
        won = _kind(direct) if direct is not None else None
        their_kinds = {k for a in theirs if (k := _kind(a)) is not None}
        for kind in (k for a in ours if (k := _kind(a)) is not None):  # per address, as go
            if kind not in their_kinds:
                result = "no_suitable_address"
            elif won == kind:
                result = "success"
            elif won is not None:
                result = "cancelled"
            else:
                result = "failed"
            self._address_outcomes.add(1, {"side": side, "num_attempts": num, "ipv": kind[0],
                                           "transport": kind[1], "outcome": result})
        if direct is not None and elapsed is not None:
            transport = won[1] if won is not None else "other"
            self._time_to_direct.record(elapsed, {"side": side, "transport": transport})
