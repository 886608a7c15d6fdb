"""The spans of a QUIC connection: its handshake, its life, its streams.

The driver calls these at the seams (handshake done or failed, a stream opened or done,
the connection over), so the span names and attributes live in one place. They use the
OpenTelemetry API only; with the default tracer they cost next to nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from ...tracing import spans
from .tls import TLS_PROTOCOL_ID

if TYPE_CHECKING:
    from .core import QuicStats
    from .streams import QuicStream

__all__ = [
    "end_connection_span",
    "end_handshake_span",
    "end_stream_span",
    "start_connection_span",
    "start_handshake_span",
    "start_stream_span",
]


def start_handshake_span(tracer: Tracer, parent: Span, *, is_initiator: bool) -> Span:
    """``quic.handshake``, a child of ``quic.dial`` or ``quic.accept``."""
    return tracer.start_span(
        spans.QUIC_HANDSHAKE,
        context=trace.set_span_in_context(parent),
        attributes={
            spans.LIBP2P_ROLE: "initiator" if is_initiator else "responder",
            spans.LIBP2P_SECURITY: TLS_PROTOCOL_ID,
        },
    )


def end_handshake_span(span: Span, *, peer: object = None, error: BaseException | None) -> None:
    """End ``quic.handshake``: the verified peer (``tls.peer_verified``) or the error."""
    if error is None:
        span.add_event(spans.TLS_PEER_VERIFIED, {spans.LIBP2P_REMOTE_PEER_ID: str(peer)})
        span.set_attribute(spans.LIBP2P_REMOTE_PEER_ID, str(peer))
        span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
    else:
        span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_FAILED)
        span.set_attribute(spans.LIBP2P_REASON, str(error))
        spans.mark_error(span, error)
    span.end()


def start_connection_span(
    tracer: Tracer,
    parent: Span,
    *,
    peer: object,
    is_initiator: bool,
    remote: tuple[object, ...],
    datagram_size: int,
    odcid: bytes,
) -> Span:
    """``quic.connection``, from the verified handshake to the end."""
    return tracer.start_span(
        spans.QUIC_CONNECTION,
        context=trace.set_span_in_context(parent),
        attributes={
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
            spans.LIBP2P_DIRECTION: "outbound" if is_initiator else "inbound",
            spans.NETWORK_PEER_ADDRESS: str(remote[0]),
            spans.NETWORK_PEER_PORT: int(str(remote[1])),
            spans.LIBP2P_QUIC_DATAGRAM_SIZE: datagram_size,
            spans.LIBP2P_QUIC_ODCID: odcid.hex(),
        },
    )


def end_connection_span(
    span: Span,
    stats: QuicStats,
    *,
    bytes_sent: int,
    bytes_received: int,
    close_code: int,
    close_reason: str,
    violation: BaseException | None,
) -> None:
    """End ``quic.connection`` with the path statistics and how it closed."""
    span.set_attributes(
        {
            spans.LIBP2P_RTT_MS: round(stats.smoothed_rtt_ms, 3),
            spans.LIBP2P_QUIC_MIN_RTT_MS: round(stats.min_rtt_ms, 3),
            spans.LIBP2P_QUIC_CWND: stats.congestion_window,
            spans.LIBP2P_QUIC_PACKETS_SENT: stats.packets_sent,
            spans.LIBP2P_QUIC_PACKETS_LOST: stats.packets_lost,
            spans.LIBP2P_BYTES_SENT: bytes_sent,
            spans.LIBP2P_BYTES_RECEIVED: bytes_received,
            spans.LIBP2P_QUIC_CLOSE_CODE: close_code,
            spans.LIBP2P_CLOSE_REASON: close_reason,
        }
    )
    if violation is not None:
        spans.mark_error(span, violation, side="remote")
    span.end()


def start_stream_span(tracer: Tracer, *, stream_id: int, is_initiator: bool, peer: object) -> Span:
    """``quic.stream``, for one stream's life."""
    return tracer.start_span(
        spans.QUIC_STREAM,
        attributes={
            spans.LIBP2P_STREAM_ID: stream_id,
            spans.LIBP2P_DIRECTION: "outbound" if is_initiator else "inbound",
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
        },
    )


def end_stream_span(stream: QuicStream) -> None:
    """End ``quic.stream`` with its byte counts (and why it was reset, if it was)."""
    span = stream.span
    span.set_attribute(spans.LIBP2P_BYTES_SENT, stream.bytes_sent)
    span.set_attribute(spans.LIBP2P_BYTES_RECEIVED, stream.bytes_received)
    span.set_attribute(spans.LIBP2P_CLOSE_REASON, stream.reset_reason or "closed")
    span.end()
