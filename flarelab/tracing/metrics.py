"""Node metrics on the OpenTelemetry metrics API, named after go-libp2p's Prometheus metrics.

Instrument names are go-libp2p's without the suffix Prometheus adds: the counter
``libp2p_swarm_connections_opened`` is exported to Prometheus as
``libp2p_swarm_connections_opened_total``, and the histogram ``libp2p_swarm_handshake_latency``
(unit ``s``) as ``libp2p_swarm_handshake_latency_seconds``, as in go. Attribute keys are
go's label names (``dir``, ``transport``, ``security``, ``muxer``, ``ip_version``, ...).
Names without a go counterpart say so in ``tracing/CONVENTIONS.md``.

Metrics come in families, one small class per subsystem. :class:`NodeMetrics` *is* the
swarm family (``metrics.record_dial(...)``) and holds the others as attributes
(``metrics.identify``); later protocols add their family (holepunch, autonat, relay) the
same way. With a no-op meter every recording
method returns at once, so call sites never check whether metrics are on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry.metrics import Meter, NoOpMeter

if TYPE_CHECKING:
    from ..flare.metrics import AutoRelayMetrics
    from ..protocols.autonat.metrics import AutoNATMetrics
    from ..protocols.dcutr.metrics import HolePunchMetrics
    from ..protocols.relay.metrics import RelayServiceMetrics

__all__ = [
    "CONNECTION_DURATION_BUCKETS",
    "HANDSHAKE_LATENCY_BUCKETS",
    "IdentifyMetrics",
    "NodeMetrics",
    "SwarmMetrics",
]

# ---------------------------------------------------------------- instrument names
SWARM_CONNECTIONS_OPENED: Final = "libp2p_swarm_connections_opened"
SWARM_CONNECTIONS_CLOSED: Final = "libp2p_swarm_connections_closed"
SWARM_CONNECTIONS_REFUSED: Final = "libp2p_swarm_connections_refused"  # flarelab
SWARM_CONNECTION_DURATION: Final = "libp2p_swarm_connection_duration"
SWARM_HANDSHAKE_LATENCY: Final = "libp2p_swarm_handshake_latency"
SWARM_DIAL_ERRORS: Final = "libp2p_swarm_dial_errors"
SWARM_DIALS_PER_PEER: Final = "libp2p_swarm_dials_per_peer"
SWARM_DIAL_DURATION: Final = "libp2p_swarm_dial_duration"  # flarelab
SWARM_STREAMS_OPENED: Final = "libp2p_swarm_streams_opened"  # flarelab
IDENTIFY_IDENTIFY: Final = "libp2p_identify_identify"
IDENTIFY_IDENTIFY_PUSH: Final = "libp2p_identify_identify_push"

#: go-libp2p's buckets: ExponentialBuckets(0.001, 1.3, 35) and (1/16, 2, 25).
HANDSHAKE_LATENCY_BUCKETS: Final = tuple(0.001 * 1.3**i for i in range(35))
CONNECTION_DURATION_BUCKETS: Final = tuple(2.0**i / 16 for i in range(25))
#: Dial durations, seconds: 1 ms .. 60 s.
DIAL_DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

_NUM_DIALS: Final = ("0", "1", "2", "3", "4", "5")


class SwarmMetrics:
    """Connections, dials, handshakes and streams (go-libp2p's ``libp2p_swarm_*``)."""

    def __init__(self, meter: Meter, enabled: bool) -> None:
        self.enabled = enabled
        self._opened = meter.create_counter(
            SWARM_CONNECTIONS_OPENED, description="Connections opened"
        )
        self._closed = meter.create_counter(
            SWARM_CONNECTIONS_CLOSED, description="Connections closed"
        )
        self._refused = meter.create_counter(
            SWARM_CONNECTIONS_REFUSED, description="Inbound connections refused by a limit"
        )
        self._duration = meter.create_histogram(
            SWARM_CONNECTION_DURATION,
            unit="s",
            description="Duration of a connection",
            explicit_bucket_boundaries_advisory=CONNECTION_DURATION_BUCKETS,
        )
        self._handshake = meter.create_histogram(
            SWARM_HANDSHAKE_LATENCY,
            unit="s",
            description="Duration of the libp2p handshake (security and muxer upgrade)",
            explicit_bucket_boundaries_advisory=HANDSHAKE_LATENCY_BUCKETS,
        )
        self._dial_errors = meter.create_counter(SWARM_DIAL_ERRORS, description="Dial errors")
        self._dials_per_peer = meter.create_counter(
            SWARM_DIALS_PER_PEER, description="Number of addresses dialed per peer"
        )
        self._dial_duration = meter.create_histogram(
            SWARM_DIAL_DURATION,
            unit="s",
            description="Duration of a dial to a peer, from the first address to a connection",
            explicit_bucket_boundaries_advisory=DIAL_DURATION_BUCKETS,
        )
        self._streams = meter.create_counter(
            SWARM_STREAMS_OPENED, description="Streams opened, by protocol"
        )

    def record_connection_opened(
        self, direction: str, transport: str, *, security: str = "", muxer: str = "",
        ip_version: str = "",
    ) -> None:
        """Count a connection that finished its upgrade."""
        if self.enabled:
            self._opened.add(1, _conn_labels(direction, transport, security, muxer, ip_version))

    def record_connection_closed(
        self, direction: str, transport: str, *, duration_s: float | None = None,
        security: str = "", muxer: str = "", ip_version: str = "",
    ) -> None:
        """Count a closed connection and, if given, record how long it lived."""
        if self.enabled:
            labels = _conn_labels(direction, transport, security, muxer, ip_version)
            self._closed.add(1, labels)
            if duration_s is not None:
                self._duration.record(duration_s, labels)

    def record_refused(self, *, transport: str) -> None:
        """Count an inbound connection refused because a limit was reached."""
        if self.enabled:
            self._refused.add(1, {"transport": transport or "unknown"})

    def record_handshake(
        self, duration_s: float, *, transport: str, security: str = "", muxer: str = "",
        ip_version: str = "",
    ) -> None:
        """Record the duration of a connection upgrade (security + muxer)."""
        if self.enabled:
            labels = _conn_labels(None, transport, security, muxer, ip_version)
            self._handshake.record(duration_s, labels)

    def record_dial_error(self, *, transport: str, error: str, ip_version: str = "") -> None:
        """Count one failed dial of one address (error: "timeout", "connection refused", ...)."""
        if self.enabled:
            self._dial_errors.add(
                1, {"transport": transport or "unknown", "error": error, "ip_version": ip_version}
            )

    def record_dial(
        self, duration_s: float, *, transport: str = "", ok: bool = True,
        num_dials: int | None = None,
    ) -> None:
        """Record the end of a dial to a peer: outcome, duration and addresses tried."""
        if self.enabled:
            outcome = "success" if ok else "failed"
            self._dial_duration.record(
                duration_s, {"outcome": outcome, "transport": transport or "unknown"}
            )
            if num_dials is not None:
                dials = _NUM_DIALS[num_dials] if 0 <= num_dials < len(_NUM_DIALS) else ">=6"
                self._dials_per_peer.add(1, {"outcome": outcome, "num_dials": dials})

    def record_stream(self, protocol: str, *, direction: str) -> None:
        """Count a stream whose protocol was negotiated."""
        if self.enabled:
            self._streams.add(1, {"protocol": protocol, "dir": direction})


class IdentifyMetrics:
    """Identify exchanges and pushes (go-libp2p's ``libp2p_identify_*``)."""

    def __init__(self, meter: Meter, enabled: bool) -> None:
        self.enabled = enabled
        self._identify = meter.create_counter(IDENTIFY_IDENTIFY, description="Identify")
        self._push = meter.create_counter(IDENTIFY_IDENTIFY_PUSH, description="Identify push")

    def record_identify(self, *, direction: str, outcome: str = "success") -> None:
        """Count an identify exchange (outbound: we asked; inbound: we answered)."""
        if self.enabled:
            self._identify.add(1, {"dir": direction, "outcome": outcome})

    def record_identify_push(self, *, direction: str) -> None:
        """Count an identify push sent (outbound) or received (inbound)."""
        if self.enabled:
            self._push.add(1, {"dir": direction})


class NodeMetrics(SwarmMetrics):
    """All metric families of one node, on one meter.

    The swarm family's methods are the node's own (``metrics.record_dial(...)``); the
    protocols' families are attributes (``metrics.identify.record_identify(...)``).
    """

    def __init__(self, meter: Meter) -> None:
        enabled = not isinstance(meter, NoOpMeter)
        super().__init__(meter, enabled)
        #: False when the meter is a no-op: every recording method then returns at once.
        self.enabled = enabled
        self.meter = meter
        self.identify = IdentifyMetrics(meter, enabled)
        #: the Flare families, set by the services when they run on the node
        #: (:func:`flarelab.flare.enable_flare` wires them all); on the same meter
        self.autonat: AutoNATMetrics | None = None
        self.holepunch: HolePunchMetrics | None = None
        self.relay_service: RelayServiceMetrics | None = None
        self.autorelay: AutoRelayMetrics | None = None


def _conn_labels(
    direction: str | None, transport: str, security: str, muxer: str, ip_version: str
) -> dict[str, str]:
    labels = {"dir": direction} if direction is not None else {}
    labels |= {
        "transport": transport or "unknown",
        "security": security,
        "muxer": muxer,
        "early_muxer": "false",
        "ip_version": ip_version,
    }
    return labels
