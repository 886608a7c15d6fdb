"""Stream state shared by the Yamux and Mplex cores: the two halves, their transitions, a record.

Both muxers give a stream two independent halves, as TCP does: the *send* half (ours) and
the *receive* half (the peer's). Each half is one of :class:`HalfState`. What may happen to
a half is written down as tables (plain dicts, in the manner of h11's ``_state.py``), so
the docs can draw them and the cores cannot disagree:

* :data:`RECV_TRANSITIONS` -- the peer sends data or half-closes (FIN / Close);
* :data:`SEND_TRANSITIONS` -- the application half-closes (``send_eof``);
* :data:`RECV_ON_APP_CLOSE` -- the application closes its handle (``aclose``) before the
  peer finished: the receive half becomes ``ABANDONED``, so that data still arriving is
  answered with a reset (the peer then learns nobody reads, as a TCP RST tells it).

A reset (received, sent, or caused by a violation on the stream) moves every half that is
not already ``CLOSED`` to ``RESET`` (:meth:`StreamRecord.mark_reset`). A stream whose halves
are both terminal (``CLOSED`` or ``RESET``) is finished and leaves the core's table.

:class:`StreamRecord` is the plain per-stream data a core keeps: the halves, the receive
buffer (a queue of byte chunks, bounded by the muxer's window or buffer limit), counters for
tracing, and an opaque ``handle`` slot the driver uses to find its stream object.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, ClassVar

__all__ = [
    "RECV_ON_APP_CLOSE",
    "RECV_TRANSITIONS",
    "SEND_TRANSITIONS",
    "TERMINAL",
    "UNLIMITED",
    "HalfState",
    "LocalInput",
    "RecvAction",
    "RemoteInput",
    "ResetCause",
    "SendAction",
    "StreamRecord",
]


class HalfState(enum.Enum):
    """The state of one direction of a stream."""

    OPEN = "open"
    CLOSED = "closed"  # send: we sent FIN; receive: the peer sent FIN (EOF after the buffer)
    ABANDONED = "abandoned"  # receive only: our handle is closed, the peer has not finished
    RESET = "reset"


#: States after which nothing more flows in that direction.
TERMINAL = frozenset({HalfState.CLOSED, HalfState.RESET})


class RemoteInput(enum.Enum):
    """What the peer can do to the receive half."""

    DATA = "data"  # a frame with a non-empty payload
    FIN = "fin"  # a half-close (Yamux FIN flag, Mplex Close)


class LocalInput(enum.Enum):
    """What the application can do to the send half."""

    SEND_EOF = "send_eof"


class RecvAction(enum.Enum):
    """What a core does with a remote input, besides changing the state."""

    DELIVER = "deliver"  # buffer the payload for the application
    END = "end"  # the peer finished: EOF once the buffer is read
    IGNORE = "ignore"  # nothing to do (a repeated FIN, a FIN for an abandoned stream)
    DISCARD = "discard"  # drop the payload: the stream is already reset
    RESET_VIOLATION = "reset_violation"  # data after the peer's FIN: reset this stream only
    RESET_ABANDONED = "reset_abandoned"  # data nobody will read: reset, tell the peer


class SendAction(enum.Enum):
    """What a core does when the application half-closes."""

    SEND_FIN = "send_fin"
    NOTHING = "nothing"


class ResetCause(enum.Enum):
    """Why a stream was reset; the driver maps it to the error the application sees."""

    BY_PEER = "reset by peer"
    LOCAL = "reset locally"
    PEER_VIOLATION = "peer broke the protocol on this stream"
    OVERFLOW = "receive buffer overflow (the reader fell behind)"
    ABANDONED = "data arrived after the stream was closed"
    CONNECTION_CLOSED = "connection closed"


#: A chunk at least this big is handed over alone; smaller ones are joined with the next.
JOIN_BELOW = 16 * 1024
#: Without flow control (Mplex), a reader this far behind gets as much as it asks for in
#: one piece (a copy), not one chunk per call: a reader taking one chunk per scheduling
#: round while the connection delivers several would never catch up, and Mplex resets a
#: stream whose buffer overflows. (Yamux's window already holds the sender back, and its
#: window auto-tuning wants the reader's natural pace.)
CATCH_UP_ABOVE = 256 * 1024

#: The send window of a stream without flow control (Mplex).
UNLIMITED = 1 << 62

_O, _C, _A, _R = HalfState.OPEN, HalfState.CLOSED, HalfState.ABANDONED, HalfState.RESET

RECV_TRANSITIONS: dict[tuple[HalfState, RemoteInput], tuple[HalfState, RecvAction]] = {
    (_O, RemoteInput.DATA): (_O, RecvAction.DELIVER),
    (_O, RemoteInput.FIN): (_C, RecvAction.END),
    (_C, RemoteInput.DATA): (_R, RecvAction.RESET_VIOLATION),
    (_C, RemoteInput.FIN): (_C, RecvAction.IGNORE),
    (_A, RemoteInput.DATA): (_R, RecvAction.RESET_ABANDONED),
    (_A, RemoteInput.FIN): (_C, RecvAction.IGNORE),
    (_R, RemoteInput.DATA): (_R, RecvAction.DISCARD),
    (_R, RemoteInput.FIN): (_R, RecvAction.IGNORE),
}

SEND_TRANSITIONS: dict[tuple[HalfState, LocalInput], tuple[HalfState, SendAction]] = {
    (_O, LocalInput.SEND_EOF): (_C, SendAction.SEND_FIN),
    (_C, LocalInput.SEND_EOF): (_C, SendAction.NOTHING),
    (_R, LocalInput.SEND_EOF): (_R, SendAction.NOTHING),
}

#: The receive half after the application closed its handle (unread data: a reset instead).
RECV_ON_APP_CLOSE: dict[HalfState, HalfState] = {_O: _A, _C: _C, _A: _A, _R: _R}


class StreamRecord:
    """The state of one stream inside a core: plain data, no I/O."""

    #: join chunks for a reader this far behind (None: never; see CATCH_UP_ABOVE)
    catch_up_above: ClassVar[int | None] = None

    __slots__ = (
        "_chunks",
        "_offset",
        "buffered",
        "bytes_received",
        "bytes_sent",
        "close_reason",
        "handle",
        "local",
        "pending_accept",
        "recv_state",
        "removed",
        "reset_cause",
        "send_state",
        "send_window",
        "stream_id",
    )

    def __init__(self, stream_id: int, *, local: bool) -> None:
        self.stream_id = stream_id
        self.local = local  # we opened it
        self.recv_state = HalfState.OPEN
        self.send_state = HalfState.OPEN
        self.reset_cause: ResetCause | None = None
        self.close_reason: str | None = None
        self.pending_accept = not local  # inbound, not yet handed to the application
        self.removed = False  # left the core's table (finished, or the connection ended)
        self.buffered = 0  # bytes received and not yet read
        self.bytes_sent = 0
        self.bytes_received = 0
        self.send_window = UNLIMITED  # payload bytes the peer lets us send (flow control)
        self.handle: Any = None  # the driver's stream object; the core never looks at it
        self._chunks: deque[bytes | bytearray | memoryview] = deque()
        self._offset = 0  # bytes of _chunks[0] already read

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.stream_id} {'out' if self.local else 'in'}"
            f" send={self.send_state.value} recv={self.recv_state.value}"
            f" buffered={self.buffered}>"
        )

    @property
    def finished(self) -> bool:
        """Tell whether both halves are terminal."""
        return self.recv_state in TERMINAL and self.send_state in TERMINAL

    def push(self, chunk: bytes | bytearray | memoryview) -> None:
        """Buffer received payload bytes (a view is copied out when read)."""
        self._chunks.append(chunk)
        size = len(chunk)
        self.buffered += size
        self.bytes_received += size

    def take(self, max_bytes: int) -> bytes | bytearray:
        """Remove and return up to ``max_bytes`` buffered bytes (``b""`` if none).

        Whole chunks are handed over as they are when possible; consecutive chunks that
        fit are joined, so one call returns as much as ``max_bytes`` allows.
        """
        chunks = self._chunks
        if not chunks:
            return b""
        first = chunks[0]
        offset = self._offset
        available = len(first) - offset
        data: bytes | bytearray
        if max_bytes < available:
            data = bytes(first[offset : offset + max_bytes])
            self._offset = offset + max_bytes
        else:
            chunks.popleft()
            self._offset = 0
            catch_up = self.catch_up_above
            behind = catch_up is not None and self.buffered - available > catch_up
            if (not chunks or (available >= JOIN_BELOW and not behind)
                    or available + len(chunks[0]) > max_bytes):
                whole = offset or type(first) is memoryview
                data = bytes(first[offset:]) if whole else first  # type: ignore[assignment]
            else:  # several chunks fit: hand them over in one piece
                parts = [first[offset:] if offset else first]
                total = available
                while chunks and total + len(chunks[0]) <= max_bytes:
                    chunk = chunks.popleft()
                    parts.append(chunk)
                    total += len(chunk)
                data = b"".join(parts)
        self.buffered -= len(data)
        return data

    def clear_buffer(self) -> None:
        """Drop everything buffered (a reset discards unread data)."""
        self._chunks.clear()
        self._offset = 0
        self.buffered = 0

    def mark_reset(self, cause: ResetCause, reason: str | None = None) -> None:
        """Reset every half that is not already ``CLOSED``; drop unread data unless at EOF."""
        if self.recv_state is not HalfState.CLOSED:
            self.recv_state = HalfState.RESET
            self.clear_buffer()
        if self.send_state is not HalfState.CLOSED:
            self.send_state = HalfState.RESET
        if self.reset_cause is None:
            self.reset_cause = cause
            self.close_reason = reason or cause.value
