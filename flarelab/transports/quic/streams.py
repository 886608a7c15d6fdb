"""QuicStream: one native QUIC bidirectional stream as the node's :class:`MuxedStream`.

The stream keeps what its handle needs (received chunks not yet read, the state of each
half, who reset it) and asks its connection to act on the core. Its contract is
:mod:`flarelab.muxers.base`'s:

* ``send_all`` waits while ``stream_send_buffer`` bytes are written but unacknowledged
  (aioquic's own send buffer has no bound); ``receive_some`` returns ``b""`` after the
  peer's FIN, and the peer may send at most ``stream_receive_window`` bytes we have not
  read (the core grants credit as we read).
* ``send_eof`` sends FIN. ``aclose`` sends FIN and STOP_SENDING (as go-libp2p's ``Close``
  does), or resets the stream if unread data is left (as closing a TCP socket does).
* ``reset`` sends RESET_STREAM and STOP_SENDING: the peer sees :class:`StreamResetError`.
* A stream the peer reset raises :class:`StreamResetError`; one whose connection ended
  raises :class:`ConnectionClosedError`; a closed handle raises ``ClosedResourceError``.
"""

from __future__ import annotations

import enum
import operator
from collections import deque
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import Span

from ...errors import ConnectionClosedError, StreamResetError
from ...muxers.base import MuxedStream

if TYPE_CHECKING:
    from .driver import QuicConnection

__all__ = ["DEFAULT_RECEIVE_SIZE", "Half", "QuicStream", "WaitSlot"]

#: What ``receive_some()`` without a size returns at most.
DEFAULT_RECEIVE_SIZE = 256 * 1024


class Half(enum.Enum):
    """The state of one direction of a stream."""

    OPEN = "open"
    FINISHED = "finished"  # FIN sent (ours) or received (theirs)
    RESET = "reset"


class WaitSlot:
    """Where at most one task waits until :meth:`wake` (a one-waiter parking lot)."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    async def wait(self) -> None:
        """Wait until woken; a cancellable checkpoint."""
        if self._task is not None:
            raise trio.BusyResourceError("another task is already waiting here")
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self) -> None:
        """Wake the waiting task, if any."""
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)


class QuicStream(MuxedStream):
    """A bidirectional QUIC stream of a :class:`~.driver.QuicConnection`."""

    def __init__(self, conn: QuicConnection, stream_id: int, is_initiator: bool, span: Span):
        self._conn = conn
        self.stream_id = stream_id
        self.is_initiator = is_initiator
        self.span = span
        self.send_half = Half.OPEN
        self.recv_half = Half.OPEN
        #: why the stream was reset ("reset by the peer", "reset locally", ...)
        self.reset_reason: str | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self._chunks: deque[bytes] = deque()
        self._first_offset = 0  # bytes of _chunks[0] already read
        self._unread = 0
        self._closed = False  # this handle was closed
        self._send_busy = False
        self._recv_busy = False
        self._recv_slot = WaitSlot()
        self._send_slot = WaitSlot()

    def __repr__(self) -> str:
        return (
            f"<QuicStream {self.stream_id} send={self.send_half.value} "
            f"recv={self.recv_half.value}{' closed' if self._closed else ''}>"
        )

    # ------------------------------------------------------------------ the connection's side

    @property
    def unread(self) -> int:
        """Bytes received and not yet read."""
        return self._unread

    @property
    def handle_closed(self) -> bool:
        """Tell whether the application closed (or reset) its handle."""
        return self._closed

    @property
    def is_done(self) -> bool:
        """Both halves over and nothing left to read: the stream holds nothing."""
        return (
            self.send_half is not Half.OPEN and self.recv_half is not Half.OPEN and not self._unread
        )

    def data_received(self, data: bytes, fin: bool) -> None:
        """Take data the core delivered (the connection drops data for closed handles)."""
        if data:
            self._chunks.append(data)
            self._unread += len(data)
            self.bytes_received += len(data)
        if fin and self.recv_half is Half.OPEN:
            self.recv_half = Half.FINISHED
        self._recv_slot.wake()

    def reset_by_peer(self, *, receive: bool, send: bool, reason: str) -> int:
        """The peer reset one or both halves; return the unread bytes dropped."""
        dropped = 0
        if receive and self.recv_half is Half.OPEN:
            self.recv_half = Half.RESET
            dropped = self._drop_unread()
        if send and self.send_half is Half.OPEN:
            self.send_half = Half.RESET
        if self.reset_reason is None:
            self.reset_reason = reason
        self.wake()
        return dropped

    def wake(self) -> None:
        """Wake the tasks waiting to read or to send (state changed, or room to send)."""
        self._recv_slot.wake()
        self._send_slot.wake()

    def _drop_unread(self) -> int:
        dropped = self._unread
        self._chunks.clear()
        self._first_offset = 0
        self._unread = 0
        return dropped

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
            parked = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if self._unread:
                    data = self._take(max_bytes)
                    break
                if self.recv_half is Half.FINISHED:
                    data = b""
                    break
                if self.recv_half is Half.RESET or self._conn.is_closed:
                    raise self._broken()
                await self._recv_slot.wait()
                parked = True
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._recv_busy = False

    def _take(self, max_bytes: int) -> bytes:
        chunks = self._chunks
        first = chunks[0]
        start = self._first_offset
        available = len(first) - start
        if available >= max_bytes:
            data = first[start : start + max_bytes]
            if available == max_bytes:
                chunks.popleft()
                self._first_offset = 0
            else:
                self._first_offset = start + max_bytes
        else:
            parts = [first[start:] if start else first]
            chunks.popleft()
            self._first_offset = 0
            total = available
            while chunks and total < max_bytes:
                chunk = chunks[0]
                room = max_bytes - total
                if len(chunk) <= room:
                    parts.append(chunk)
                    total += len(chunk)
                    chunks.popleft()
                else:
                    parts.append(chunk[:room])
                    self._first_offset = room
                    total = max_bytes
            data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._unread -= len(data)
        self._conn._stream_read(self, len(data))
        return data

    # ------------------------------------------------------------------ sending

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``, waiting while the stream's send buffer is full."""
        self._claim_send()
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data)
            if view.itemsize != 1 or view.ndim != 1:
                view = view.cast("B")
            parked = False
            while True:
                self._check_send()
                if not view:
                    break
                room = self._conn._send_room(self)
                if room <= 0:
                    await self._wait_for_room()
                    parked = True
                    continue
                chunk = view[:room]
                view = view[room:]
                self._conn._write(self, chunk)
                self.bytes_sent += len(chunk)
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._send_busy = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the stream's send buffer has room (or the stream cannot send)."""
        self._claim_send()
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            parked = False
            while (
                not self._closed
                and self.send_half is Half.OPEN
                and not self._conn.is_closed
                and self._conn._send_room(self) <= 0
            ):
                await self._wait_for_room()
                parked = True
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
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
            if self.send_half is Half.RESET or self._conn.is_closed:
                raise self._broken()
            if self.send_half is Half.OPEN:
                self.send_half = Half.FINISHED
                self._conn._write(self, b"", fin=True)
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._send_busy = False

    async def _wait_for_room(self) -> None:
        blocked = self._conn._send_blocked
        blocked.add(self)
        try:
            await self._send_slot.wait()
        finally:
            blocked.discard(self)

    def _claim_send(self) -> None:
        if self._send_busy:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._send_busy = True

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self.send_half is Half.FINISHED:
            raise trio.ClosedResourceError("this stream's sending side was closed (send_eof)")
        if self.send_half is Half.RESET or self._conn.is_closed:
            raise self._broken()

    # ------------------------------------------------------------------ ending

    async def reset(self) -> None:
        """Abort both directions; the peer sees StreamResetError."""
        self._conn._reset(self, "reset locally")
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the handle: FIN and STOP_SENDING, or a reset if unread data is left."""
        if not self._closed:
            if self._unread:
                self._conn._reset(self, "closed with unread data")
            else:
                self._conn._close(self)
            self._closed = True
            self.wake()
        await trio.lowlevel.checkpoint()

    def _broken(self) -> trio.BrokenResourceError:
        conn = self._conn
        if self.reset_reason is None and conn.is_closed:
            return ConnectionClosedError(
                f"stream {self.stream_id}: connection closed ({conn.close_reason})",
                peer=conn.peer,
                protocol=conn.protocol_id,
            )
        return StreamResetError(
            f"stream {self.stream_id}: {self.reset_reason or 'reset'}",
            peer=conn.peer,
            protocol=conn.protocol_id,
        )
