"""The Mplex session core: bytes in -> events out, commands in -> bytes out; no I/O.

The same shape as :class:`~flarelab.muxers.yamux.session.YamuxSession`, so the same trio
driver runs it, with what Mplex lacks left out: no flow control (the send window is
unlimited), no acknowledgements, no pings, no GoAway.

Choices:

* Slow readers. Mplex has no backpressure, so a stream's receive buffer is capped at
  ``max_stream_buffer`` and a stream whose reader falls further behind is reset (our side
  sees StreamResetError, the peer a Reset). js-mplex does exactly this (4 MiB); go-mplex
  instead stops reading the *whole connection* for up to 5 s and then resets the stream,
  which stalls every other stream behind one slow reader. We never block the connection.
* Violations end the connection with :class:`~flarelab.errors.RemoteProtocolError`: a
  malformed varint, the undefined flag 7, a message over ``max_message_size``
  (:class:`~flarelab.errors.LimitExceededError`), a NewStream for a stream still open.
  Mplex has no GoAway to send first.
* Data after the peer's Close resets that stream only, as in Yamux. Frames for unknown
  streams are ignored (both reference implementations do; a reset stream is forgotten).
* Stream ids count up from 0 on each side (as go and js do, not the spec's odd/even);
  streams are keyed by (id, opened by us). Names are the id in decimal (go and js).
"""

from __future__ import annotations

from ...errors import ConnectionClosedError, RemoteProtocolError
from ...wire import encode_uvarint
from ..base import TooManyStreamsError
from ..core import SessionCore
from ..events import (
    InboundStreamOpened,
    InboundStreamRejected,
    StreamClosed,
    StreamDataReceived,
    StreamEofReceived,
    StreamReset,
)
from ..state import (
    CATCH_UP_ABOVE,
    RECV_ON_APP_CLOSE,
    RECV_TRANSITIONS,
    SEND_TRANSITIONS,
    UNLIMITED,
    HalfState,
    LocalInput,
    RecvAction,
    RemoteInput,
    ResetCause,
    SendAction,
    StreamRecord,
)
from .config import MplexConfig
from .frames import MAX_HEADER_SIZE, MAX_STREAM_ID, MPLEX_PROTOCOL_ID, MplexFlag, parse_header

__all__ = ["MplexSession", "MplexStreamRecord"]

_NEW = MplexFlag.NEW_STREAM.value
_MESSAGE = MplexFlag.MESSAGE_INITIATOR.value  # +1: sent by the receiver
_CLOSE = MplexFlag.CLOSE_INITIATOR.value
_RESET = MplexFlag.RESET_INITIATOR.value


class MplexStreamRecord(StreamRecord):
    """A stream's state in the Mplex core: the shared record plus its name and frame prefixes."""

    __slots__ = ("_prefix", "name")
    catch_up_above = CATCH_UP_ABOVE

    def __init__(self, stream_id: int, *, local: bool, name: str) -> None:
        super().__init__(stream_id, local=local)
        self.name = name
        # The receiver's flags are one less than the initiator's (MessageReceiver = 1, ...).
        self._prefix = (stream_id << 3) - (0 if local else 1)

    def header(self, flag: int, length: int) -> bytes:
        """Return the header of a frame we send on this stream (``flag``: initiator's value)."""
        return encode_uvarint(self._prefix + flag) + encode_uvarint(length)


class MplexSession(SessionCore):
    """One Mplex session, as a pure state machine."""

    protocol_id = MPLEX_PROTOCOL_ID
    control_frame_size = 2
    can_open_stream = True  # no ACK backlog in Mplex

    def __init__(self, *, config: MplexConfig | None = None) -> None:
        super().__init__()
        self.config = config or MplexConfig()
        self.streams: dict[tuple[int, bool], MplexStreamRecord] = {}  # type: ignore[assignment]
        self._going_away = False
        self._next_id = 0
        self._partial = bytearray()  # a header split between two reads
        self._remaining = 0  # payload bytes of the current frame still to come
        self._frame_target: MplexStreamRecord | None = None  # message bytes go here
        self._name: bytearray | None = None  # a NewStream payload being collected
        self._name_id = 0
        self._inbound = 0
        self._outbound = 0
        self._pending_accept = 0

    def send_window(self, rec: StreamRecord) -> int:
        """Return how much ``rec`` may send: unlimited, Mplex has no flow control."""
        return UNLIMITED

    # ------------------------------------------------------------------ time (none)

    def start(self, now: float) -> None:
        """Do nothing: Mplex has no timers."""

    def next_timer(self) -> float | None:
        """Return None: Mplex has no timers."""
        return None

    def handle_timer(self, now: float) -> None:
        """Do nothing: Mplex has no timers."""

    # ------------------------------------------------------------------ input from the peer

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        """Consume bytes from the peer; raise RemoteProtocolError on a violation."""
        if self.closed:
            return
        end = len(data)
        pos = 0
        if self._partial:
            joined = bytes(self._partial) + bytes(data[:MAX_HEADER_SIZE])
            parsed = self._parse(joined, 0)
            if parsed is None:
                self._partial[:] = joined
                return
            pos = parsed - len(self._partial)
            self._partial.clear()
        while True:
            remaining = self._remaining
            if remaining:
                take = end - pos
                if take <= 0:
                    return
                if take > remaining:
                    take = remaining
                target = self._frame_target
                if target is not None:
                    target.push(data if take == end else data[pos : pos + take])
                    self._events.append(StreamDataReceived(target, take))
                elif self._name is not None:
                    room = self.config.max_stream_name - len(self._name)
                    if room > 0:
                        self._name += data[pos : pos + min(room, take)]
                pos += take
                self._remaining = remaining - take
                if take < remaining:
                    return
                self._end_frame()
            if pos >= end:
                return
            parsed = self._parse(data, pos)
            if parsed is None:
                self._partial += data[pos:]
                return
            pos = parsed

    def _parse(self, data: bytes | bytearray, pos: int) -> int | None:
        """Parse and act on the header at ``pos``; return where its payload starts."""
        try:
            parsed = parse_header(data, pos, self.config.max_message_size)
        except RemoteProtocolError as err:
            self._terminate(err)
            raise
        if parsed is None:
            return None
        stream_id, flag, length, after = parsed
        self._on_header(stream_id, flag, length)
        return after

    def _on_header(self, stream_id: int, flag: int, length: int) -> None:
        self._frame_target = None
        self._remaining = length
        if flag == _NEW:
            if (stream_id, False) in self.streams:
                self._fail(f"the peer opened stream {stream_id} again while it is open")
            self._name = bytearray()
            self._name_id = stream_id
            if not length:
                self._end_frame()
            return
        rec = self.streams.get((stream_id, flag & 1 == 1))
        if rec is None:
            return  # a stream we reset or never knew: drop the frame
        kind = flag + (flag & 1)  # the initiator's flag value
        if kind == _MESSAGE:
            if not length:
                return
            state, action = RECV_TRANSITIONS[(rec.recv_state, RemoteInput.DATA)]
            rec.recv_state = state
            if action is RecvAction.DELIVER:
                if rec.buffered + length > self.config.max_stream_buffer:
                    self._reset(rec, ResetCause.OVERFLOW, send_reset=True)
                else:
                    self._frame_target = rec
            elif action is RecvAction.RESET_VIOLATION:
                self._reset(rec, ResetCause.PEER_VIOLATION, "data after Close", send_reset=True)
            elif action is RecvAction.RESET_ABANDONED:
                self._reset(rec, ResetCause.ABANDONED, send_reset=True)
        elif kind == _CLOSE:
            state, action = RECV_TRANSITIONS[(rec.recv_state, RemoteInput.FIN)]
            rec.recv_state = state
            if action is RecvAction.END:
                self._events.append(StreamEofReceived(rec))
            if rec.finished:
                self._remove(rec)
        else:  # reset
            self._reset(rec, ResetCause.BY_PEER, send_reset=False)

    def _end_frame(self) -> None:
        self._frame_target = None
        name = self._name
        if name is None:
            return
        self._name = None
        stream_id = self._name_id
        cfg = self.config
        reason = None
        if self._going_away:
            reason = "the session is closing"
        elif self._inbound >= cfg.max_inbound_streams:
            reason = f"over {cfg.max_inbound_streams} inbound streams"
        elif self._pending_accept >= cfg.accept_backlog:
            reason = f"over {cfg.accept_backlog} streams waiting to be accepted"
        if reason is not None:
            reset = (stream_id << 3) | MplexFlag.RESET_RECEIVER
            self._queue_for_peer(encode_uvarint(reset) + b"\x00")
            self._events.append(InboundStreamRejected(stream_id, reason))
            return
        rec = MplexStreamRecord(stream_id, local=False, name=name.decode("utf-8", errors="replace"))
        self.streams[(stream_id, False)] = rec
        self._inbound += 1
        self._pending_accept += 1
        self._events.append(InboundStreamOpened(rec))

    # ------------------------------------------------------------------ commands

    def open_stream(self, now: float) -> MplexStreamRecord:
        """Open an outbound stream and queue its NewStream (named by its id, as go and js do)."""
        if self.closed or self._going_away:
            raise ConnectionClosedError("the mplex session is closed", protocol=MPLEX_PROTOCOL_ID)
        if self._outbound >= self.config.max_outbound_streams:
            raise TooManyStreamsError(
                f"already {self._outbound} outbound streams open "
                f"(limit {self.config.max_outbound_streams})",
                protocol=MPLEX_PROTOCOL_ID,
            )
        stream_id = self._next_id
        if stream_id > MAX_STREAM_ID:
            raise ConnectionClosedError("stream ids exhausted", protocol=MPLEX_PROTOCOL_ID)
        self._next_id += 1
        name = str(stream_id)
        rec = MplexStreamRecord(stream_id, local=True, name=name)
        self.streams[(stream_id, True)] = rec
        self._outbound += 1
        self._out.add_control(rec.header(_NEW, len(name)) + name.encode())
        return rec

    def accept_stream(self, rec: StreamRecord) -> None:
        """The application took an inbound stream (Mplex sends nothing for it)."""
        if rec.pending_accept:
            rec.pending_accept = False
            self._pending_accept -= 1

    def read(self, rec: StreamRecord, max_bytes: int, now: float) -> bytes | bytearray:
        """Hand the application up to ``max_bytes`` buffered bytes."""
        return rec.take(max_bytes)

    def send_data(self, rec: StreamRecord, data: memoryview, limit: int) -> tuple[int, int]:
        """Queue up to ``limit`` bytes of ``data`` as messages: ``(bytes taken, ticket)``.

        Each message carries at most ``max_payload`` bytes. The messages *borrow* ``data``:
        leave it unchanged until ``output_taken(ticket)``, or call :meth:`own_output`.
        """
        if rec.send_state is not HalfState.OPEN or rec.removed:
            raise ConnectionClosedError(
                f"stream {rec.stream_id} cannot send ({rec.send_state.value})",
                protocol=MPLEX_PROTOCOL_ID,
            )
        assert isinstance(rec, MplexStreamRecord)
        total = min(limit, len(data))
        if total <= 0:
            return 0, 0
        parts: list[bytes | bytearray | memoryview] = []
        max_payload = self.config.max_payload
        pos = 0
        while pos < total:
            n = min(max_payload, total - pos)
            parts.append(rec.header(_MESSAGE, n))
            parts.append(data[pos : pos + n])
            pos += n
        rec.bytes_sent += total
        return total, self._out.add_data(parts)

    def send_eof(self, rec: StreamRecord) -> None:
        """Half-close our side: queue a Close."""
        state, action = SEND_TRANSITIONS[(rec.send_state, LocalInput.SEND_EOF)]
        rec.send_state = state
        if action is SendAction.SEND_FIN and not rec.removed:
            assert isinstance(rec, MplexStreamRecord)
            self._out.add_control(rec.header(_CLOSE, 0))
            if rec.finished:
                self._remove(rec)

    def close_stream(self, rec: StreamRecord) -> None:
        """The application closed its handle: Close, and reset later data (now, if unread)."""
        if rec.removed:
            return
        assert isinstance(rec, MplexStreamRecord)
        if rec.recv_state is HalfState.OPEN and rec.buffered:
            self._reset(rec, ResetCause.LOCAL, "closed with unread data", send_reset=True)
            return
        rec.recv_state = RECV_ON_APP_CLOSE[rec.recv_state]
        self.send_eof(rec)
        if rec.finished and not rec.removed:
            self._remove(rec)

    def reset_stream(self, rec: StreamRecord) -> None:
        """Abort both directions: queue a Reset."""
        if not rec.removed:
            assert isinstance(rec, MplexStreamRecord)
            self._reset(rec, ResetCause.LOCAL, send_reset=True)

    def go_away(self, code: int = 0) -> None:
        """Refuse new inbound streams from now on (Mplex has no GoAway frame)."""
        self._going_away = True

    def connection_lost(self, reason: str) -> None:
        """The byte stream is gone: every stream still open ends with ``reason``."""
        self.closed = True
        self._out.clear()
        for rec in list(self.streams.values()):
            rec.mark_reset(ResetCause.CONNECTION_CLOSED, reason)
            self._events.append(StreamReset(rec, ResetCause.CONNECTION_CLOSED))
            self._remove(rec)

    # ------------------------------------------------------------------ internals

    def _reset(
        self,
        rec: MplexStreamRecord,
        cause: ResetCause,
        reason: str | None = None,
        *,
        send_reset: bool,
    ) -> None:
        if send_reset:
            frame = rec.header(_RESET, 0)
            if cause is ResetCause.LOCAL:
                self._out.add_control(frame)
            else:
                self._queue_for_peer(frame)
        rec.mark_reset(cause, reason)
        self._events.append(StreamReset(rec, cause))
        self._remove(rec)

    def _remove(self, rec: MplexStreamRecord) -> None:
        if rec.removed:
            return
        rec.removed = True
        del self.streams[(rec.stream_id, rec.local)]
        if rec.local:
            self._outbound -= 1
        else:
            self._inbound -= 1
        self._events.append(StreamClosed(rec))
