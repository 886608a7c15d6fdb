"""The DCUtR exchange on one ``/libp2p/dcutr`` stream, as short straight-line functions.

B (the peer that received the relayed connection) opens the stream and drives it::

    sent = await exchange_connect(stream, reader, our_addrs, span=span)  # CONNECT out and in
    await send_sync(stream, span=span)                                   # then SYNC
    # B waits RTT/2 (sent.rtt / 2) after SYNC left, then dials

A serves it, one round per call (B normally opens a fresh stream for each attempt, as go,
rust and js do; the spec lets B reuse the stream, so A may call again on the same one)::

    answered = await answer_round(stream, reader, our_addrs, span=span)  # CONNECT in/out, SYNC in
    # A dials at once

Every message becomes a ``message.sent`` / ``message.received`` event on ``span`` with its
type, its size on the wire and, for CONNECT, the addresses. Timeouts are the caller's
(``trio.fail_after``). A peer that sends a malformed, oversized or unexpected message, or
ends the stream in the middle of the exchange, gets a RemoteProtocolError naming the
protocol and the peer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import INVALID_SPAN, Span

from ...errors import RemoteProtocolError
from ...tracing import spans
from ...wire import IncompleteError, StreamReader
from .messages import DCUTR_PROTOCOL, Connect, Message, Sync, read_message, write_message

if TYPE_CHECKING:
    from ...multiaddr import Multiaddr

__all__ = [
    "ADDRS_ATTRIBUTE",
    "INVALID_ADDRS_ATTRIBUTE",
    "AnsweredRound",
    "ConnectExchange",
    "answer_round",
    "exchange_connect",
    "receive",
    "send",
    "send_sync",
]

#: message-event attribute: the addresses a CONNECT carried
ADDRS_ATTRIBUTE = "dcutr.addrs"
#: message-event attribute: how many addresses of a CONNECT were not valid multiaddrs
INVALID_ADDRS_ATTRIBUTE = "dcutr.invalid_addrs"

Clock = Callable[[], float]


def _attributes(message: Message) -> dict[str, spans.AttributeValue] | None:
    if not isinstance(message, Connect):
        return None
    attrs: dict[str, spans.AttributeValue] = {ADDRS_ATTRIBUTE: [str(a) for a in message.addrs]}
    if message.invalid:
        attrs[INVALID_ADDRS_ATTRIBUTE] = message.invalid
    return attrs


async def send(stream: trio.abc.SendStream, message: Message, *, span: Span = INVALID_SPAN
               ) -> int:
    """Send one message and record it on ``span``; return its size on the wire."""
    size = await write_message(stream, message)
    spans.message_sent(span, message.name, size, _attributes(message))
    return size


async def receive(
    reader: StreamReader, expected: type[Connect] | type[Sync], *, span: Span = INVALID_SPAN,
    peer: object = None,
) -> Message:
    """Read one message, record it on ``span``, and check it is of the ``expected`` type."""
    want = "CONNECT" if expected is Connect else "SYNC"
    try:
        message, size = await read_message(reader)
    except IncompleteError as exc:
        exc.message = f"the stream ended while we waited for {want} ({exc.message})"
        exc.peer = exc.peer if exc.peer is not None else peer
        raise
    except RemoteProtocolError as exc:
        exc.peer = exc.peer if exc.peer is not None else peer
        raise
    spans.message_received(span, message.name, size, _attributes(message))
    if not isinstance(message, expected):
        raise RemoteProtocolError(
            f"expected {want}, got {message.name}", peer=peer, protocol=DCUTR_PROTOCOL
        )
    return message


@dataclass(frozen=True, slots=True)
class ConnectExchange:
    """B's CONNECT and A's answer: the addresses A offered and when each message moved."""

    connect: Connect
    sent_at: float
    received_at: float

    @property
    def rtt(self) -> float:
        return max(0.0, self.received_at - self.sent_at)


async def exchange_connect(
    stream: trio.abc.SendStream,
    reader: StreamReader,
    our_addrs: Sequence[Multiaddr],
    *,
    span: Span = INVALID_SPAN,
    peer: object = None,
    clock: Clock = trio.current_time,
) -> ConnectExchange:
    """B: send CONNECT(``our_addrs``), then read A's CONNECT; time both."""
    await send(stream, Connect(tuple(our_addrs)), span=span)
    sent_at = clock()  # as rust: the timer starts once CONNECT is handed to the stream
    connect = await receive(reader, Connect, span=span, peer=peer)
    assert isinstance(connect, Connect)
    return ConnectExchange(connect, sent_at, clock())


async def send_sync(stream: trio.abc.SendStream, *, span: Span = INVALID_SPAN) -> int:
    """B: send SYNC; return its size."""
    return await send(stream, Sync(), span=span)


@dataclass(frozen=True, slots=True)
class AnsweredRound:
    """A's view of one round: B's CONNECT, and when our CONNECT left and SYNC arrived."""

    connect: Connect
    connect_sent_at: float
    sync_received_at: float

    @property
    def rtt(self) -> float:
        """The relayed round trip as A sees it (our CONNECT out to B's SYNC in)."""
        return max(0.0, self.sync_received_at - self.connect_sent_at)


async def answer_round(
    stream: trio.abc.SendStream,
    reader: StreamReader,
    our_addrs: Sequence[Multiaddr] | Callable[[Connect], Sequence[Multiaddr]],
    *,
    span: Span = INVALID_SPAN,
    peer: object = None,
    clock: Clock = trio.current_time,
) -> AnsweredRound:
    """A: read B's CONNECT, answer CONNECT(``our_addrs``), read SYNC.

    ``our_addrs`` may be a function of B's CONNECT (it is called once, before we answer).
    """
    connect = await receive(reader, Connect, span=span, peer=peer)
    assert isinstance(connect, Connect)
    addrs = our_addrs(connect) if callable(our_addrs) else our_addrs
    await send(stream, Connect(tuple(addrs)), span=span)
    sent_at = clock()
    await receive(reader, Sync, span=span, peer=peer)
    return AnsweredRound(connect, sent_at, clock())
