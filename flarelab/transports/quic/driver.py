"""QuicConnection: the trio driver of one :class:`~.core.QuicCore`, and a MuxedConnection.

The driver owns the clock (``trio.current_time()``) and one task, the *flusher*, that runs
the core's timers and sends what the core has to send. Everything that can make the core
produce datagrams (a received datagram batch, a write, a read that frees window, a close)
only touches the core and wakes the flusher; it then takes everything ``datagrams_to_send``
allows and hands the whole batch to the endpoint's socket at once. Received datagrams
arrive from the endpoint's receive loop (:meth:`datagram_received`), which feeds a whole
batch before the flusher runs, so a burst of packets costs one flush.

The flusher runs in the endpoint's nursery under the connection's own cancel scope, which
is cancelled when the connection ends: when the peer closed, when we closed and the
CONNECTION_CLOSE went out, when the idle timeout struck or the handshake failed. aioquic
would only report the end after its closing period (3 PTO); the driver ends at once, and
the endpoint drops the connection's ids, so late packets are simply dropped.

A dial may ask for its first flight to be re-sent (:meth:`QuicConnection.resend_first_flight`,
for hole punching): the flusher keeps a copy of the client's first datagrams and sends it
again on the :class:`~.config.InitialResend` schedule until the peer is heard from.

To the node this is a :class:`~flarelab.muxers.base.MuxedConnection` whose streams are
QUIC's own (:class:`~.streams.QuicStream`). ``run`` does not read anything itself (the
endpoint does); it serves the endpoint of a dial-only connection and waits for the end.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import trio
from aioquic.quic import events
from aioquic.quic.packet import QuicErrorCode
from opentelemetry.trace import Span, Tracer

from ...errors import ConnectionClosedError, HandshakeError, RemoteProtocolError
from ...muxers.base import MuxedConnection, TooManyStreamsError
from .config import INITIAL_RESENT_COUNT, INITIAL_RESENT_EVENT, InitialResend, QuicConfig
from .core import CloseInfo, QuicCore
from .quic_spans import (
    end_connection_span,
    end_handshake_span,
    end_stream_span,
    start_connection_span,
    start_handshake_span,
    start_stream_span,
)
from .streams import Half, QuicStream, WaitSlot

if TYPE_CHECKING:
    from ...identity import PeerId, PublicKey
    from .endpoint import QuicEndpoint
    from .sockets import Address

__all__ = ["QUIC_MUXER_ID", "QuicConnection"]

log = logging.getLogger("flarelab.quic")

#: what a QUIC connection reports as its "muxer" (QUIC has native streams, no muxer id)
QUIC_MUXER_ID: Final = "quic-v1"
#: application error code on streams we reset and connections we close (as go-libp2p)
APP_ERROR: Final = 0
#: how far past a due timer the flusher waits when aioquic left it due (seconds)
TIMER_SLACK: Final = 1e-6
#: a send that blocks longer than this (kernel buffer full) drops the rest of its batch
SEND_TIMEOUT: Final = 1.0
_ping_ids = itertools.count(1)


class QuicConnection(MuxedConnection):
    """One QUIC connection: its core, its flusher, its streams."""

    protocol_id = QUIC_MUXER_ID

    def __init__(
        self,
        core: QuicCore,
        *,
        endpoint: QuicEndpoint,
        remote: Address,
        config: QuicConfig,
        tracer: Tracer,
        span: Span,
    ) -> None:
        self.core = core
        self.endpoint = endpoint
        self.remote = remote
        self.config = config
        self.tracer = tracer
        #: quic.dial or quic.accept: the span this connection belongs to (its owner ends it)
        self.parent_span = span
        self.is_initiator = core._is_client
        self._handshake_span: Span | None = start_handshake_span(
            tracer, span, is_initiator=self.is_initiator
        )
        #: quic.connection: from the verified handshake to the end, with path statistics
        self.span: Span | None = None
        self.created_at = trio.current_time()
        self._streams: dict[int, QuicStream] = {}
        self._detached: set[int] = set()  # handles closed, QUIC stream not yet finished
        self._send_blocked: set[QuicStream] = set()  # senders waiting for acknowledgements
        self._accept_queue: deque[QuicStream] = deque()
        self._accept_lot = trio.lowlevel.ParkingLot()
        self._open_lot = trio.lowlevel.ParkingLot()
        self._flusher = WaitSlot()
        self._dirty = False
        self._cancel_scope: trio.CancelScope | None = None
        self.handshake_done = trio.Event()
        #: why the handshake failed (set with handshake_done)
        self.handshake_error: BaseException | None = None
        self.closed = trio.Event()
        self._close_reason: str | None = None
        self._closing_locally = False
        self._violation: RemoteProtocolError | None = None
        self._last_activity = self.created_at
        self._last_ping = self.created_at
        self.bytes_sent = 0
        self.bytes_received = 0
        #: called once when the handshake ends, with None (verified) or the error
        self.on_handshake: Callable[[QuicConnection, BaseException | None], None] | None = None
        # re-sending the first flight (hole punching): the plan, the copy, the next time
        self._resend: InitialResend | None = None
        self._first_flight: list[tuple[bytes, Address]] | None = None
        self._resend_at = math.inf
        #: copies of the first flight sent again (see resend_first_flight)
        self.initial_resent = 0

    def __repr__(self) -> str:
        role = "client" if self.is_initiator else "server"
        return f"<QuicConnection {role} to {self.remote[:2]} peer={self.peer}>"

    # ------------------------------------------------------------------ identity

    @property
    def peer(self) -> PeerId | None:
        """The verified peer (None until the handshake completed)."""
        return self.core.remote_peer

    @property
    def remote_public_key(self) -> PublicKey | None:
        """The peer's host key (None until the handshake completed)."""
        return self.core.remote_public_key

    # ------------------------------------------------------------------ MuxedConnection

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until the connection ends; raise RemoteProtocolError if the peer broke QUIC."""
        if self.endpoint.owner is self and not self.closed.is_set():
            # a dial-only endpoint lives as long as its one connection, in this task
            async with trio.open_nursery() as nursery:
                await nursery.start(self.endpoint.serve)
                task_status.started()
                await self.closed.wait()
                nursery.cancel_scope.cancel()
        else:
            task_status.started()
            await self.closed.wait()
        if self._violation is not None:
            raise self._violation

    async def open_stream(self) -> QuicStream:
        """Open a bidirectional stream, waiting (bounded) for the peer to allow one."""
        core = self.core
        with trio.move_on_after(self.config.stream_open_timeout) as scope:
            while not core.can_open_stream() and not self.is_closed:
                await self._open_lot.park()
        if self.is_closed:
            raise self._closed_error()
        if scope.cancelled_caught:
            raise TooManyStreamsError(
                f"the peer allowed no new stream within {self.config.stream_open_timeout} s",
                peer=self.peer,
                protocol=self.protocol_id,
            )
        stream_id = core.get_next_available_stream_id()
        core.send_stream_data(stream_id, b"")  # creates it; the peer learns of it with data
        stream = self._new_stream(stream_id, is_initiator=True)
        await trio.lowlevel.checkpoint()
        return stream

    async def accept_stream(self) -> QuicStream:
        """Wait for the next stream the peer opens; ConnectionClosedError once closed."""
        while not self._accept_queue:
            if self.is_closed:
                raise self._closed_error()
            await self._accept_lot.park()
        await trio.lowlevel.checkpoint()
        return self._accept_queue.popleft()

    async def aclose(self) -> None:
        """Close with NO_ERROR (CONNECTION_CLOSE goes out at once) and end every stream."""
        if not self.is_closed:
            self._closing_locally = True
            self.core.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="")
            self._close_reason = "closed locally"
            await self.flush_now()
        await trio.lowlevel.checkpoint()

    @property
    def is_closed(self) -> bool:
        """Tell whether the connection has ended (or is ending)."""
        return self.closed.is_set()

    async def wait_closed(self) -> None:
        """Wait until the connection has ended."""
        await self.closed.wait()

    @property
    def num_streams(self) -> int:
        """Return how many streams are open (neither both halves over nor reset)."""
        return sum(1 for sid, s in self._streams.items() if sid not in self._detached)

    @property
    def close_reason(self) -> str | BaseException | None:
        """Return why the connection ended (None while it is open)."""
        if not self.is_closed:
            return None
        return self._violation or self._close_reason

    def _closed_error(self) -> ConnectionClosedError:
        return ConnectionClosedError(
            f"QUIC connection closed ({self._close_reason})", peer=self.peer, protocol=QUIC_MUXER_ID
        )

    # ------------------------------------------------------------------ input from the endpoint

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram to the core (from the endpoint's receive loop)."""
        if self.is_closed:
            return
        if self._resend is not None:
            self._stop_resending()  # the peer heard us: QUIC's own recovery takes over
        self.core.receive_datagram(data, addr, now)
        self._last_activity = now
        self._process_events()
        self._dirty = True
        self._flusher.wake()

    def wake(self) -> None:
        """Ask the flusher for a round (something may have to be sent)."""
        self._dirty = True
        self._flusher.wake()

    # ------------------------------------------------------------------ the flusher

    async def drive(self) -> None:
        """The flusher: timers, datagrams out, handshake deadline, keep-alive, the end."""
        if self._cancel_scope is not None or self.closed.is_set():
            return
        core = self.core
        config = self.config
        keepalive = config.keepalive_interval
        handshake_deadline = self.created_at + config.handshake_timeout
        try:
            with trio.CancelScope() as self._cancel_scope:
                while True:
                    self._dirty = False
                    now = trio.current_time()
                    timer = core.get_timer()
                    if timer is not None and now >= timer:
                        core.handle_timer(now)
                        self._process_events()
                    if now >= self._resend_at:
                        await self._send_first_flight_again(now)
                    if not self.handshake_done.is_set() and now >= handshake_deadline:
                        self._refuse_slow_handshake()
                    elif (
                        keepalive
                        and self.handshake_done.is_set()
                        and now - max(self._last_activity, self._last_ping) >= keepalive
                    ):
                        core.send_ping(next(_ping_ids))
                        self._last_ping = now
                    await self._flush(now)
                    if self.is_closed and not core.close_pending:
                        return
                    if self._dirty:
                        continue
                    deadline = core.get_timer()
                    deadline = math.inf if deadline is None else deadline
                    if not self.handshake_done.is_set():
                        deadline = min(deadline, handshake_deadline, self._resend_at)
                    elif keepalive:
                        deadline = min(
                            deadline, max(self._last_activity, self._last_ping) + keepalive
                        )
                    if deadline <= now:
                        # a timer aioquic could not act on at this instant (its loss timer
                        # can sit a rounding error before the packet is overdue): let the
                        # clock move on, or a frozen MockClock would spin here forever
                        deadline = now + TIMER_SLACK
                    with trio.move_on_at(deadline):
                        await self._flusher.wait()
        finally:
            self._cancel_scope = None

    async def _flush(self, now: float) -> None:
        datagrams = self.core.datagrams_to_send(now)
        if datagrams and self._resend is not None and self._first_flight is None:
            self._keep_first_flight(datagrams, now)
        if datagrams:
            endpoint = self.endpoint
            try:
                if endpoint.batch:  # a real socket: it only waits when the kernel is full
                    await endpoint.send_datagrams(datagrams)
                else:
                    # the core counts these as sent: a cancellation must not lose them
                    with trio.CancelScope(shield=True), trio.move_on_after(SEND_TIMEOUT):
                        await endpoint.send_datagrams(datagrams)
            except (OSError, trio.ClosedResourceError) as exc:
                self._close_reason = f"socket failed: {exc}"
                self._end()
                return
            self._process_events()  # ConnectionIdIssued comes out of datagrams_to_send
        if self._detached:
            self._reap_streams()
        if self.core.close_info is not None and not self.is_closed:
            self._end()

    async def flush_pending(self) -> None:
        """Send what the core has to send now (the flusher may not be running)."""
        await self._flush(trio.current_time())

    async def flush_now(self) -> None:
        """Send what the core has now (a close), even if the flusher is not running."""
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._flush(trio.current_time())
        self._end()
        self._flusher.wake()

    # ------------------------------------------------------------------ first-flight copies

    def resend_first_flight(self, plan: InitialResend) -> None:
        """Send copies of our first flight on ``plan``'s schedule until the peer answers.

        Call it on a client before its first flush (:meth:`QuicEndpoint.connect` does).
        """
        if not self.is_initiator or self._first_flight is not None or plan.count < 1:
            return
        self._resend = plan

    def _keep_first_flight(self, datagrams: list[tuple[bytes, Address]], now: float) -> None:
        assert self._resend is not None
        self._first_flight = [(bytes(data), addr) for data, addr in datagrams]
        self._resend_at = now + self._resend.interval

    async def _send_first_flight_again(self, now: float) -> None:
        plan, flight = self._resend, self._first_flight
        if plan is None or flight is None or self.handshake_done.is_set() or self.is_closed:
            self._stop_resending()
            return
        try:
            await self.endpoint.send_datagrams(flight)
        except (OSError, trio.ClosedResourceError):
            self._stop_resending()  # the flush that follows meets the same error
            return
        self.initial_resent += 1
        if self._handshake_span is not None:
            self._handshake_span.add_event(
                INITIAL_RESENT_EVENT, {INITIAL_RESENT_COUNT: self.initial_resent})
        if plan.on_resend is not None:
            plan.on_resend(self.initial_resent)
        if self.initial_resent >= plan.count:
            self._stop_resending()
        else:
            self._resend_at = now + plan.interval

    def _stop_resending(self) -> None:
        self._resend = None
        self._first_flight = None
        self._resend_at = math.inf

    def _refuse_slow_handshake(self) -> None:
        timeout = self.config.handshake_timeout
        self.core.close(
            error_code=QuicErrorCode.CONNECTION_REFUSED, reason_phrase="handshake timeout"
        )
        self._handshake_failed(
            HandshakeError(f"QUIC handshake did not finish within {timeout} s", peer=self.peer)
        )

    # ------------------------------------------------------------------ core events

    def _process_events(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            kind = type(event)
            if kind is events.StreamDataReceived:
                self._on_stream_data(cast(events.StreamDataReceived, event))
            elif kind is events.StreamReset:
                sid = cast(events.StreamReset, event).stream_id
                self._on_peer_reset(sid, receive=True, send=False)
            elif kind is events.StopSendingReceived:
                sid = cast(events.StopSendingReceived, event).stream_id
                self._on_peer_reset(sid, receive=False, send=True)
            elif kind is events.HandshakeCompleted:
                self._on_handshake_completed()
            elif kind is events.ConnectionIdIssued:
                self.endpoint.add_route(cast(events.ConnectionIdIssued, event).connection_id, self)
            elif kind is events.ConnectionIdRetired:
                self.endpoint.remove_route(
                    cast(events.ConnectionIdRetired, event).connection_id, self
                )
        if core.auth_error is not None and not self.handshake_done.is_set():
            self._handshake_failed(core.auth_error)
        if core.close_info is not None and not self.is_closed and not core.close_pending:
            self._end()
        if self._open_lot and core.can_open_stream():
            self._open_lot.unpark_all()
        if self._send_blocked:
            room = self.config.stream_send_buffer
            for stream in list(self._send_blocked):
                if core.send_buffered(stream.stream_id) < room or stream.send_half is not Half.OPEN:
                    stream.wake()

    def _on_stream_data(self, event: events.StreamDataReceived) -> None:
        sid = event.stream_id
        stream = self._streams.get(sid)
        if stream is None:
            if (sid & 1) == (0 if self.is_initiator else 1) or self.is_closed:
                # one of ours that we are done with: the data has no reader
                self.core.forget_stream(sid)
                return
            stream = self._new_stream(sid, is_initiator=False)
            self._accept_queue.append(stream)
            self._accept_lot.unpark()
        self.bytes_received += len(event.data)
        if stream.handle_closed or stream.recv_half is not Half.OPEN:
            self.core.release(sid, len(event.data))  # nobody will read it
        else:
            stream.data_received(event.data, event.end_stream)
        self._maybe_finish(stream)

    def _on_peer_reset(self, sid: int, *, receive: bool, send: bool) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            if receive:
                # a stream the peer opened and reset before sending anything: finish it
                self.core.reset_stream(sid, APP_ERROR)
            return
        dropped = stream.reset_by_peer(receive=receive, send=send, reason="reset by the peer")
        if dropped:
            self.core.release(sid, dropped)
        self._maybe_finish(stream)

    def _on_handshake_completed(self) -> None:
        core = self.core
        if core.remote_peer is None or self.handshake_done.is_set():
            return
        if self._handshake_span is not None:
            end_handshake_span(self._handshake_span, peer=core.remote_peer, error=None)
            self._handshake_span = None
        self.span = start_connection_span(
            self.tracer,
            self.parent_span,
            peer=core.remote_peer,
            is_initiator=self.is_initiator,
            remote=self.remote,
            datagram_size=core.datagram_size,
            odcid=core.original_destination_connection_id,
        )
        self.handshake_done.set()
        self._stop_resending()
        if self.on_handshake is not None:
            self.on_handshake(self, None)

    def _handshake_failed(self, error: BaseException) -> None:
        if self.handshake_done.is_set():
            return
        self.handshake_error = error
        if self._handshake_span is not None:
            end_handshake_span(self._handshake_span, error=error)
            self._handshake_span = None
        self.handshake_done.set()
        self._stop_resending()
        if self.on_handshake is not None:
            self.on_handshake(self, error)

    # ------------------------------------------------------------------ streams (for QuicStream)

    def _new_stream(self, stream_id: int, *, is_initiator: bool) -> QuicStream:
        span = start_stream_span(
            self.tracer, stream_id=stream_id, is_initiator=is_initiator, peer=self.peer
        )
        stream = QuicStream(self, stream_id, is_initiator, span)
        self._streams[stream_id] = stream
        return stream

    def _send_room(self, stream: QuicStream) -> int:
        return self.config.stream_send_buffer - self.core.send_buffered(stream.stream_id)

    def _write(self, stream: QuicStream, data: bytes | memoryview, *, fin: bool = False) -> None:
        self.core.send_stream_data(stream.stream_id, cast(bytes, data), end_stream=fin)
        self.bytes_sent += len(data)
        self.wake()
        if fin:
            self._maybe_finish(stream)

    def _stream_read(self, stream: QuicStream, nbytes: int) -> None:
        if self.core.release(stream.stream_id, nbytes):
            self.wake()
        if stream.recv_half is not Half.OPEN:
            self._maybe_finish(stream)

    def _close(self, stream: QuicStream) -> None:
        """The handle closes: FIN our half, STOP_SENDING theirs."""
        core = self.core
        sid = stream.stream_id
        if not self.is_closed:
            if stream.send_half is Half.OPEN:
                stream.send_half = Half.FINISHED
                core.send_stream_data(sid, b"", end_stream=True)
            if stream.recv_half is Half.OPEN:
                self._stop_sending(sid)
            self.wake()
        if stream.recv_half is Half.OPEN:
            stream.recv_half = Half.FINISHED
        self._detach(stream)

    def _reset(self, stream: QuicStream, reason: str) -> None:
        """Abort both halves: RESET_STREAM and STOP_SENDING."""
        core = self.core
        sid = stream.stream_id
        if not self.is_closed:
            if stream.send_half is not Half.RESET:
                core.reset_stream(sid, APP_ERROR)
            if stream.recv_half is Half.OPEN:
                self._stop_sending(sid)
            self.wake()
        stream.send_half = Half.RESET
        if stream.recv_half is Half.OPEN:
            stream.recv_half = Half.RESET
        if stream.reset_reason is None:
            stream.reset_reason = reason
        dropped = stream._drop_unread()
        if dropped:
            core.release(sid, dropped)
        stream.wake()
        self._detach(stream)

    def _stop_sending(self, sid: int) -> None:
        try:
            self.core.stop_stream(sid, APP_ERROR)
        except ValueError:  # aioquic already discarded the stream
            pass

    def _detach(self, stream: QuicStream) -> None:
        """The handle is done: keep the record only until QUIC finished the stream."""
        sid = stream.stream_id
        if sid in self._streams and sid not in self._detached:
            self._detached.add(sid)
            end_stream_span(stream)

    def _maybe_finish(self, stream: QuicStream) -> None:
        if stream.is_done and not stream.handle_closed:
            # both halves over: count the stream as finished even before aclose()
            self._detach(stream)

    def _reap_streams(self) -> None:
        """Forget detached streams that the core has discarded (after a flush)."""
        live = self.core._streams
        for sid in [sid for sid in self._detached if sid not in live]:
            self._detached.discard(sid)
            self._streams.pop(sid, None)
            self.core.forget_stream(sid)

    # ------------------------------------------------------------------ the end

    def _end(self) -> None:
        """The connection is over (or its CONNECTION_CLOSE is on its way): wake everyone."""
        if self.closed.is_set():
            return
        info = self.core.close_info
        if info is None:  # ended without a core close (endpoint shut down)
            info = CloseInfo(QuicErrorCode.NO_ERROR, None, "endpoint closed", "local")
        if self._close_reason is None or not self._closing_locally:
            self._close_reason = info.describe()
        if info.initiator == "local" and info.is_error and not self._closing_locally:
            # aioquic closed because the peer broke QUIC (or was refused in the handshake)
            self._violation = RemoteProtocolError(
                f"QUIC connection closed: {info.reason or 'protocol violation'} "
                f"(code 0x{info.error_code:x})",
                peer=self.peer,
                protocol=QUIC_MUXER_ID,
            )
        if not self.handshake_done.is_set():
            self._handshake_failed(
                self.core.auth_error
                or HandshakeError(f"QUIC handshake failed: {info.describe()}", peer=self.peer)
            )
        self.closed.set()
        for stream in list(self._streams.values()):
            stream.wake()
            if stream.stream_id not in self._detached:
                self._detached.add(stream.stream_id)
                end_stream_span(stream)
        self._accept_lot.unpark_all()
        self._open_lot.unpark_all()
        self._flusher.wake()
        self.endpoint.connection_ended(self)
        if self.span is not None:
            end_connection_span(
                self.span,
                self.core.stats(),
                bytes_sent=self.bytes_sent,
                bytes_received=self.bytes_received,
                close_code=info.error_code,
                close_reason=self._close_reason or info.describe(),
                violation=self._violation,
            )
            self.span = None

    def cancel(self) -> None:
        """Stop the flusher (the endpoint is going away)."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def details(self) -> dict[str, Any]:
        """Facts for SecuredConnection.details and traces."""
        return {
            "datagram_size": self.core.datagram_size,
            "odcid": self.core.original_destination_connection_id.hex(),
            "initial_resent": self.initial_resent,
        }

