"""The client side of the hop protocol: RESERVE a slot, CONNECT through a relay.

Both are short exchanges over a fresh hop stream on a (direct) connection to the relay,
each one straight-line ``async def`` under a deadline, traced as ``relay.reserve`` /
``relay.connect`` spans (``libp2p.role`` initiator) with the messages as events::

    rsvp = await reserve(conn, local_peer=node.peer_id)     # Reservation, or an error
    stream, limit = await open_circuit(conn, target)        # the relayed byte stream

Failures: :class:`~.errors.RelayRefusedError` (the relay answered a status other than
OK; ``.status`` says which), :class:`~.errors.RelayProtocolError` (it answered nonsense:
not a STATUS, no reservation, an expiration in the past, a voucher that does not verify
or names someone else), or a stream/connection error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import Span, Tracer

from ...errors import FlarelabError, RemoteProtocolError, attach_context
from ...multiaddr import Multiaddr
from ...tracing import spans
from ...wire import StreamReader, with_leftover
from .errors import RelayProtocolError, RelayRefusedError
from .framing import read_hop, write_hop
from .messages import (
    HOP_PROTOCOL,
    MAX_MESSAGE_SIZE,
    HopConnect,
    HopReserve,
    HopStatus,
    Limit,
    PeerInfo,
    Status,
    Voucher,
)

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...node.connection import Connection, NetStream

__all__ = ["Reservation", "open_circuit", "reserve"]


@dataclass(frozen=True)
class Reservation:
    """A slot a relay granted us."""

    relay: PeerId
    #: when it ends, in UTC Unix seconds (as the relay wrote it)
    expire: int
    #: the relay's public addresses (each ending in /p2p/<relay>), as it sent them
    relay_addrs: tuple[Multiaddr, ...]
    #: the signed voucher, verified (None if the relay sent none)
    voucher: Voucher | None
    #: limits of each relayed connection (None: the relay announced none)
    limit: Limit | None

    def circuit_addrs(self, fallback: tuple[Multiaddr, ...] = ()) -> list[Multiaddr]:
        """Our ``…/p2p/<relay>/p2p-circuit`` addresses through this relay.

        Built from the relay's addresses, or from ``fallback`` (where we reached the
        relay) when it sent none that name it.
        """
        base = [a for a in self.relay_addrs if a.peer_id == self.relay and not a.is_relayed]
        if not base:
            base = [a.with_peer_id(self.relay) for a in fallback if not a.is_relayed]
        return list(dict.fromkeys(a.encapsulate("/p2p-circuit") for a in base))


def _attributes(conn: Connection) -> dict[str, spans.AttributeValue]:
    return {
        spans.LIBP2P_REMOTE_PEER_ID: str(conn.remote_peer),
        spans.LIBP2P_RELAY_PEER_ID: str(conn.remote_peer),
        spans.LIBP2P_ROLE: spans.ROLE_INITIATOR,
        spans.LIBP2P_PROTOCOL: HOP_PROTOCOL,
        spans.LIBP2P_CONNECTION_ID: conn.id,
    }


async def _request(
    conn: Connection, request: HopReserve | HopConnect, span: Span, *, lazy: bool
) -> tuple[HopStatus, NetStream, StreamReader]:
    """Open a hop stream, send ``request``, read the STATUS answer."""
    stream = await conn.new_stream(HOP_PROTOCOL, lazy=lazy)
    try:
        reader = StreamReader(stream, chunk=MAX_MESSAGE_SIZE)
        await write_hop(stream, request, span=span)
        answer = await read_hop(reader, peer=conn.remote_peer, span=span)
        if not isinstance(answer, HopStatus):
            raise RelayProtocolError(
                "the relay answered with a request, not a STATUS",
                status=Status.UNEXPECTED_MESSAGE,
            )
        span.set_attribute(spans.LIBP2P_RELAY_STATUS, answer.status.name)
        return answer, stream, reader
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await stream.reset()
        raise


def _fail(span: Span, exc: BaseException, conn: Connection) -> None:
    attach_context(exc, peer=conn.remote_peer, protocol=HOP_PROTOCOL)
    span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_FAILED)
    span.set_attribute(spans.LIBP2P_REASON, str(exc) or type(exc).__name__)
    if isinstance(exc, RelayRefusedError):
        return  # an answer, not a failure of the protocol: the span stays "ok"
    spans.mark_error(span, exc)


async def reserve(
    conn: Connection,
    *,
    local_peer: PeerId,
    reply_timeout: float = 10.0,
    tracer: Tracer = spans.NO_TRACER,
    unix_time: Callable[[], float] = time.time,
    lazy: bool = False,
) -> Reservation:
    """Reserve a slot on the relay at the other end of ``conn``."""
    relay = conn.remote_peer
    with tracer.start_as_current_span(
        spans.RELAY_RESERVE, attributes=_attributes(conn),
        record_exception=False, set_status_on_exception=False,
    ) as span:
        try:
            with trio.fail_after(reply_timeout):
                answer, stream, _ = await _request(conn, HopReserve(), span, lazy=lazy)
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await stream.aclose()
            rsvp = _reservation(answer, relay, local_peer, unix_time())
        except trio.TooSlowError:
            err = RemoteProtocolError(
                f"the relay did not answer RESERVE within {reply_timeout} s", peer=relay,
                protocol=HOP_PROTOCOL,
            )
            _fail(span, err, conn)
            raise err from None
        except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            _fail(span, exc, conn)
            raise
        span.set_attribute(spans.LIBP2P_RELAY_EXPIRE, rsvp.expire)
        span.set_attribute(spans.LIBP2P_RELAY_ADDRS, [str(a) for a in rsvp.relay_addrs])
        _limit_attributes(span, rsvp.limit)
        span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
        return rsvp


def _reservation(answer: HopStatus, relay: PeerId, local_peer: PeerId, now: float) -> Reservation:
    """Check an answer to RESERVE and turn it into a :class:`Reservation`."""
    if answer.status is not Status.OK:
        raise RelayRefusedError("the relay refused the reservation", status=answer.status)
    info = answer.reservation
    if info is None:
        raise RelayProtocolError("the relay accepted but sent no reservation")
    if info.expire <= now:
        raise RelayProtocolError(f"the reservation expired already (expire={info.expire})")
    voucher = None
    if info.voucher is not None:
        voucher = Voucher.open(info.voucher)
        if voucher.relay != relay:
            raise RelayProtocolError(f"the voucher names another relay, {voucher.relay}")
        if voucher.peer != local_peer:
            raise RelayProtocolError(f"the voucher is for another peer, {voucher.peer}")
    return Reservation(relay, info.expire, info.addrs, voucher, answer.limit)


def _limit_attributes(span: Span, limit: Limit | None) -> None:
    limit = limit or Limit()
    span.set_attribute(spans.LIBP2P_RELAY_LIMIT_DURATION, limit.duration)
    span.set_attribute(spans.LIBP2P_RELAY_LIMIT_DATA, limit.data)


async def open_circuit(
    conn: Connection,
    target: PeerId,
    *,
    reply_timeout: float = 10.0,
    tracer: Tracer = spans.NO_TRACER,
    lazy: bool = False,
) -> tuple[trio.abc.HalfCloseableStream, Limit | None]:
    """CONNECT to ``target`` through the relay at the other end of ``conn``.

    Returns the relayed stream (the hop stream, now carrying ``target``'s bytes) and the
    limits the relay announced.
    """
    attrs = _attributes(conn)
    attrs[spans.LIBP2P_RELAY_DST] = str(target)
    with tracer.start_as_current_span(
        spans.RELAY_CONNECT, attributes=attrs,
        record_exception=False, set_status_on_exception=False,
    ) as span:
        try:
            with trio.fail_after(reply_timeout):
                answer, stream, reader = await _request(
                    conn, HopConnect(PeerInfo(target)), span, lazy=lazy
                )
            if answer.status is not Status.OK:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await stream.aclose()
                raise RelayRefusedError(
                    f"the relay could not connect us to {target}", status=answer.status
                )
        except trio.TooSlowError:
            err = RemoteProtocolError(
                f"the relay did not answer CONNECT within {reply_timeout} s",
                peer=conn.remote_peer, protocol=HOP_PROTOCOL,
            )
            _fail(span, err, conn)
            raise err from None
        except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            _fail(span, exc, conn)
            raise
        _limit_attributes(span, answer.limit)
        span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
    relayed = with_leftover(stream, reader.take_buffer())
    return relayed, answer.limit  # type: ignore[return-value]
