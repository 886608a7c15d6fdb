"""Relay service metrics, named after go-libp2p's ``libp2p_relaysvc_*`` family.

Instrument names are go's without the suffix Prometheus adds (``_total``, ``_seconds``),
as everywhere in flarelab (tracing/CONVENTIONS.md); attribute keys are go's labels. With a
no-op meter every method returns at once.

================================================  =========  ========  ======================
instrument                                        kind       labels    go-libp2p
================================================  =========  ========  ======================
libp2p_relaysvc_status                            gauge                ``..._status``
libp2p_relaysvc_reservations                      counter    type      ``..._reservations_total``
libp2p_relaysvc_reservation_request_response...   counter    status    ``..._total``
libp2p_relaysvc_reservation_rejections            counter    reason    ``..._total``
libp2p_relaysvc_connections                       counter    type      ``..._connections_total``
libp2p_relaysvc_connection_request_response...    counter    status    ``..._total``
libp2p_relaysvc_connection_rejections             counter    reason    ``..._total``
libp2p_relaysvc_connection_duration               histogram            ``..._seconds``
libp2p_relaysvc_data_transferred_bytes            counter              ``..._total``
libp2p_relaysvc_limits_hit                        counter    limit     none (flarelab)
================================================  =========  ========  ======================

``type`` is ``opened``/``renewed``/``closed`` (reservations) or ``opened``/``closed``
(connections); ``status`` is ``ok``, ``rejected`` or ``error``; ``reason`` is go's wording.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.metrics import Meter, NoOpMeter

from .messages import Status

__all__ = ["RelayServiceMetrics"]

RELAYSVC_STATUS: Final = "libp2p_relaysvc_status"
RELAYSVC_RESERVATIONS: Final = "libp2p_relaysvc_reservations"
RELAYSVC_RESERVATION_STATUS: Final = "libp2p_relaysvc_reservation_request_response_status"
RELAYSVC_RESERVATION_REJECTIONS: Final = "libp2p_relaysvc_reservation_rejections"
RELAYSVC_CONNECTIONS: Final = "libp2p_relaysvc_connections"
RELAYSVC_CONNECTION_STATUS: Final = "libp2p_relaysvc_connection_request_response_status"
RELAYSVC_CONNECTION_REJECTIONS: Final = "libp2p_relaysvc_connection_rejections"
RELAYSVC_CONNECTION_DURATION: Final = "libp2p_relaysvc_connection_duration"
RELAYSVC_DATA_TRANSFERRED: Final = "libp2p_relaysvc_data_transferred_bytes"
RELAYSVC_LIMITS_HIT: Final = "libp2p_relaysvc_limits_hit"

#: circuit lifetimes, seconds: 10 ms .. 1 h (the default limit is 2 min)
CONNECTION_DURATION_BUCKETS: Final = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 3600.0,
)

_REJECTED: Final = {
    Status.RESERVATION_REFUSED: "ip constraint violation",
    Status.RESOURCE_LIMIT_EXCEEDED: "resource limit exceeded",
    Status.PERMISSION_DENIED: "permission denied",
    Status.NO_RESERVATION: "no reservation",
    Status.MALFORMED_MESSAGE: "malformed message",
}


def response_status(status: Status) -> str:
    """go's grouping of a status: ``ok``, ``rejected`` or ``error``."""
    if status is Status.OK:
        return "ok"
    return "rejected" if status in _REJECTED else "error"


class RelayServiceMetrics:
    """The relay service's counters (see the module docstring)."""

    def __init__(self, meter: Meter) -> None:
        self.enabled = not isinstance(meter, NoOpMeter)
        self._status = meter.create_gauge(RELAYSVC_STATUS, description="Relay Status")
        self._reservations = meter.create_counter(
            RELAYSVC_RESERVATIONS, description="Relay Reservation Request"
        )
        self._reservation_status = meter.create_counter(
            RELAYSVC_RESERVATION_STATUS, description="Relay Reservation Request Response Status"
        )
        self._reservation_rejections = meter.create_counter(
            RELAYSVC_RESERVATION_REJECTIONS, description="Relay Reservation Rejected Reason"
        )
        self._connections = meter.create_counter(
            RELAYSVC_CONNECTIONS, description="Relay Connection Total"
        )
        self._connection_status = meter.create_counter(
            RELAYSVC_CONNECTION_STATUS, description="Relay Connection Request Status"
        )
        self._connection_rejections = meter.create_counter(
            RELAYSVC_CONNECTION_REJECTIONS, description="Relay Connection Rejected Reason"
        )
        self._duration = meter.create_histogram(
            RELAYSVC_CONNECTION_DURATION,
            unit="s",
            description="Relay Connection Duration",
            explicit_bucket_boundaries_advisory=CONNECTION_DURATION_BUCKETS,
        )
        self._bytes = meter.create_counter(
            RELAYSVC_DATA_TRANSFERRED, unit="By", description="Bytes Transferred Total"
        )
        self._limits = meter.create_counter(
            RELAYSVC_LIMITS_HIT, description="Relayed connections reset by a limit"
        )

    def relay_status(self, enabled: bool) -> None:
        """The service started (1) or stopped (0)."""
        if self.enabled:
            self._status.set(1 if enabled else 0)

    def reservation_allowed(self, *, renewed: bool) -> None:
        """A reservation was opened or renewed."""
        if self.enabled:
            self._reservations.add(1, {"type": "renewed" if renewed else "opened"})

    def reservations_closed(self, count: int) -> None:
        """``count`` reservations ended (expired, or their connection closed)."""
        if self.enabled and count:
            self._reservations.add(count, {"type": "closed"})

    def reservation_request_handled(self, status: Status) -> None:
        """A RESERVE was answered with ``status``."""
        if self.enabled:
            self._handled(self._reservation_status, self._reservation_rejections, status)

    def connection_request_handled(self, status: Status) -> None:
        """A CONNECT was answered with ``status``."""
        if self.enabled:
            self._handled(self._connection_status, self._connection_rejections, status)

    def connection_opened(self) -> None:
        """A relayed connection started."""
        if self.enabled:
            self._connections.add(1, {"type": "opened"})

    def connection_closed(self, duration_s: float, *, limit_hit: str | None = None) -> None:
        """A relayed connection ended after ``duration_s`` (reset by ``limit_hit``, if any)."""
        if self.enabled:
            self._connections.add(1, {"type": "closed"})
            self._duration.record(duration_s)
            if limit_hit:
                self._limits.add(1, {"limit": limit_hit})

    def bytes_transferred(self, count: int) -> None:
        """The relay forwarded ``count`` bytes."""
        if self.enabled and count:
            self._bytes.add(count)

    @staticmethod
    def _handled(status_counter: object, rejections: object, status: Status) -> None:
        group = response_status(status)
        status_counter.add(1, {"status": group})  # type: ignore[attr-defined]
        if group == "rejected":
            rejections.add(1, {"reason": _REJECTED[status]})  # type: ignore[attr-defined]
