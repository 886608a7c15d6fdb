"""The Yamux session core: bytes in -> events out, commands in -> bytes out, time passed in.

No I/O, no trio, no tracing: :class:`YamuxSession` is a plain object that a driver feeds
with what the byte stream delivered (:meth:`~YamuxSession.receive_data`) and with what the
application asks (open, read, write, half-close, close, reset); it answers with events
(:meth:`~YamuxSession.take_events`), the frames to write, control and data in wire order
(:meth:`~YamuxSession.data_to_send`) and a timer
(:meth:`~YamuxSession.next_timer`, :meth:`~YamuxSession.handle_timer`).

What it does, following the spec and go-yamux where the spec is silent:

* Streams: we open odd ids as client, even as server, announced at once by a WindowUpdate
  with SYN (go and js do the same). An inbound stream is acknowledged by the first frame
  we send on it (data, a window update, FIN), as the spec asks and js and rust do, so the
  ACK backlog is real backpressure. Beyond ``max_unacked_inbound`` unacknowledged (which
  includes unaccepted) or ``max_inbound_streams`` open inbound streams, a new stream is
  reset on arrival (not the connection). ``open_stream`` refuses beyond
  ``max_outbound_streams``, and the driver waits while ``max_unacked_outbound`` of ours
  are unacknowledged (the spec's ACK backlog of 256).
* Flow control: 256 KiB initial windows; the receive buffer never holds more than the
  window we granted, so memory is bounded; a window update is sent when the application
  has consumed half the window (go's rule), in one frame. Auto-tuning as go-yamux: if half
  the window was consumed in less than ``autotune_rtts`` (4) RTTs, the window doubles, up
  to ``max_window`` per stream and ``max_connection_window`` in total. The RTT is the
  least of the recent ping samples, but at least ``autotune_min_rtt`` (a floor for
  loopback and LANs, where the samples measure scheduling noise more than the path).
* Data frames carry up to ``max_payload`` (256 KiB) bytes, bounded by the peer's window,
  so a 64 KiB write is one frame, not a full Noise-sized one and a 29-byte tail.
* Keepalive: a ping after ``keepalive_interval`` of silence; unanswered (and nothing else
  received) for ``ping_timeout``: :class:`~flarelab.muxers.events.KeepaliveTimedOut`.
* Violations end the session: a GoAway(protocol error) is queued and
  :class:`~flarelab.errors.RemoteProtocolError` raised -- unknown version or type, data
  beyond the window (:class:`~flarelab.errors.LimitExceededError`), a SYN on an id of the
  wrong parity or one already used, data on a stream that was never opened, a window
  overflowing 2**32-1, control frames queued faster than the peer reads them.
* Data after the peer's FIN resets *that stream only* (RST sent, the reader sees
  StreamResetError). The frame boundaries are intact, so the other streams are fine and
  there is no reason to take them down; go-yamux and rust-yamux buffer such data without
  a check, which hides the peer's bug, so we reset rather than accept it.
* Frames for streams we no longer know (late data after a reset, a FIN or RST for a
  stream already forgotten, rust-yamux's RST for a stream it never announced) are ignored.
"""

from __future__ import annotations

from ...errors import (
    ConnectionClosedError,
    LimitExceededError,
    LocalProtocolError,
    RemoteProtocolError,
)
from ..base import TooManyStreamsError
from ..core import SessionCore
from ..events import (
    GoAwayReceived,
    InboundStreamOpened,
    InboundStreamRejected,
    KeepaliveTimedOut,
    RttMeasured,
    StreamAcknowledged,
    StreamClosed,
    StreamDataReceived,
    StreamEofReceived,
    StreamReset,
    StreamWindowUpdated,
)
from ..state import (
    RECV_ON_APP_CLOSE,
    RECV_TRANSITIONS,
    SEND_TRANSITIONS,
    HalfState,
    LocalInput,
    RecvAction,
    RemoteInput,
    ResetCause,
    SendAction,
    StreamRecord,
)
from .config import YamuxConfig
from .frames import (
    HEADER,
    HEADER_SIZE,
    INITIAL_WINDOW,
    MAX_U32,
    YAMUX_PROTOCOL_ID,
    Flag,
    FrameType,
    GoAwayCode,
    parse_header,
)
from .keepalive import PingClock
from .stream_ids import StreamIdSet

__all__ = ["YamuxSession", "YamuxStreamRecord"]

_DATA = FrameType.DATA.value
_WINDOW_UPDATE = FrameType.WINDOW_UPDATE.value
_PING = FrameType.PING.value
_GO_AWAY = FrameType.GO_AWAY.value
_SYN = Flag.SYN.value
_ACK = Flag.ACK.value
_FIN = Flag.FIN.value
_RST = Flag.RST.value
_pack = HEADER.pack
_unpack_from = HEADER.unpack_from
_OPEN = HalfState.OPEN


class YamuxStreamRecord(StreamRecord):
    """A stream's state in the Yamux core: the shared record plus windows and the handshake."""

    __slots__ = ("acked", "epoch_start", "recv_window", "window_max")

    def __init__(self, stream_id: int, *, local: bool, window_max: int, now: float) -> None:
        super().__init__(stream_id, local=local)
        self.send_window = INITIAL_WINDOW  # what the peer lets us send
        self.recv_window = INITIAL_WINDOW  # what we let the peer send and it has not yet
        self.window_max = window_max  # the window we keep granting (auto-tuning grows it)
        self.epoch_start = now  # when we last sent a window update
        self.acked = False  # outbound: the peer's ACK arrived; inbound: we sent ours


class YamuxSession(SessionCore):
    """One Yamux session, as a pure state machine."""

    protocol_id = YAMUX_PROTOCOL_ID
    #: Bytes on the wire of a control frame (for span events).
    control_frame_size = HEADER_SIZE

    def __init__(self, *, is_client: bool, config: YamuxConfig | None = None) -> None:
        super().__init__()
        self.config = config or YamuxConfig()
        self.is_client = is_client
        self.streams: dict[int, YamuxStreamRecord] = {}  # type: ignore[assignment]
        self.remote_goaway: int | None = None  # the code the peer sent
        self._next_id = 1 if is_client else 2
        self._peer_parity = 0 if is_client else 1
        self._peer_ids = StreamIdSet(2 if is_client else 1)
        self._partial = bytearray()  # a header split between two reads
        self._remaining = 0  # payload bytes of the current Data frame still to come
        self._frame_target: YamuxStreamRecord | None = None  # where they go (None: dropped)
        self._frame_fin: YamuxStreamRecord | None = None  # stream to half-close after them
        self._inbound = 0
        self._outbound = 0
        self._unacked_in = 0
        self._unacked_out = 0
        self._window_total = 0
        self._started = False
        self._pings = PingClock(self.config)

    # ------------------------------------------------------------------ outputs

    @property
    def can_open_stream(self) -> bool:
        """Tell whether the ACK backlog leaves room to open a stream now."""
        return self._unacked_out < self.config.max_unacked_outbound

    # ------------------------------------------------------------------ time

    @property
    def _autotune_span(self) -> float:
        """Return how fast half a window must be consumed for it to grow (0: never)."""
        rtt = self._pings.min_rtt
        if rtt is None:  # no RTT measured yet (or never: no pings), as go-yamux
            return 0.0
        cfg = self.config
        return max(rtt, cfg.autotune_min_rtt) * cfg.autotune_rtts

    @property
    def rtt(self) -> float | None:
        """Return the smoothed round-trip time from pings, in seconds (None before one)."""
        return self._pings.rtt

    def start(self, now: float) -> None:
        """Start the clocks: keepalive silence counts from ``now``; the first RTT ping is due."""
        self._started = True
        self._pings.start(now)

    def next_timer(self) -> float | None:
        """Return when :meth:`handle_timer` should next run (None: no timer)."""
        if self.closed or not self._started:
            return None
        return self._pings.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Send a due ping, or report a keepalive timeout."""
        if self.closed or not self._started:
            return
        due = self._pings.due(now)
        if isinstance(due, float):
            self._events.append(KeepaliveTimedOut(due))
        elif due is not None:
            self._out.add_control(_pack(0, _PING, _SYN, 0, due))

    # ------------------------------------------------------------------ input from the peer

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        """Consume bytes from the peer; raise RemoteProtocolError on a violation."""
        if self.closed:
            return
        self._pings.received(now)
        end = len(data)
        pos = 0
        if self._partial:
            need = HEADER_SIZE - len(self._partial)
            self._partial += data[:need]
            if len(self._partial) < HEADER_SIZE:
                return
            header = bytes(self._partial)
            self._partial.clear()
            pos = need
            self._on_header(header, 0, now)
        # Payloads are kept as views of ``data`` when they are most of it (no copy until the
        # application reads), copied when small, so a few bytes never pin a big buffer.
        view = memoryview(data)
        half = end >> 1
        events = self._events
        streams = self.streams
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
                    if not target.buffered:
                        events.append(StreamDataReceived(target, take))
                    target.push(view[pos : pos + take] if take >= half else data[pos : pos + take])
                pos += take
                self._remaining = remaining - take
                if take < remaining:
                    return
                self._end_data_frame()
            if end - pos < HEADER_SIZE:
                if pos < end:
                    self._partial += data[pos:]
                return
            version, frame_type, flags, stream_id, length = _unpack_from(data, pos)
            if not (frame_type or flags or version):  # a plain Data frame: the hot path
                rec = streams.get(stream_id)
                if (
                    rec is not None
                    and rec.recv_state is _OPEN
                    and 0 < length <= rec.recv_window
                    and end - pos - HEADER_SIZE >= length
                ):
                    rec.recv_window -= length
                    pos += HEADER_SIZE
                    if not rec.buffered:
                        events.append(StreamDataReceived(rec, length))
                    rec.push(
                        view[pos : pos + length] if length >= half else data[pos : pos + length]
                    )
                    pos += length
                    continue
            self._on_header(data, pos, now)
            pos += HEADER_SIZE

    def _on_header(self, data: bytes | bytearray, pos: int, now: float) -> None:
        try:
            frame_type, flags, stream_id, length = parse_header(data, pos)
        except RemoteProtocolError as err:
            self._terminate(err)
            raise
        if frame_type <= _WINDOW_UPDATE:
            self._on_stream_frame(frame_type, flags, stream_id, length, now)
        elif frame_type == _PING:
            self._on_ping(flags, length, now)
        elif self.remote_goaway is None:
            self.remote_goaway = length
            self._events.append(GoAwayReceived(length))

    def _on_stream_frame(
        self, frame_type: int, flags: int, stream_id: int, length: int, now: float
    ) -> None:
        is_data = frame_type == _DATA
        rec = self.streams.get(stream_id)
        if flags & _SYN:
            rec = self._on_syn(stream_id, now)
            if rec is None:  # rejected: drop whatever it carried
                if is_data:
                    if length > INITIAL_WINDOW:
                        self._fail(
                            f"stream {stream_id} sent {length} bytes in its SYN, beyond the "
                            f"initial window of {INITIAL_WINDOW}",
                            LimitExceededError,
                        )
                    self._skip(length)
                return
        elif rec is None:
            if is_data and length:
                if not flags & _RST and self._never_opened(stream_id):
                    self._fail(f"data on stream {stream_id}, which was never opened")
                self._skip(length)
            return
        if flags & _ACK and rec.local and not rec.acked:
            rec.acked = True
            self._unacked_out -= 1
            self._events.append(StreamAcknowledged(rec))
        if flags & _RST:
            if is_data:
                self._skip(length)
            self._reset(rec, ResetCause.BY_PEER, send_rst=False)
            return
        if is_data:
            if length > rec.recv_window:
                self._fail(
                    f"stream {stream_id} sent {length} bytes with only {rec.recv_window} "
                    "of receive window left",
                    LimitExceededError,
                )
            rec.recv_window -= length
            target: YamuxStreamRecord | None = None
            if length and rec.recv_state is _OPEN:
                target = rec
            elif length:
                state, action = RECV_TRANSITIONS[(rec.recv_state, RemoteInput.DATA)]
                rec.recv_state = state
                if action is RecvAction.DELIVER:
                    target = rec
                elif action is RecvAction.RESET_VIOLATION:
                    self._reset(rec, ResetCause.PEER_VIOLATION, "data after FIN", send_rst=True)
                elif action is RecvAction.RESET_ABANDONED:
                    self._reset(rec, ResetCause.ABANDONED, send_rst=True)
            self._frame_target = target
            self._frame_fin = rec if flags & _FIN else None
            self._remaining = length
            if not length:
                self._end_data_frame()
            return
        if length:
            window = rec.send_window + length
            if window > MAX_U32:
                self._fail(f"window update on stream {stream_id} overflows the window")
            rec.send_window = window
            self._events.append(StreamWindowUpdated(rec, length))
        if flags & _FIN:
            self._on_fin(rec)

    def _on_syn(self, stream_id: int, now: float) -> YamuxStreamRecord | None:
        if stream_id == 0 or stream_id & 1 != self._peer_parity:
            self._fail(f"the peer opened stream {stream_id}, an id of the wrong parity")
        if not self._peer_ids.add(stream_id):
            self._fail(f"the peer opened stream {stream_id} again")
        cfg = self.config
        reason = None
        if self.local_goaway is not None or self.remote_goaway is not None:
            reason = "the session is going away"
        elif self._inbound >= cfg.max_inbound_streams:
            reason = f"over {cfg.max_inbound_streams} inbound streams"
        elif self._unacked_in >= cfg.max_unacked_inbound:
            reason = f"over {cfg.max_unacked_inbound} streams not yet acknowledged"
        if reason is not None:
            self._queue_for_peer(_pack(0, _WINDOW_UPDATE, _RST, stream_id, 0))
            self._events.append(InboundStreamRejected(stream_id, reason))
            return None
        rec = YamuxStreamRecord(stream_id, local=False, window_max=cfg.initial_window, now=now)
        self.streams[stream_id] = rec
        self._inbound += 1
        self._unacked_in += 1
        self._window_total += rec.window_max
        self._events.append(InboundStreamOpened(rec))
        return rec

    def _never_opened(self, stream_id: int) -> bool:
        if stream_id == 0:
            return True
        if stream_id & 1 == self._peer_parity:
            return stream_id not in self._peer_ids
        return stream_id >= self._next_id

    def _skip(self, length: int) -> None:
        self._frame_target = None
        self._frame_fin = None
        self._remaining = length

    def _end_data_frame(self) -> None:
        rec = self._frame_fin
        self._frame_target = None
        self._frame_fin = None
        if rec is not None and not rec.removed:
            self._on_fin(rec)

    def _on_fin(self, rec: YamuxStreamRecord) -> None:
        state, action = RECV_TRANSITIONS[(rec.recv_state, RemoteInput.FIN)]
        rec.recv_state = state
        if action is RecvAction.END:
            self._events.append(StreamEofReceived(rec))
        if rec.finished:
            self._remove(rec)

    def _on_ping(self, flags: int, opaque: int, now: float) -> None:
        if flags & _SYN:
            self._queue_for_peer(_pack(0, _PING, _ACK, 0, opaque))
        elif flags & _ACK:
            sample = self._pings.answered(opaque, now)
            if sample is not None:
                self._events.append(RttMeasured(sample, self._pings.rtt or sample))

    # ------------------------------------------------------------------ commands

    def open_stream(self, now: float) -> YamuxStreamRecord:
        """Open an outbound stream and queue its SYN (a WindowUpdate)."""
        if self.closed:
            raise ConnectionClosedError("the yamux session is closed", protocol=YAMUX_PROTOCOL_ID)
        if self.local_goaway is not None or self.remote_goaway is not None:
            side = "we" if self.local_goaway is not None else "the peer"
            raise ConnectionClosedError(
                f"no new streams: {side} sent GoAway", protocol=YAMUX_PROTOCOL_ID
            )
        cfg = self.config
        if self._outbound >= cfg.max_outbound_streams:
            raise TooManyStreamsError(
                f"already {self._outbound} outbound streams open "
                f"(limit {cfg.max_outbound_streams})",
                protocol=YAMUX_PROTOCOL_ID,
            )
        if not self.can_open_stream:
            raise LocalProtocolError("the ACK backlog is full: wait for can_open_stream")
        stream_id = self._next_id
        if stream_id > MAX_U32:
            raise ConnectionClosedError("stream ids exhausted", protocol=YAMUX_PROTOCOL_ID)
        self._next_id += 2
        rec = YamuxStreamRecord(stream_id, local=True, window_max=cfg.initial_window, now=now)
        self.streams[stream_id] = rec
        self._outbound += 1
        self._unacked_out += 1
        self._window_total += rec.window_max
        rec.recv_window = cfg.initial_window
        extra = cfg.initial_window - INITIAL_WINDOW
        self._out.add_control(_pack(0, _WINDOW_UPDATE, _SYN, stream_id, extra))
        return rec

    def accept_stream(self, rec: StreamRecord) -> None:
        """The application took an inbound stream; grant any extra initial window (with ACK).

        With the spec's 256 KiB initial window nothing is sent: the ACK goes with the first
        frame we send on the stream.
        """
        if not rec.pending_accept:
            return
        assert isinstance(rec, YamuxStreamRecord)
        rec.pending_accept = False
        extra = self.config.initial_window - INITIAL_WINDOW
        if extra and not rec.removed and not self.closed:
            rec.recv_window += extra
            flags = self._ack_flag(rec)
            self._out.add_control(_pack(0, _WINDOW_UPDATE, flags, rec.stream_id, extra))

    def _ack_flag(self, rec: YamuxStreamRecord) -> int:
        """Return ACK for the first frame we send on an inbound stream, else 0."""
        if rec.acked or rec.local:
            return 0
        rec.acked = True
        self._unacked_in -= 1
        return _ACK

    def read(self, rec: StreamRecord, max_bytes: int, now: float) -> bytes | bytearray:
        """Hand the application up to ``max_bytes`` buffered bytes; maybe grant more window."""
        data = rec.take(max_bytes)
        if data and rec.recv_state is HalfState.OPEN and not rec.removed:
            assert isinstance(rec, YamuxStreamRecord)
            window_max = rec.window_max
            delta = window_max - rec.recv_window - rec.buffered
            if delta >= window_max // 2:
                self._grant(rec, delta, now)
        return data

    def _grant(self, rec: YamuxStreamRecord, delta: int, now: float) -> None:
        cfg = self.config
        window_max = rec.window_max
        if window_max < cfg.max_window and now - rec.epoch_start < self._autotune_span:
            grow = min(window_max, cfg.max_window - window_max)
            grow = min(grow, cfg.max_connection_window - self._window_total)
            if grow > 0:
                rec.window_max = window_max + grow
                self._window_total += grow
                delta += grow
        rec.epoch_start = now
        rec.recv_window += delta
        flags = self._ack_flag(rec)
        self._out.add_control(_pack(0, _WINDOW_UPDATE, flags, rec.stream_id, delta))

    def send_data(self, rec: StreamRecord, data: memoryview, limit: int) -> tuple[int, int]:
        """Queue up to ``limit`` bytes of ``data`` as Data frames, within the window.

        Returns ``(bytes taken, ticket)``: 0 bytes when the window is closed. Each frame
        carries at most ``max_payload`` bytes. The frames *borrow* ``data``: leave it
        unchanged until ``output_taken(ticket)``, or call :meth:`own_output`.
        """
        if rec.send_state is not HalfState.OPEN or rec.removed:
            raise LocalProtocolError(f"stream {rec.stream_id} cannot send ({rec.send_state.value})")
        assert isinstance(rec, YamuxStreamRecord)
        total = min(rec.send_window, limit, len(data))
        if total <= 0:
            return 0, 0
        flags = self._ack_flag(rec)
        max_payload = self.config.max_payload
        stream_id = rec.stream_id
        parts: list[bytes | bytearray | memoryview] = []
        pos = 0
        while pos < total:
            n = min(max_payload, total - pos)
            parts.append(_pack(0, _DATA, flags, stream_id, n))
            parts.append(data[pos : pos + n])
            flags = 0
            pos += n
        rec.send_window -= total
        rec.bytes_sent += total
        return total, self._out.add_data(parts)

    def send_eof(self, rec: StreamRecord) -> None:
        """Half-close our side: queue a FIN."""
        state, action = SEND_TRANSITIONS[(rec.send_state, LocalInput.SEND_EOF)]
        rec.send_state = state
        if action is SendAction.SEND_FIN and not rec.removed:
            assert isinstance(rec, YamuxStreamRecord)
            flags = _FIN | self._ack_flag(rec)
            self._out.add_control(_pack(0, _WINDOW_UPDATE, flags, rec.stream_id, 0))
            if rec.finished:
                self._remove(rec)

    def close_stream(self, rec: StreamRecord) -> None:
        """The application closed its handle: FIN, and reset later data (now, if unread)."""
        if rec.removed:
            return
        assert isinstance(rec, YamuxStreamRecord)
        if rec.recv_state is HalfState.OPEN and rec.buffered:
            self._reset(rec, ResetCause.LOCAL, "closed with unread data", send_rst=True)
            return
        rec.recv_state = RECV_ON_APP_CLOSE[rec.recv_state]
        self.send_eof(rec)
        if rec.finished and not rec.removed:
            self._remove(rec)

    def reset_stream(self, rec: StreamRecord) -> None:
        """Abort both directions: queue a RST."""
        if not rec.removed:
            assert isinstance(rec, YamuxStreamRecord)
            self._reset(rec, ResetCause.LOCAL, send_rst=True)

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """Queue a GoAway: no new streams either way from now on."""
        if self.local_goaway is None:
            self.local_goaway = code
            self._out.add_control(_pack(0, _GO_AWAY, 0, 0, code))

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
        rec: YamuxStreamRecord,
        cause: ResetCause,
        reason: str | None = None,
        *,
        send_rst: bool,
    ) -> None:
        if send_rst:
            frame = _pack(0, _WINDOW_UPDATE, _RST, rec.stream_id, 0)
            if cause is ResetCause.LOCAL:
                self._out.add_control(frame)
            else:
                self._queue_for_peer(frame)
        rec.mark_reset(cause, reason)
        self._events.append(StreamReset(rec, cause))
        self._remove(rec)

    def _remove(self, rec: YamuxStreamRecord) -> None:
        if rec.removed:
            return
        rec.removed = True
        del self.streams[rec.stream_id]
        if rec.local:
            self._outbound -= 1
            if not rec.acked:
                self._unacked_out -= 1
        else:
            self._inbound -= 1
            if not rec.acked:
                self._unacked_in -= 1
        self._window_total -= rec.window_max
        self._events.append(StreamClosed(rec))

    def _terminate(self, err: RemoteProtocolError) -> None:
        super()._terminate(err)
        if self.local_goaway is None:
            self.local_goaway = GoAwayCode.PROTOCOL_ERROR
            self._out.add_control(_pack(0, _GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR))
