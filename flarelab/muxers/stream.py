"""DriverStream: one muxed stream, a trio HalfCloseableStream over a core's stream record.

The stream holds no protocol state of its own: it reads the record the core keeps (its
halves, its receive buffer, its send window) and asks its connection to act. It only
adds what trio's stream contract asks of a handle: closing the handle, conflict detection
(two tasks sending at once is a ``BusyResourceError``) and checkpoints.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import Span

from ..errors import ConnectionClosedError, StreamResetError
from .base import MuxedStream
from .state import HalfState, ResetCause, StreamRecord
from .waiting import WaitSlot

if TYPE_CHECKING:
    from .driver import MuxerDriver

__all__ = ["DEFAULT_RECEIVE_SIZE", "DriverStream"]

#: What ``receive_some()`` without a size returns at most.
DEFAULT_RECEIVE_SIZE = 256 * 1024


class DriverStream(MuxedStream):
    """A muxed stream: a handle on one core stream record, driven by its connection."""

    def __init__(self, conn: MuxerDriver, rec: StreamRecord, span: Span) -> None:
        self._conn = conn
        self._rec = rec
        self._span = span
        self.stream_id = rec.stream_id
        self.is_initiator = rec.local
        self._closed = False
        self._send_busy = False
        self._recv_busy = False
        self._recv_slot = WaitSlot()  # the receiving task, waiting for data
        self._send_slot = WaitSlot()  # the sending task, waiting for window
        rec.handle = self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._conn.protocol_id} {self._rec!r}>"

    @property
    def name(self) -> str | None:
        """Return the stream's name where the protocol has one (Mplex), else None."""
        return getattr(self._rec, "name", None)

    @property
    def bytes_sent(self) -> int:
        """Return the payload bytes sent so far."""
        return self._rec.bytes_sent

    @property
    def bytes_received(self) -> int:
        """Return the payload bytes received so far."""
        return self._rec.bytes_received

    @property
    def close_reason(self) -> str | None:
        """Return why the stream finished (None while it is open)."""
        rec = self._rec
        if rec.close_reason is not None:
            return rec.close_reason
        return "closed" if rec.removed else None

    # ------------------------------------------------------------------ receiving

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return some received bytes; ``b""`` once the peer half-closed and all was read."""
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._recv_busy:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._recv_busy = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            rec = self._rec
            parked = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if rec.buffered:
                    data = self._conn._read(rec, max_bytes)
                    break
                state = rec.recv_state
                if state is HalfState.CLOSED:
                    data = b""
                    break
                if state is HalfState.RESET:
                    raise self._broken()
                await self._recv_slot.wait()
                parked = True
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._recv_busy = False

    # ------------------------------------------------------------------ sending

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Queue all of ``data`` for the connection's writer, waiting for window as needed.

        The bytes are copied into frames before this returns; frames are written whole
        even if this call is cancelled, so a cancellation never tears the connection.
        """
        self._claim_send()
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_send()
            view = memoryview(data)
            if view.itemsize != 1 or view.ndim != 1:
                view = view.cast("B")
            await self._conn._send_stream_data(self, view)
        finally:
            self._send_busy = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the stream has send window (or can no longer send)."""
        self._claim_send()
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            parked = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if self._rec.send_state is not HalfState.OPEN:
                    break
                if self._conn._core.send_window(self._rec) > 0:
                    break
                await self._send_slot.wait()
                parked = True
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._send_busy = False

    async def send_eof(self) -> None:
        """Half-close: the peer reads EOF after everything sent so far."""
        self._claim_send()
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
            state = self._rec.send_state
            if state is HalfState.RESET:
                raise self._broken()
            if state is HalfState.OPEN:
                self._conn._send_eof(self)
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._send_busy = False

    # ------------------------------------------------------------------ ending

    async def reset(self) -> None:
        """Abort both directions; the peer sees StreamResetError."""
        if not self._rec.removed:
            self._conn._reset(self)
        self._wake()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the handle: FIN our side; data the peer still sends is answered with a reset.

        Unread data makes it a reset at once (as closing a TCP socket with unread data
        does), so a peer still sending learns that nobody reads.
        """
        if not self._closed:
            self._closed = True
            if not self._rec.removed:
                self._conn._close_stream(self)
            self._wake()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ helpers

    def _broken(self) -> trio.BrokenResourceError:
        rec = self._rec
        conn = self._conn
        if rec.reset_cause is ResetCause.CONNECTION_CLOSED:
            return ConnectionClosedError(
                f"stream {rec.stream_id}: connection closed ({rec.close_reason})",
                peer=conn.peer,
                protocol=conn.protocol_id,
            )
        return StreamResetError(
            f"stream {rec.stream_id}: {rec.close_reason}", peer=conn.peer, protocol=conn.protocol_id
        )

    def _wake(self) -> None:
        self._recv_slot.wake()
        self._send_slot.wake()

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        state = self._rec.send_state
        if state is HalfState.CLOSED:
            raise trio.ClosedResourceError("this stream's sending side was closed (send_eof)")
        if state is HalfState.RESET:
            raise self._broken()

    def _claim_send(self) -> None:
        if self._send_busy:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._send_busy = True
