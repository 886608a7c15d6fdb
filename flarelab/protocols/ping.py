"""Ping 1.0.0: 32 random bytes out, the same 32 bytes back; the round trip in milliseconds.

The dialer may send many pings on one stream; the listener echoes until EOF. The listener
closes a stream that stays idle longer than :data:`PING_IDLE_TIMEOUT` seconds.
"""

from __future__ import annotations

import os

import trio
from opentelemetry.trace import Tracer

from ..errors import RemoteProtocolError
from ..tracing import spans
from ..wire import IncompleteError, StreamReader

__all__ = ["PING_IDLE_TIMEOUT", "PING_PROTOCOL", "PING_SIZE", "handle_ping", "ping_stream"]

PING_PROTOCOL = "/ipfs/ping/1.0.0"
PING_SIZE = 32
PING_IDLE_TIMEOUT = 60.0


async def ping_stream(
    stream: trio.abc.Stream,
    count: int = 1,
    *,
    interval: float = 0.0,
    ping_timeout: float = 10.0,
    tracer: Tracer = spans.NO_TRACER,
    peer: object = None,
) -> list[float]:
    """Send ``count`` pings over ``stream``; return each round-trip time in milliseconds."""
    reader = StreamReader(stream, chunk=PING_SIZE)
    rtts: list[float] = []
    attrs: dict[str, spans.AttributeValue] = {spans.LIBP2P_PROTOCOL: PING_PROTOCOL}
    if peer is not None:
        attrs[spans.LIBP2P_REMOTE_PEER_ID] = str(peer)
    with tracer.start_as_current_span(spans.PING, attributes=attrs) as span:
        try:
            for i in range(count):
                if i and interval:
                    await trio.sleep(interval)
                payload = os.urandom(PING_SIZE)
                with trio.fail_after(ping_timeout):
                    start = trio.current_time()
                    await stream.send_all(payload)
                    spans.message_sent(span, "ping", PING_SIZE, {"ping.seq": i})
                    echo = await reader.read_exactly(PING_SIZE)
                    rtt = (trio.current_time() - start) * 1000.0
                if echo != payload:
                    raise RemoteProtocolError(
                        "ping answer does not match what we sent", peer=peer, protocol=PING_PROTOCOL
                    )
                spans.message_received(
                    span, "pong", PING_SIZE, {"ping.seq": i, spans.LIBP2P_RTT_MS: rtt}
                )
                rtts.append(rtt)
            span.set_attribute(spans.LIBP2P_RTT_MS, min(rtts) if rtts else 0.0)
            span.set_attribute("ping.count", len(rtts))
        except BaseException as exc:
            if isinstance(exc, RemoteProtocolError):
                exc.protocol = exc.protocol or PING_PROTOCOL
                exc.peer = exc.peer if exc.peer is not None else peer
            if isinstance(exc, Exception):
                spans.mark_error(span, exc)
            raise
    return rtts


async def handle_ping(stream: trio.abc.Stream, *, idle_timeout: float = PING_IDLE_TIMEOUT) -> int:
    """Echo 32-byte pings until EOF or idleness; return how many were answered.

    Idleness between pings ends the stream quietly; a peer that stops in the middle of a
    ping is a protocol error.
    """
    reader = StreamReader(stream, chunk=PING_SIZE * 4)
    answered = 0
    while True:
        with trio.move_on_after(idle_timeout) as scope:
            if await reader.at_eof():
                return answered
            try:
                payload = await reader.read_exactly(PING_SIZE)
            except IncompleteError as exc:
                exc.protocol = PING_PROTOCOL
                raise
        if scope.cancelled_caught:
            if reader.buffered:
                raise RemoteProtocolError(
                    f"ping stalled after {reader.buffered} of {PING_SIZE} bytes",
                    protocol=PING_PROTOCOL,
                )
            return answered
        await stream.send_all(payload)
        answered += 1
