"""The autorelay metric family (``libp2p_autorelay_*``), named after go-libp2p's.

Instrument names are go's without the suffix the Prometheus exporter adds (``_total``), as
everywhere in flarelab (tracing/CONVENTIONS.md); attribute keys are go's labels. With a
no-op meter every method returns at once.

=============================================  =======  ================================
instrument                                     kind     attributes
=============================================  =======  ================================
``libp2p_autorelay_status``                    gauge    (1 looking for relays, 0 not)
``libp2p_autorelay_reservations_opened``       counter
``libp2p_autorelay_reservations_closed``       counter
``libp2p_autorelay_reservation_requests_outcome``  counter  request_type (new), outcome
``libp2p_autorelay_relay_addresses_count``     gauge
``libp2p_autorelay_candidates``                counter  type (added, removed)
``libp2p_autorelay_desired_reservations``      gauge
=============================================  =======  ================================
"""

from __future__ import annotations

from typing import Final

from opentelemetry.metrics import Meter, NoOpMeter

__all__ = ["AutoRelayMetrics"]

AUTORELAY_STATUS: Final = "libp2p_autorelay_status"
AUTORELAY_RESERVATIONS_OPENED: Final = "libp2p_autorelay_reservations_opened"
AUTORELAY_RESERVATIONS_CLOSED: Final = "libp2p_autorelay_reservations_closed"
AUTORELAY_REQUESTS_OUTCOME: Final = "libp2p_autorelay_reservation_requests_outcome"
AUTORELAY_RELAY_ADDRESSES: Final = "libp2p_autorelay_relay_addresses_count"
AUTORELAY_CANDIDATES: Final = "libp2p_autorelay_candidates"
AUTORELAY_DESIRED: Final = "libp2p_autorelay_desired_reservations"


class AutoRelayMetrics:
    """What the Flare orchestrator does with relays, on one node's meter."""

    def __init__(self, meter: Meter) -> None:
        self.enabled = not isinstance(meter, NoOpMeter)
        self._status = meter.create_gauge(
            AUTORELAY_STATUS, description="Relay finder active (1) or not (0)")
        self._opened = meter.create_counter(
            AUTORELAY_RESERVATIONS_OPENED, description="Reservations opened")
        self._closed = meter.create_counter(
            AUTORELAY_RESERVATIONS_CLOSED, description="Reservations closed")
        self._outcome = meter.create_counter(
            AUTORELAY_REQUESTS_OUTCOME, description="Reservation requests by outcome")
        self._addresses = meter.create_gauge(
            AUTORELAY_RELAY_ADDRESSES, description="Relay addresses advertised")
        self._candidates = meter.create_counter(
            AUTORELAY_CANDIDATES, description="Relay candidates added and removed")
        self._desired = meter.create_gauge(
            AUTORELAY_DESIRED, description="Reservations wanted")

    def record_status(self, seeking: bool) -> None:
        """Set whether we are looking for relays."""
        if self.enabled:
            self._status.set(1 if seeking else 0)

    def record_request(self, outcome: str) -> None:
        """Count a first RESERVE on a relay and its outcome (``success`` or an error)."""
        if self.enabled:
            self._outcome.add(1, {"request_type": "new", "outcome": outcome})
            if outcome == "success":
                self._opened.add(1)

    def record_closed(self) -> None:
        """Count a reservation that ended (lost or released)."""
        if self.enabled:
            self._closed.add(1)

    def record_addresses(self, count: int) -> None:
        """Set how many circuit addresses we advertise."""
        if self.enabled:
            self._addresses.set(count)

    def record_candidate(self, added: bool) -> None:
        """Count a relay candidate added or removed."""
        if self.enabled:
            self._candidates.add(1, {"type": "added" if added else "removed"})

    def record_desired(self, count: int) -> None:
        """Set how many reservations we want."""
        if self.enabled:
            self._desired.set(count)
