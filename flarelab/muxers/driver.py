"""The trio driver shared by the Yamux and Mplex cores.

One :class:`MuxerDriver` per connection owns the byte stream and a core (a
:class:`MuxerCore`: :class:`~flarelab.muxers.yamux.session.YamuxSession` or
:class:`~flarelab.muxers.mplex.session.MplexSession`). Its :meth:`~MuxerDriver.run` is the
engine: three tasks in one nursery.

* The reader reads the byte stream, feeds the core and acts on its events (wakes readers
  and writers, queues inbound streams, traces). It never waits for the application: an
  application that does not read stops its peer through the window, not the node.
* The writer is the one task that writes. What the core queues -- control frames and data
  frames, in wire order -- it takes (up to ``max_write`` bytes) and writes in a single
  ``send_all``, so a SYN always precedes its stream's data and a FIN follows it.
  Applications only queue frames: ``send_all`` frames its data (one frame per write up
  to ``max_payload``) without copying it and waits until the writer has taken the
  frames, whose one copy is the join into the write. So a cancelled ``send_all`` never
  leaves half a frame on the wire (frames it queued are copied out and still sent
  whole), and window updates and pongs never wait behind an application. A write that
  makes no progress for ``write_timeout`` ends the connection (go-yamux's write deadline).
* The timer (Yamux only) sends keepalive and RTT pings.

Why a writer task, measured twice (2026-11, TCP + Noise, one process and two, paired
and interleaved runs): letting ``send_all`` write directly while the wire is idle (the
writer task only for backlog and control frames) removes 4 of the 10 task steps and 2 of
the 6 epoll waits of a ping round trip, but the write must then be shielded from
cancellation, and a trio ``CancelScope`` costs 8-10 us to enter and leave here -- what the
hand-off to the writer costs. Ping RTT and MB per CPU second came out within +-3% of this
design (and the deadline a shielded write needs costs more). Unshielded, direct writes
were 16% faster per ping (10% in two processes) and 7-11% more MB per CPU second, but a
cancellation arriving while the transport is backed up then tears a frame, and Noise
breaks for good. That speed needs a byte stream below whose ``send_all`` keeps what a
cancellation left unwritten and writes it first next time; Noise cannot today, as it
writes through ``trio.SocketStream.send_all``, which does not say how much it wrote when
cancelled (trio's socket ``send`` does). The writer task also batches many streams'
frames into fewer writes.

Tracing (:mod:`flarelab.muxers.muxer_spans`): a session span per connection and a stream span
per stream, fed from the core's events; data frames are never span events.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Protocol

import trio
from opentelemetry.trace import Tracer

from ..errors import (
    ConnectionClosedError,
    LocalProtocolError,
    RemoteProtocolError,
    attach_context,
)
from ..tracing import spans
from .base import MuxedConnection
from .events import (
    GoAwayReceived,
    InboundStreamOpened,
    InboundStreamRejected,
    KeepaliveTimedOut,
    MuxerEvent,
    RttMeasured,
    StreamAcknowledged,
    StreamClosed,
    StreamDataReceived,
    StreamEofReceived,
    StreamReset,
    StreamWindowUpdated,
)
from .muxer_spans import MuxerTrace
from .state import HalfState, ResetCause, StreamRecord
from .stream import DriverStream
from .waiting import WaitSlot

__all__ = ["MuxerCore", "MuxerDriver"]

_GOAWAY_NAMES = {0: "normal", 1: "protocol error", 2: "internal error"}


class MuxerCore(Protocol):
    """What the driver needs from a muxer core (Yamux and Mplex both provide it)."""

    protocol_id: str
    control_frame_size: int
    closed: bool
    local_goaway: int | None

    @property
    def has_events(self) -> bool: ...
    @property
    def pending_output(self) -> int: ...
    @property
    def num_streams(self) -> int: ...
    @property
    def can_open_stream(self) -> bool: ...
    def take_events(self) -> list[MuxerEvent]: ...
    def data_to_send(self, max_bytes: int | None = None) -> bytes | bytearray: ...
    def output_taken(self, ticket: int) -> bool: ...
    def own_output(self) -> None: ...
    def send_window(self, rec: StreamRecord) -> int: ...
    def start(self, now: float) -> None: ...
    def next_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def receive_data(self, data: bytes | bytearray, now: float) -> None: ...
    def open_stream(self, now: float) -> StreamRecord: ...
    def accept_stream(self, rec: StreamRecord) -> None: ...
    def read(self, rec: StreamRecord, max_bytes: int, now: float) -> bytes | bytearray: ...
    def send_data(self, rec: StreamRecord, data: memoryview, limit: int) -> tuple[int, int]: ...
    def send_eof(self, rec: StreamRecord) -> None: ...
    def close_stream(self, rec: StreamRecord) -> None: ...
    def reset_stream(self, rec: StreamRecord) -> None: ...
    def go_away(self, code: int = 0) -> None: ...
    def connection_lost(self, reason: str) -> None: ...


class MuxerDriver(MuxedConnection):
    """A muxed connection: a core and a byte stream, driven by trio."""

    stream_class: type[DriverStream] = DriverStream
    session_span_name = "muxer.session"
    stream_span_name = "muxer.stream"
    #: How the protocol names its stream control messages in span events (None: it has no
    #: such message): open, acknowledge, half-close, reset.
    message_names: dict[str, str | None] = {
        "open": "SYN",
        "ack": "ACK",
        "close": "FIN",
        "reset": "RST",
    }

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        core: MuxerCore,
        *,
        is_initiator: bool,
        peer: Any = None,
        tracer: Tracer = spans.NO_TRACER,
        read_size: int,
        write_batch: int,
        max_write: int,
        write_timeout: float,
        close_timeout: float,
        uses_timers: bool,
    ) -> None:
        self._stream = stream
        self._core = core
        self.protocol_id = core.protocol_id
        self.is_initiator = is_initiator
        self.peer = peer
        self._trace = MuxerTrace(
            tracer,
            protocol_id=core.protocol_id,
            session_name=self.session_span_name,
            stream_name=self.stream_span_name,
            message_names=self.message_names,
            control_frame_size=core.control_frame_size,
            peer=peer,
        )
        self._read_size = read_size
        self._write_batch = write_batch
        self._max_write = max_write
        self._write_timeout = write_timeout
        self._close_timeout = close_timeout
        self._uses_timers = uses_timers
        self._writer_slot = WaitSlot()  # the writer, waiting for output
        self._taken_waiters: list[WaitSlot] = []  # senders, waiting for their frames taken
        self._drain_lot = trio.lowlevel.ParkingLot()  # closers, waiting for the queue to empty
        self._writing = False
        self._accept_queue: deque[DriverStream] = deque()
        self._accept_lot = trio.lowlevel.ParkingLot()
        self._open_lot = trio.lowlevel.ParkingLot()
        self._closed_event = trio.Event()
        self._run_scope: trio.CancelScope | None = None
        self._started = False
        self._closing = False
        self._closed = False
        self._draining = False
        self._close_when_flushed: str | None = None
        self._close_reason: str | BaseException | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} peer={self.peer} {state} streams={self.num_streams}>"

    # ------------------------------------------------------------------ MuxedConnection

    @property
    def is_closed(self) -> bool:
        """Tell whether the connection has ended."""
        return self._closed

    @property
    def num_streams(self) -> int:
        """Return how many streams are open (not yet finished)."""
        return self._core.num_streams

    @property
    def close_reason(self) -> str | BaseException | None:
        """Return why the connection ended (None while open)."""
        return self._close_reason

    async def wait_closed(self) -> None:
        """Wait until the connection has ended and its byte stream is closed."""
        await self._closed_event.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and dispatch frames until the connection ends (see MuxedConnection.run)."""
        if self._started:
            raise LocalProtocolError("run() was already started")
        self._started = True
        self._trace.start_session(self.is_initiator)
        error: RemoteProtocolError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._run_scope = nursery.cancel_scope
                if self._closed:
                    nursery.cancel_scope.cancel()
                self._core.start(trio.current_time())
                nursery.start_soon(self._write_loop)
                if self._uses_timers:
                    nursery.start_soon(self._timer_loop)
                task_status.started()
                try:
                    await self._read_loop()
                except RemoteProtocolError as err:
                    attach_context(err, peer=self.peer, protocol=self.protocol_id)
                    error = err
                    self._trace_goaway_sent()
                    with trio.move_on_after(self._close_timeout):
                        await self._drain()  # the core queued a GoAway(protocol error)
                    self._lose(err)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._shutdown(error)
        if error is not None:
            raise error

    async def open_stream(self) -> DriverStream:
        """Open an outbound stream (waits while the ACK backlog is full)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            if self._closed or self._closing:
                raise self._closed_error()
            if self._core.can_open_stream:
                break
            await self._open_lot.park()
            parked = True
        try:
            rec = self._core.open_stream(trio.current_time())
        except (LocalProtocolError, ConnectionClosedError) as err:
            attach_context(err, peer=self.peer, protocol=self.protocol_id)
            raise
        handle = self._new_stream(rec)
        self._trace.sent(handle._span, "open")
        self._wake_writer()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return handle

    async def accept_stream(self) -> DriverStream:
        """Wait for the next inbound stream; ConnectionClosedError once closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            while self._accept_queue:
                handle = self._accept_queue.popleft()
                rec = handle._rec
                self._core.accept_stream(rec)
                self._after_core()
                if rec.removed and rec.reset_cause is not None:
                    continue  # reset before anyone took it: nothing to hand over
                if not parked:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return handle
            if self._closed or self._closing:
                raise self._closed_error()
            await self._accept_lot.park()
            parked = True

    async def aclose(self) -> None:
        """Close gracefully: GoAway (Yamux), flush, close the byte stream; idempotent."""
        with trio.CancelScope(shield=True):
            if not self._closing and not self._closed:
                self._closing = True
                self._core.go_away(0)
                self._trace_goaway_sent()
                self._wake_writer()
                with trio.move_on_after(self._close_timeout):
                    await self._drain()
                self._lose("closed locally")
            if not self._started:
                await self._shutdown(None)
            with trio.move_on_after(self._close_timeout):
                await self._closed_event.wait()

    # ------------------------------------------------------------------ the engine

    async def _read_loop(self) -> None:
        receive = self._stream.receive_some
        core = self._core
        size = self._read_size
        clock = trio.current_time
        while True:
            try:
                data = await receive(size)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                if isinstance(exc, RemoteProtocolError):
                    raise exc from None  # the layer below names a violation (Noise)
                self._lose(exc)
                return
            if not data:
                self._lose("connection closed by peer")
                return
            core.receive_data(data, clock())
            if core.has_events:
                self._dispatch()
            if core.pending_output:
                self._writer_slot.wake()

    async def _write_loop(self) -> None:
        core = self._core
        send_all = self._stream.send_all
        timeout = self._write_timeout
        max_write = self._max_write
        writer_slot = self._writer_slot
        clock = trio.current_time
        while True:
            # One cancel scope for many writes: its deadline is pushed on lazily, only when
            # half of it is used (as go-yamux does), so a write that makes no progress for
            # ``write_timeout`` ends the connection; when it fires while idle, start over.
            with trio.CancelScope(deadline=clock() + timeout) as scope:
                while True:
                    if not core.pending_output:
                        self._writing = False
                        if self._drain_lot:
                            self._drain_lot.unpark_all()
                        if self._close_when_flushed is not None:
                            self._lose(self._close_when_flushed)
                            return
                        await writer_slot.wait()
                        continue
                    self._writing = True
                    now = clock()
                    if scope.deadline - now < timeout / 2:
                        scope.deadline = now + timeout
                    data = core.data_to_send(max_write)  # copies the borrowed payloads
                    if self._taken_waiters:
                        self._wake_takers()
                    try:
                        await send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        self._writing = False
                        self._lose(exc)
                        return
            if self._writing:
                self._writing = False
                self._lose(f"a write made no progress for {timeout} s")
                return

    async def _timer_loop(self) -> None:
        core = self._core
        while True:
            deadline = core.next_timer()
            await trio.sleep_until(math.inf if deadline is None else deadline)
            core.handle_timer(trio.current_time())
            self._after_core()

    async def _drain(self) -> None:
        """Wait until everything queued has been written (only while the writer runs)."""
        while self._started and not self._closed and (self._core.pending_output or self._writing):
            self._wake_writer()
            await self._drain_lot.park()

    async def _shutdown(self, error: RemoteProtocolError | None) -> None:
        """End the connection for good: close the byte stream, end the span."""
        if self._closed_event.is_set():
            return
        self._lose(error if error is not None else "closed")
        if not self._started and self._core.pending_output:
            # never ran: try to say goodbye (GoAway) directly
            with trio.move_on_after(self._close_timeout):
                try:
                    await self._stream.send_all(self._core.data_to_send())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await trio.aclose_forcefully(self._stream)
        self._trace.end_session(_describe(self._close_reason), error)
        self._closed_event.set()

    def _close_gracefully(self, reason: str) -> None:
        """Close once everything queued is written (the writer does it when idle)."""
        if self._closed or self._close_when_flushed is not None:
            return
        self._closing = True
        self._close_when_flushed = reason
        if self._started:
            self._writer_slot.wake()
        else:
            self._lose(reason)

    def _lose(self, reason: str | BaseException) -> None:
        """Mark the connection over: every stream ends, every waiter wakes, the engine stops."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._core.connection_lost(_describe(reason))
        self._dispatch()
        for handle in self._accept_queue:
            handle._wake()
        self._accept_lot.unpark_all()
        self._open_lot.unpark_all()
        self._wake_takers()
        self._drain_lot.unpark_all()
        if self._run_scope is not None:
            self._run_scope.cancel()

    # ------------------------------------------------------------------ stream commands

    def _wake_writer(self) -> None:
        if self._core.pending_output:
            self._writer_slot.wake()

    def _after_core(self) -> None:
        if self._core.has_events:
            self._dispatch()
        self._wake_writer()

    async def _send_stream_data(self, handle: DriverStream, view: memoryview) -> None:
        """Queue ``view`` as frames; return once the writer has taken (copied) all of them."""
        core = self._core
        rec = handle._rec
        slot = handle._send_slot
        batch = self._write_batch
        parked = False
        while view:
            handle._check_send()
            if self._closed:
                raise self._closed_error()
            if rec.send_window <= 0:
                await slot.wait()
                parked = True
                continue
            taken, ticket = core.send_data(rec, view, batch)
            self._writer_slot.wake()
            view = view[taken:]
            parked = True
            try:
                while not core.output_taken(ticket) and not self._closed:
                    self._taken_waiters.append(slot)
                    await slot.wait()
            except BaseException:
                core.own_output()  # the frames go out anyway; the caller may reuse its memory
                raise
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _wake_takers(self) -> None:
        waiters = self._taken_waiters
        self._taken_waiters = []
        for slot in waiters:
            slot.wake()

    def _read(self, rec: StreamRecord, max_bytes: int) -> bytes | bytearray:
        data = self._core.read(rec, max_bytes, trio.current_time())
        if self._core.pending_output:
            self._writer_slot.wake()
        return data

    def _send_eof(self, handle: DriverStream) -> None:
        self._core.send_eof(handle._rec)
        self._trace.sent(handle._span, "close")
        self._after_core()

    def _close_stream(self, handle: DriverStream) -> None:
        rec = handle._rec
        fin = rec.send_state is HalfState.OPEN
        self._core.close_stream(rec)
        if rec.reset_cause is ResetCause.LOCAL:
            self._trace.sent(handle._span, "reset")
        elif fin:
            self._trace.sent(handle._span, "close")
        self._after_core()

    def _reset(self, handle: DriverStream) -> None:
        self._core.reset_stream(handle._rec)
        self._trace.sent(handle._span, "reset")
        self._after_core()

    # ------------------------------------------------------------------ events

    def _new_stream(self, rec: StreamRecord) -> DriverStream:
        return self.stream_class(self, rec, self._trace.start_stream(rec))

    def _dispatch(self) -> None:
        for event in self._core.take_events():
            kind = type(event)
            if kind is StreamDataReceived:
                handle = event.stream.handle  # type: ignore[union-attr]
                if handle is not None:
                    handle._recv_slot.wake()
            elif kind is StreamWindowUpdated:
                handle = event.stream.handle  # type: ignore[union-attr]
                if handle is not None:
                    handle._send_slot.wake()
            else:
                self._on_event(event)

    def _on_event(self, event: MuxerEvent) -> None:
        if isinstance(event, InboundStreamOpened):
            handle = self._new_stream(event.stream)
            self._trace.received(handle._span, "open")
            self._accept_queue.append(handle)
            self._accept_lot.unpark()
        elif isinstance(event, StreamEofReceived):
            handle = event.stream.handle
            if handle is not None:
                self._trace.received(handle._span, "close")
                handle._wake()
        elif isinstance(event, StreamReset):
            handle = event.stream.handle
            if handle is not None:
                if event.cause is ResetCause.BY_PEER:
                    self._trace.received(handle._span, "reset")
                elif event.cause not in (ResetCause.LOCAL, ResetCause.CONNECTION_CLOSED):
                    self._trace.sent(handle._span, "reset")
                handle._wake()
        elif isinstance(event, StreamClosed):
            handle = event.stream.handle
            if handle is not None:
                self._trace.end_stream(handle._span, event.stream)
            self._open_lot.unpark_all()
            if self._draining and not self._core.num_streams:
                self._close_gracefully("peer sent GoAway; all streams finished")
        elif isinstance(event, StreamAcknowledged):
            handle = event.stream.handle
            if handle is not None:
                self._trace.received(handle._span, "ack")
            self._open_lot.unpark_all()
        elif isinstance(event, InboundStreamRejected):
            self._trace.rejected(event.stream_id, event.reason)
        elif isinstance(event, RttMeasured):
            self._trace.rtt(event.rtt)
        elif isinstance(event, GoAwayReceived):
            self._trace.goaway_received(event.code)
            if event.code:
                self._lose(f"peer sent GoAway ({_GOAWAY_NAMES.get(event.code, event.code)})")
            else:
                self._draining = True
                self._open_lot.unpark_all()
                if not self._core.num_streams:
                    self._close_gracefully("peer sent GoAway")
        elif isinstance(event, KeepaliveTimedOut):
            self._trace.keepalive_timeout(event.idle)
            self._lose(f"keepalive timeout: nothing received for {event.idle:.1f} s")

    def _trace_goaway_sent(self) -> None:
        if self._core.local_goaway is not None:
            self._trace.goaway_sent(self._core.local_goaway)

    def _closed_error(self) -> ConnectionClosedError:
        return ConnectionClosedError(
            f"connection closed ({_describe(self._close_reason or 'closing')})",
            peer=self.peer,
            protocol=self.protocol_id,
        )


def _describe(reason: str | BaseException | None) -> str:
    if reason is None:
        return "open"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return reason
