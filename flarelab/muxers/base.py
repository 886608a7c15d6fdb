"""The stream-multiplexer interfaces the node codes against.

A :class:`MuxedConnection` turns one secure byte stream into many :class:`MuxedStream` s.
Its :meth:`~MuxedConnection.run` is the engine (it reads frames until the connection ends)
and is started with ``await nursery.start(conn.run)``. Both Yamux and Mplex implement these
interfaces with a pure protocol core and the shared trio driver in
:mod:`flarelab.muxers.driver`.

Errors a stream raises:

* ``trio.ClosedResourceError`` -- *this* handle was closed (``aclose``) or its sending side
  half-closed (``send_eof``) and you tried to send;
* :class:`~flarelab.errors.StreamResetError` -- the stream was reset, by the peer, by a
  local :meth:`MuxedStream.reset`, or because the peer broke the protocol on it;
* :class:`~flarelab.errors.ConnectionClosedError` -- the connection under it went away.

The last two are ``trio.BrokenResourceError`` s, as trio's stream contract asks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import trio

from ..errors import LocalProtocolError

__all__ = ["MuxedConnection", "MuxedStream", "TooManyStreamsError"]


class TooManyStreamsError(LocalProtocolError):
    """We tried to open more outbound streams than the muxer's configured limit."""


class MuxedStream(trio.abc.HalfCloseableStream):
    """One logical stream of a multiplexed connection."""

    #: The muxer's stream id (Yamux: odd if the connection initiator opened it; Mplex: a
    #: per-side counter, so an inbound and an outbound stream can share an id).
    stream_id: int
    #: True if we opened this stream.
    is_initiator: bool

    @abstractmethod
    async def reset(self) -> None:
        """Abort both directions at once; the peer sees :class:`StreamResetError`."""


class MuxedConnection(ABC):
    """A multiplexed connection: open, accept and serve streams over one byte stream."""

    #: The multistream-select protocol id, e.g. ``/yamux/1.0.0`` or ``/mplex/6.7.0``.
    protocol_id: str

    @abstractmethod
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and dispatch frames until the connection ends.

        Returns when the connection closed normally (locally, by the peer, or because the
        transport went away) and raises :class:`~flarelab.errors.RemoteProtocolError`
        (naming the peer and the protocol) when the peer violated the protocol.
        """

    @abstractmethod
    async def open_stream(self) -> MuxedStream:
        """Open a new outbound stream."""

    @abstractmethod
    async def accept_stream(self) -> MuxedStream:
        """Wait for the next inbound stream; ``ConnectionClosedError`` once closed."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close gracefully (GoAway where the protocol has one) and close the byte stream."""

    @property
    @abstractmethod
    def is_closed(self) -> bool:
        """Tell whether the connection has ended."""

    @abstractmethod
    async def wait_closed(self) -> None:
        """Wait until the connection has ended."""

    @property
    @abstractmethod
    def num_streams(self) -> int:
        """Return how many streams are open (not yet fully closed or reset)."""

    @property
    @abstractmethod
    def close_reason(self) -> str | BaseException | None:
        """Return why the connection ended (None while it is open)."""
