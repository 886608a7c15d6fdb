"""The target's side of the stop protocol: accept (or refuse) a relayed connection.

The relay opens ``/libp2p/circuit/relay/0.2.0/stop`` and sends STOP CONNECT naming the
source and the limits; we answer STATUS OK if we listen through that relay, NO_RESERVATION
if we do not (as rust-libp2p), MALFORMED_MESSAGE or UNEXPECTED_MESSAGE for nonsense. After
OK the stream carries the relayed connection. Traced as a ``relay.connect`` span with
``libp2p.role`` responder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import Span, Tracer

from ...errors import RemoteProtocolError
from ...tracing import spans
from ...wire import StreamReader
from .errors import RelayProtocolError
from .framing import read_stop, write_stop
from .messages import MAX_MESSAGE_SIZE, STOP_PROTOCOL, Status, StopConnect, StopStatus

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...node.connection import NetStream

__all__ = ["accept_stop"]

log = logging.getLogger("flarelab.relay")


async def accept_stop(
    stream: NetStream,
    *,
    accepting: Callable[[PeerId], bool],
    reply_timeout: float = 10.0,
    tracer: Tracer = spans.NO_TRACER,
) -> tuple[StopConnect, StreamReader] | None:
    """Run the stop exchange on ``stream`` from a relay.

    ``accepting(relay)`` says whether we take relayed connections from that relay. Returns
    the accepted CONNECT and the reader (which may hold bytes that followed it), or None
    after refusing. Raises :class:`RemoteProtocolError` if the relay sends nothing in time.
    """
    relay = stream.remote_peer
    with tracer.start_as_current_span(
        spans.RELAY_CONNECT,
        attributes={
            spans.LIBP2P_REMOTE_PEER_ID: str(relay),
            spans.LIBP2P_RELAY_PEER_ID: str(relay),
            spans.LIBP2P_ROLE: spans.ROLE_RESPONDER,
            spans.LIBP2P_PROTOCOL: STOP_PROTOCOL,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        reader = StreamReader(stream, chunk=MAX_MESSAGE_SIZE)
        try:
            with trio.fail_after(reply_timeout):
                msg = await read_stop(reader, peer=relay, span=span)
        except trio.TooSlowError:
            err = RemoteProtocolError(
                f"no stop message within {reply_timeout} s", peer=relay, protocol=STOP_PROTOCOL
            )
            spans.mark_error(span, err)
            raise err from None
        except RelayProtocolError as err:
            spans.mark_error(span, err)
            await _answer(stream, err.status, span, reply_timeout, close=True)
            return None
        if not isinstance(msg, StopConnect):
            unexpected = RelayProtocolError(
                "a STATUS is not a request", status=Status.UNEXPECTED_MESSAGE,
                peer=relay, protocol=STOP_PROTOCOL,
            )
            spans.mark_error(span, unexpected)
            await _answer(stream, unexpected.status, span, reply_timeout, close=True)
            return None
        src = msg.peer.peer_id
        span.set_attribute(spans.LIBP2P_RELAY_SRC, str(src))
        if msg.limit is not None:
            span.set_attribute(spans.LIBP2P_RELAY_LIMIT_DURATION, msg.limit.duration)
            span.set_attribute(spans.LIBP2P_RELAY_LIMIT_DATA, msg.limit.data)
        if not accepting(relay):
            span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_FAILED)
            span.set_attribute(spans.LIBP2P_REASON, "we hold no reservation with this relay")
            log.info("refused a relayed connection from %s via %s: no reservation", src, relay)
            await _answer(stream, Status.NO_RESERVATION, span, reply_timeout, close=True)
            return None
        if not await _answer(stream, Status.OK, span, reply_timeout, close=False):
            return None
        span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
        return msg, reader


async def _answer(
    stream: NetStream, status: Status, span: Span, reply_timeout: float, *, close: bool
) -> bool:
    """Send STATUS ``status`` (and close the stream when refusing); False if that failed."""
    span.set_attribute(spans.LIBP2P_RELAY_STATUS, status.name)
    with trio.move_on_after(reply_timeout):
        try:
            await write_stop(stream, StopStatus(status), span=span)
            if close:
                await stream.aclose()
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            spans.mark_error(span, exc, side="remote")
            return False
    return False
