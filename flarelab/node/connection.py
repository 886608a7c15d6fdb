"""Connections and streams as the node hands them out.

A :class:`Connection` is one secured, multiplexed link to a peer; a :class:`NetStream` is
one muxed stream on it with its negotiated protocol. Both carry what a trace or a user
wants to know (peer, addresses, direction, transport, whether the link is limited).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import Span, Tracer

from ..errors import attach_context
from ..mss import negotiate_initiator
from ..tracing import spans

if TYPE_CHECKING:
    from ..identity import PeerId, PublicKey
    from ..multiaddr import Multiaddr
    from ..muxers.base import MuxedConnection, MuxedStream

__all__ = ["Connection", "NetStream"]

_ids = itertools.count(1)


class NetStream(trio.abc.HalfCloseableStream):
    """A muxed stream speaking ``protocol`` with ``remote_peer`` over ``connection``."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        muxed: MuxedStream,
        protocol: str,
        connection: Connection,
    ) -> None:
        self._stream = stream
        self.muxed = muxed
        self.protocol = protocol
        self.connection = connection

    @property
    def remote_peer(self) -> PeerId:
        return self.connection.remote_peer

    @property
    def stream_id(self) -> int:
        return self.muxed.stream_id

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        # through the wrapper: a lazily negotiated stream reads the answer first
        await self._stream.send_eof()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def reset(self) -> None:
        """Abort the stream in both directions."""
        await self.muxed.reset()

    def __repr__(self) -> str:
        return (
            f"<NetStream {self.protocol} #{self.stream_id} to {self.remote_peer.short()} "
            f"on conn {self.connection.id}>"
        )


class Connection:
    """One secured, multiplexed connection to a peer."""

    def __init__(
        self,
        *,
        muxer: MuxedConnection,
        remote_peer: PeerId,
        remote_public_key: PublicKey,
        local_addr: Multiaddr,
        remote_addr: Multiaddr,
        direction: str,
        transport: str,
        security: str,
        limited: bool = False,
        tracer: Tracer = spans.NO_TRACER,
        negotiate_timeout: float = 10.0,
        span: Span | None = None,
    ) -> None:
        self.id = next(_ids)
        self.muxer = muxer
        self.remote_peer = remote_peer
        self.remote_public_key = remote_public_key
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.direction = direction
        self.transport = transport
        self.security = security
        #: a relayed (or otherwise restricted) connection: only protocols that allow it run
        self.limited = limited
        self.opened_at = trio.current_time()
        self.tracer = tracer
        self.negotiate_timeout = negotiate_timeout
        self.span = span
        self.closed = trio.Event()
        self.close_reason: str | None = None
        self.nursery: trio.Nursery | None = None

    @property
    def muxer_protocol(self) -> str:
        return self.muxer.protocol_id

    @property
    def is_closed(self) -> bool:
        return self.closed.is_set() or self.muxer.is_closed

    @property
    def num_streams(self) -> int:
        return self.muxer.num_streams

    async def new_stream(self, protocols: Sequence[str] | str, *, lazy: bool = False) -> NetStream:
        """Open a stream and agree on one of ``protocols`` (tried in order).

        ``lazy`` skips the round trip when there is a single protocol the peer is known to
        speak: the answer is checked on the first read.
        """
        if isinstance(protocols, str):
            protocols = (protocols,)
        muxed = await self.muxer.open_stream()
        try:
            with trio.fail_after(self.negotiate_timeout):
                protocol, stream = await negotiate_initiator(
                    muxed, protocols, lazy=lazy, tracer=self.tracer, peer=self.remote_peer
                )
        except BaseException as exc:
            attach_context(exc, peer=self.remote_peer)
            with trio.CancelScope(shield=True):
                await muxed.reset()
            raise
        return NetStream(stream, muxed, protocol, self)

    async def aclose(self, reason: str = "local close") -> None:
        """Close the connection (GoAway where the muxer has one)."""
        if self.close_reason is None:
            self.close_reason = reason
        await self.muxer.aclose()

    def __repr__(self) -> str:
        kind = "limited " if self.limited else ""
        return (
            f"<Connection {self.id} {kind}{self.direction} {self.transport} "
            f"{self.remote_peer.short()} via {self.remote_addr}>"
        )
