"""Events a muxer core emits: what happened, for the driver to act on (wake, trace, close).

Frozen, slotted dataclasses named subject + action, past tense. Stream events carry the
core's :class:`~flarelab.muxers.state.StreamRecord`, so the driver reaches its stream object
without a lookup; the record's fields say the rest (id, direction, counters, reason).
Payload bytes are not in the events: they wait in the record's receive buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .state import ResetCause, StreamRecord

__all__ = [
    "GoAwayReceived",
    "InboundStreamOpened",
    "InboundStreamRejected",
    "KeepaliveTimedOut",
    "MuxerEvent",
    "RttMeasured",
    "StreamAcknowledged",
    "StreamClosed",
    "StreamDataReceived",
    "StreamEofReceived",
    "StreamReset",
    "StreamWindowUpdated",
]


@dataclass(frozen=True, slots=True)
class InboundStreamOpened:
    """The peer opened a stream; it waits in the accept backlog."""

    stream: StreamRecord


@dataclass(frozen=True, slots=True)
class InboundStreamRejected:
    """The peer opened a stream and we reset it at once (a limit, or we are going away)."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamDataReceived:
    """A stream's empty receive buffer got ``size`` bytes: it became readable.

    Emitted only on the empty -> non-empty change: more bytes may follow without another
    event until the application has read the buffer empty (a reader waits only then).
    """

    stream: StreamRecord
    size: int


@dataclass(frozen=True, slots=True)
class StreamEofReceived:
    """The peer half-closed: after the buffered bytes the stream reads EOF."""

    stream: StreamRecord


@dataclass(frozen=True, slots=True)
class StreamReset:
    """A stream was reset (by the peer, locally, or for a violation on it)."""

    stream: StreamRecord
    cause: ResetCause


@dataclass(frozen=True, slots=True)
class StreamWindowUpdated:
    """The peer granted more send window (Yamux)."""

    stream: StreamRecord
    delta: int


@dataclass(frozen=True, slots=True)
class StreamAcknowledged:
    """The peer acknowledged a stream we opened (Yamux ACK)."""

    stream: StreamRecord


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """A stream finished (both halves closed or reset) and left the core's table."""

    stream: StreamRecord


@dataclass(frozen=True, slots=True)
class RttMeasured:
    """A ping came back: ``rtt`` is this sample, ``smoothed`` the running estimate (seconds)."""

    rtt: float
    smoothed: float


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will open no more streams (Yamux GoAway; 0 normal, 1 protocol, 2 internal)."""

    code: int


@dataclass(frozen=True, slots=True)
class KeepaliveTimedOut:
    """A keepalive ping went unanswered and nothing else arrived for ``idle`` seconds."""

    idle: float


MuxerEvent = (
    InboundStreamOpened
    | InboundStreamRejected
    | StreamDataReceived
    | StreamEofReceived
    | StreamReset
    | StreamWindowUpdated
    | StreamAcknowledged
    | StreamClosed
    | RttMeasured
    | GoAwayReceived
    | KeepaliveTimedOut
)
