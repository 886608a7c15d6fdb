"""AutoNAT metrics, named after go-libp2p's (p2p/host/autonat, p2p/protocol/autonatv2).

As in :mod:`flarelab.tracing.metrics`, instrument names are go's Prometheus names without
the suffix the exporter adds (``_total`` for counters), and attribute keys are go's labels.
With a no-op meter every method returns at once.

======================================================  =======  ===========================
instrument                                              kind     attributes
======================================================  =======  ===========================
``libp2p_autonat_reachability_status``                  gauge    (0 unknown, 1 public,
                                                                 2 private, as go)
``libp2p_autonat_reachability_status_confidence``       gauge
``libp2p_autonat_received_dial_response``               counter  response_status
``libp2p_autonat_outgoing_dial_response``               counter  response_status
``libp2p_autonat_outgoing_dial_refused``                counter  refusal_reason
``libp2p_autonat_next_probe_timestamp``                 gauge    (seconds, node clock)
``libp2p_autonatv2_requests_completed``                 counter  server_error,
                                                                 response_status,
                                                                 dial_status,
                                                                 dial_data_required,
                                                                 ip_or_dns_version, transport
``libp2p_autonatv2_client_requests_completed``          counter  response_status,
                                                                 dial_status, reachability
                                                                 (flarelab)
======================================================  =======  ===========================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry.metrics import Meter, NoOpMeter

from .reachability import Reachability

if TYPE_CHECKING:
    from ...multiaddr import Multiaddr

__all__ = ["AutoNATMetrics"]

REACHABILITY_STATUS: Final = "libp2p_autonat_reachability_status"
REACHABILITY_CONFIDENCE: Final = "libp2p_autonat_reachability_status_confidence"
RECEIVED_DIAL_RESPONSE: Final = "libp2p_autonat_received_dial_response"
OUTGOING_DIAL_RESPONSE: Final = "libp2p_autonat_outgoing_dial_response"
OUTGOING_DIAL_REFUSED: Final = "libp2p_autonat_outgoing_dial_refused"
NEXT_PROBE_TIMESTAMP: Final = "libp2p_autonat_next_probe_timestamp"
V2_REQUESTS_COMPLETED: Final = "libp2p_autonatv2_requests_completed"
V2_CLIENT_REQUESTS_COMPLETED: Final = "libp2p_autonatv2_client_requests_completed"

#: go's numbering of network.Reachability
_STATUS_VALUE: Final = {Reachability.UNKNOWN: 0, Reachability.PUBLIC: 1,
                        Reachability.PRIVATE: 2}


def _ip_and_transport(addr: Multiaddr | None) -> tuple[str, str]:
    if addr is None:
        return "", ""
    names = addr.protocol_names()
    version = names[0] if names else ""
    transport = "quic-v1" if "quic-v1" in names else (names[1] if len(names) > 1 else "")
    return version, transport


class AutoNATMetrics:
    """The AutoNAT family of one node."""

    def __init__(self, meter: Meter) -> None:
        self.enabled = not isinstance(meter, NoOpMeter)
        self._status = meter.create_gauge(
            REACHABILITY_STATUS, description="Current node reachability (0 unknown, 1 public, "
                                             "2 private)")
        self._confidence = meter.create_gauge(
            REACHABILITY_CONFIDENCE, description="Confidence in the current reachability")
        self._received = meter.create_counter(
            RECEIVED_DIAL_RESPONSE, description="Dial responses received (client)")
        self._outgoing = meter.create_counter(
            OUTGOING_DIAL_RESPONSE, description="Dial responses sent (server)")
        self._refused = meter.create_counter(
            OUTGOING_DIAL_REFUSED, description="Dial requests refused (server)")
        self._next_probe = meter.create_gauge(
            NEXT_PROBE_TIMESTAMP, unit="s", description="When the next probe is due")
        self._v2_server = meter.create_counter(
            V2_REQUESTS_COMPLETED, description="AutoNAT v2 requests completed (server)")
        self._v2_client = meter.create_counter(
            V2_CLIENT_REQUESTS_COMPLETED, description="AutoNAT v2 requests completed (client)")

    def record_reachability(self, status: Reachability, confidence: int) -> None:
        """Set the node's reachability and confidence gauges."""
        if self.enabled:
            self._status.set(_STATUS_VALUE[status])
            self._confidence.set(confidence)

    def record_response_received(self, status: str) -> None:
        """Count a v1 dial response a server sent us."""
        if self.enabled:
            self._received.add(1, {"response_status": status})

    def record_response_sent(self, status: str) -> None:
        """Count a v1 dial response we sent as a server."""
        if self.enabled:
            self._outgoing.add(1, {"response_status": status})

    def record_refused(self, reason: str) -> None:
        """Count a request we refused to dial for (rate limit, no valid address...)."""
        if self.enabled:
            self._refused.add(1, {"refusal_reason": reason})

    def record_next_probe(self, at: float) -> None:
        """Set when the next probe is due (seconds on the node's clock)."""
        if self.enabled:
            self._next_probe.set(at)

    def record_v2_served(
        self, *, response_status: str, dial_status: str, dial_data_required: bool,
        addr: Multiaddr | None, server_error: str = "",
    ) -> None:
        """Count a v2 request we served, however it ended."""
        if self.enabled:
            version, transport = _ip_and_transport(addr)
            self._v2_server.add(1, {
                "server_error": server_error, "response_status": response_status,
                "dial_status": dial_status,
                "dial_data_required": "true" if dial_data_required else "false",
                "ip_or_dns_version": version, "transport": transport,
            })

    def record_v2_probed(self, *, response_status: str, dial_status: str,
                         reachability: str) -> None:
        """Count a v2 request we made as a client."""
        if self.enabled:
            self._v2_client.add(1, {"response_status": response_status,
                                    "dial_status": dial_status, "reachability": reachability})
