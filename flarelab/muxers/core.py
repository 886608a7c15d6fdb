"""SessionCore: what the Yamux and Mplex session cores share, beyond the stream record.

The outputs (the event list and the queue of frames to write), the ending (a violation is
recorded and raised, naming the protocol), and the budget on control frames the peer makes
us queue. Pure state, no I/O; subclasses add the protocol.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ..errors import LimitExceededError, RemoteProtocolError
from .events import MuxerEvent
from .output import OutputQueue
from .state import StreamRecord

__all__ = ["SessionCore"]


class SessionCore:
    """The plumbing of a muxer session core."""

    protocol_id: str
    #: Bytes on the wire of a control frame (for span events).
    control_frame_size: int
    config: Any  # needs ``max_pending_control``
    streams: dict[Any, StreamRecord]

    def __init__(self) -> None:
        self.local_goaway: int | None = None  # the GoAway code we sent (Yamux)
        self.error: RemoteProtocolError | None = None  # the violation that ended the session
        self.closed = False
        self._events: list[MuxerEvent] = []
        self._out = OutputQueue()

    def take_events(self) -> list[MuxerEvent]:
        """Return (and forget) the events produced since the last call."""
        events = self._events
        if events:
            self._events = []
        return events

    @property
    def has_events(self) -> bool:
        """Tell whether events are waiting."""
        return bool(self._events)

    @property
    def pending_output(self) -> int:
        """Return how many bytes of frames wait to be written."""
        return self._out.size

    def data_to_send(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return (and forget) the frames to write, in wire order (about ``max_bytes``)."""
        return self._out.take(max_bytes)

    def output_taken(self, ticket: int) -> bool:
        """Tell whether the frames queued with ``ticket`` were taken by :meth:`data_to_send`."""
        return self._out.is_taken(ticket)

    def own_output(self) -> None:
        """Copy the payloads still borrowed from ``send_data`` callers."""
        self._out.own()

    @property
    def num_streams(self) -> int:
        """Return how many streams are in the table (not yet finished)."""
        return len(self.streams)

    def send_window(self, rec: StreamRecord) -> int:
        """Return how many payload bytes ``rec`` may send now."""
        return rec.send_window

    def _queue_for_peer(self, frame: bytes) -> None:
        """Queue a frame the peer's input made necessary, within the control budget."""
        if self._out.control + len(frame) > self.config.max_pending_control:
            self._fail(
                f"the peer made us queue over {self.config.max_pending_control} bytes of "
                "control frames without reading them",
                LimitExceededError,
            )
        self._out.add_control(frame)

    def _terminate(self, err: RemoteProtocolError) -> None:
        """Record the violation that ends the session (subclasses queue a GoAway)."""
        if err.protocol is None:
            err.protocol = self.protocol_id
        self.error = err
        self.closed = True

    def _fail(self, message: str, cls: type[RemoteProtocolError] = RemoteProtocolError) -> NoReturn:
        err = cls(message, protocol=self.protocol_id)
        self._terminate(err)
        raise err
