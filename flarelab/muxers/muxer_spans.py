"""MuxerTrace: the spans of one muxed connection, kept at the driver's seams.

A session span (``yamux.session`` / ``mplex.session``) per connection: role, peer, the
close reason, and as events GoAway sent/received, RTT samples (a ``Pong`` with
``libp2p.rtt_ms``), streams rejected on arrival (each also gets a stream span of its own,
marked as the peer's error) and a keepalive timeout. A stream span per
stream, child of the session span, from open to finished: id, direction, the peer, bytes
each way,
the close reason, and its control messages as ``message.sent`` / ``message.received``
events (SYN/ACK/FIN/RST in Yamux, NewStream/Close/Reset in Mplex). Data frames are never
events: they are the hot path.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from ..errors import LimitExceededError, RemoteProtocolError
from ..tracing import spans
from .state import ResetCause, StreamRecord

__all__ = ["MuxerTrace"]


class MuxerTrace:
    """The session span and the stream spans of one connection."""

    def __init__(
        self,
        tracer: Tracer,
        *,
        protocol_id: str,
        session_name: str,
        stream_name: str,
        message_names: dict[str, str | None],
        control_frame_size: int,
        peer: Any,
    ) -> None:
        self._tracer = tracer
        self._protocol_id = protocol_id
        self._session_name = session_name
        self._stream_name = stream_name
        self._names = message_names
        self._size = control_frame_size
        self._peer = peer
        self._peer_text = str(peer) if peer is not None else ""
        self.session: Span = trace.INVALID_SPAN
        self._context = trace.set_span_in_context(trace.INVALID_SPAN)

    def start_session(self, is_initiator: bool) -> None:
        """Open the session span."""
        self.session = self._tracer.start_span(
            self._session_name,
            attributes={
                spans.LIBP2P_MUXER: self._protocol_id,
                spans.LIBP2P_ROLE: "initiator" if is_initiator else "responder",
                spans.LIBP2P_REMOTE_PEER_ID: self._peer_text,
            },
        )
        self._context = trace.set_span_in_context(self.session)

    def end_session(self, reason: str, error: BaseException | None) -> None:
        """Close the session span with why the connection ended."""
        self.session.set_attribute(spans.LIBP2P_CLOSE_REASON, reason)
        if error is not None:
            spans.mark_error(self.session, error, side="remote")
        self.session.end()

    def start_stream(self, rec: StreamRecord) -> Span:
        """Open a stream span (a child of the session span)."""
        return self._tracer.start_span(
            self._stream_name,
            context=self._context,
            attributes={
                spans.LIBP2P_STREAM_ID: rec.stream_id,
                spans.LIBP2P_DIRECTION: "outbound" if rec.local else "inbound",
                spans.LIBP2P_MUXER: self._protocol_id,
                spans.LIBP2P_REMOTE_PEER_ID: self._peer_text,
            },
        )

    def end_stream(self, span: Span, rec: StreamRecord) -> None:
        """Close a stream span with its counters and close reason."""
        span.set_attribute(spans.LIBP2P_BYTES_SENT, rec.bytes_sent)
        span.set_attribute(spans.LIBP2P_BYTES_RECEIVED, rec.bytes_received)
        span.set_attribute(spans.LIBP2P_CLOSE_REASON, rec.close_reason or "closed")
        if rec.reset_cause in (ResetCause.PEER_VIOLATION, ResetCause.OVERFLOW):
            err = RemoteProtocolError(
                f"stream {rec.stream_id}: {rec.close_reason}",
                peer=self._peer,
                protocol=self._protocol_id,
            )
            spans.mark_error(span, err, side="remote")
        span.end()

    def sent(self, span: Span, message: str) -> None:
        """Record a stream control message we sent (``open``/``ack``/``close``/``reset``)."""
        name = self._names[message]
        if name is not None:
            spans.message_sent(span, name, self._size)

    def received(self, span: Span, message: str) -> None:
        """Record a stream control message the peer sent."""
        name = self._names[message]
        if name is not None:
            spans.message_received(span, name, self._size)

    def goaway_sent(self, code: int) -> None:
        """Record a GoAway we sent."""
        spans.message_sent(self.session, "GoAway", self._size, {"code": code})

    def goaway_received(self, code: int) -> None:
        """Record a GoAway the peer sent."""
        spans.message_received(self.session, "GoAway", self._size, {"code": code})

    def rtt(self, seconds: float) -> None:
        """Record a ping's round trip."""
        spans.message_received(
            self.session, "Pong", self._size, {spans.LIBP2P_RTT_MS: seconds * 1e3}
        )

    def rejected(self, stream_id: int, reason: str) -> None:
        """Record a stream the peer opened and we reset on arrival (over a limit).

        An event on the session span, and a stream span of its own, marked as the peer's
        error, so the refusal shows at once and names the peer.
        """
        self.session.add_event(
            "stream.rejected", {spans.LIBP2P_STREAM_ID: stream_id, spans.LIBP2P_REASON: reason}
        )
        span = self._tracer.start_span(
            self._stream_name,
            context=self._context,
            attributes={
                spans.LIBP2P_STREAM_ID: stream_id,
                spans.LIBP2P_DIRECTION: "inbound",
                spans.LIBP2P_MUXER: self._protocol_id,
                spans.LIBP2P_REMOTE_PEER_ID: self._peer_text,
                spans.LIBP2P_CLOSE_REASON: f"refused: {reason}",
            },
        )
        self.received(span, "open")
        self.sent(span, "reset")
        err = LimitExceededError(
            f"stream {stream_id} refused: {reason}", peer=self._peer, protocol=self._protocol_id
        )
        spans.mark_error(span, err, side="remote")
        span.end()

    def keepalive_timeout(self, idle: float) -> None:
        """Record the keepalive giving up on a silent peer."""
        self.session.add_event("keepalive.timeout", {"idle_s": idle})
