"""AutoNAT v2: is *this address* reachable? A nonce-verified dial-back, one address at a time.

Client (:func:`probe_v2`): open ``/libp2p/autonat/2/dial-request``, send
``DialRequest{addrs, nonce}``; pay dial data if the server asks (at most
``max_dial_data`` bytes, in chunks of at most 4096); read ``DialResponse``. The server
meanwhile dials the one address it chose on a *new* connection and sends ``DialBack{nonce}``
on ``/libp2p/autonat/2/dial-back``, which :class:`DialBackReceiver` answers. The client
believes a successful dial only if the nonce came back -- it trusts the nonce, not the
peer id -- over a fresh inbound connection of the same kind as the tested address.

Server (:class:`V2Server`): rate limits first; then the first address it may dial
(:func:`.dial_policy.select_v2`); if its IP is not the requester's observed IP, 30-100 kB
of dial data first (amplification protection) and a random short wait; then a fresh dial
from an ephemeral port (:mod:`.dialback`), the nonce, and the answer.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from ...errors import FlarelabError, LocalProtocolError, RemoteProtocolError, attach_context
from ...tracing import spans
from ...wire import StreamReader, length_prefixed
from . import attributes as attr
from .dial_policy import select_v2
from .dialback import close_dial_back, dial_fresh
from .messages import (
    DIAL_DATA_CHUNK,
    V2_DIAL_BACK_PROTOCOL,
    V2_DIAL_REQUEST_PROTOCOL,
    V2_MAX_DIAL_BACK_MESSAGE,
    V2_MAX_MESSAGE,
    V2DialDataRequest,
    V2DialDataResponse,
    V2DialRequest,
    V2DialResponse,
    V2DialStatus,
    V2ResponseStatus,
    decode_v2_dial_back,
    decode_v2_dial_back_response,
    decode_v2_message,
    encode_v2_dial_back,
    encode_v2_dial_back_response,
    encode_v2_dial_data_request,
    encode_v2_dial_data_response,
    encode_v2_request,
    encode_v2_response,
)
from .ratelimit import RateLimits
from .reachability import Observation
from .server import AutoNATServer

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node.connection import Connection, NetStream
    from ...node.node import Node
    from .config import AutoNATConfig

__all__ = [
    "DialBackReceiver",
    "PendingDialBack",
    "V2ProbeResult",
    "V2Server",
    "consistent_with",
    "exchange_v2",
    "probe_v2",
]

log = logging.getLogger("flarelab.autonat")

#: a dial-data message smaller than this while more is owed is an abuse (as go)
MIN_DIAL_DATA_CHUNK = 100
#: nonces a client waits for at once
MAX_PENDING = 64


def consistent_with(local_addr: Multiaddr, tested: Multiaddr) -> bool:
    """Whether a dial-back that arrived on ``local_addr`` can be one to ``tested``: the same
    IP version and transport stack (the IP and port differ behind a NAT)."""
    ours = local_addr.without_peer_id().protocol_names()
    theirs = tested.without_peer_id().protocol_names()
    return bool(ours) and ours == theirs


# ====================================================================== client


@dataclass(eq=False)
class PendingDialBack:
    """A nonce we sent and the dial-back we wait for."""

    nonce: int
    #: when the request left: a fresh dial-back connection opens after it
    since: float
    #: the connection the request itself went over (a dial-back on it proves nothing)
    request_connection: int | None = None
    done: trio.Event = field(default_factory=trio.Event)
    local_addr: Multiaddr | None = None
    fresh: bool = False


class DialBackReceiver:
    """The client side of /libp2p/autonat/2/dial-back: match nonces, check freshness."""

    def __init__(self, *, timeout: float = 5.0, tracer: Tracer = spans.NO_TRACER) -> None:
        self.timeout = timeout
        self.tracer = tracer
        self._pending: dict[int, PendingDialBack] = {}
        #: dial-backs with a nonce we were not waiting for
        self.unexpected = 0

    def expect(self, nonce: int, since: float) -> PendingDialBack:
        """Wait for a dial-back with ``nonce`` (call :meth:`forget` when done)."""
        if len(self._pending) >= MAX_PENDING:
            raise LocalProtocolError(f"already {MAX_PENDING} AutoNAT v2 probes in flight")
        pending = PendingDialBack(nonce, since)
        self._pending[nonce] = pending
        return pending

    def forget(self, nonce: int) -> None:
        """Stop waiting for ``nonce``."""
        self._pending.pop(nonce, None)

    async def handle(self, stream: NetStream) -> None:
        """The node's handler for /libp2p/autonat/2/dial-back."""
        conn = stream.connection
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_REMOTE_PEER_ID: str(conn.remote_peer),
            spans.LIBP2P_PROTOCOL: V2_DIAL_BACK_PROTOCOL,
            spans.LIBP2P_ROLE: spans.ROLE_RESPONDER,
            spans.LIBP2P_LOCAL_MULTIADDR: str(conn.local_addr),
            spans.LIBP2P_CONNECTION_ID: conn.id,
            attr.VERSION: 2,
        }
        with self.tracer.start_as_current_span(
            spans.AUTONAT_DIAL_BACK, attributes=attrs, record_exception=False,
            set_status_on_exception=False,
        ) as span:
            reader = StreamReader(stream, chunk=V2_MAX_DIAL_BACK_MESSAGE)
            try:
                with trio.fail_after(self.timeout):
                    data = await reader.read_length_prefixed(V2_MAX_DIAL_BACK_MESSAGE)
                nonce = decode_v2_dial_back(data)
            except RemoteProtocolError as exc:
                attach_context(exc, peer=conn.remote_peer, protocol=V2_DIAL_BACK_PROTOCOL)
                span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_PROTOCOL_ERROR)
                spans.mark_error(span, exc)
                raise
            spans.message_received(span, "DialBack", len(data) + 1)
            pending = self._pending.get(nonce)
            if pending is None or pending.done.is_set():
                self.unexpected += 1
                why = "a nonce we are not waiting for" if pending is None else "a repeated nonce"
                span.set_attribute(attr.NONCE_VERIFIED, False)
                span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_FAILED)
                span.set_attribute(spans.LIBP2P_REASON, f"dial-back with {why}")
                raise RemoteProtocolError(f"dial-back with {why}", peer=conn.remote_peer,
                                          protocol=V2_DIAL_BACK_PROTOCOL)
            fresh = (conn.direction == spans.DIRECTION_INBOUND and not conn.limited
                     and conn.id != pending.request_connection
                     and conn.opened_at >= pending.since)
            pending.local_addr = conn.local_addr
            pending.fresh = fresh
            pending.done.set()
            span.set_attribute(attr.NONCE_VERIFIED, True)
            span.set_attribute(attr.FRESH_CONNECTION, fresh)
            if fresh:
                span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
            else:
                span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_FAILED)
                span.set_attribute(spans.LIBP2P_REASON,
                                   "the dial-back came over a connection we already had")
            answer = length_prefixed(encode_v2_dial_back_response())
            await stream.send_all(answer)
            spans.message_sent(span, "DialBackResponse", len(answer))


class _DialDataRefused(Exception):
    """We will not pay the dial data the server asks for."""


async def exchange_v2(
    stream: trio.abc.Stream, *, addrs: Sequence[Multiaddr], nonce: int,
    send_dial_data: bool = True, max_dial_data: int = 100_000,
    span: Span = trace.INVALID_SPAN,
) -> tuple[V2DialResponse, int]:
    """Send a ``DialRequest`` on ``stream``, pay dial data if asked and allowed, and read
    the ``DialResponse``; return it with the dial data paid. Refusing to pay raises
    ``_DialDataRefused`` (the caller resets the stream, as the spec says)."""
    request = length_prefixed(encode_v2_request(addrs, nonce))
    await stream.send_all(request)
    spans.message_sent(span, "DialRequest", len(request), {attr.ADDRS: [str(a) for a in addrs]})
    reader = StreamReader(stream, chunk=V2_MAX_MESSAGE)
    data = await reader.read_length_prefixed(V2_MAX_MESSAGE)
    message = decode_v2_message(data)
    paid = 0
    if isinstance(message, V2DialDataRequest):
        spans.message_received(span, "DialDataRequest", len(data) + 1,
                               {attr.DIAL_DATA_BYTES: message.num_bytes})
        if message.addr_idx >= len(addrs):
            raise RemoteProtocolError(
                f"DialDataRequest for address #{message.addr_idx} of {len(addrs)}",
                protocol=V2_DIAL_REQUEST_PROTOCOL)
        if not send_dial_data:
            raise _DialDataRefused("we do not send dial data")
        if message.num_bytes > max_dial_data:
            raise _DialDataRefused(f"{message.num_bytes} bytes of dial data asked, we pay at "
                                   f"most {max_dial_data}")
        paid, sent, chunks = await _send_dial_data(stream, message.num_bytes)
        spans.message_sent(span, "DialDataResponse", sent,
                           {attr.DIAL_DATA_BYTES: paid, attr.CHUNKS: chunks})
        data = await reader.read_length_prefixed(V2_MAX_MESSAGE)
        message = decode_v2_message(data)
    if not isinstance(message, V2DialResponse):
        raise RemoteProtocolError(f"expected a DialResponse, got {type(message).__name__}",
                                  protocol=V2_DIAL_REQUEST_PROTOCOL)
    spans.message_received(span, "DialResponse", len(data) + 1,
                           {attr.STATUS: message.status_name,
                            attr.DIAL_STATUS: message.dial_status_name})
    return message, paid


async def _send_dial_data(stream: trio.abc.Stream, num_bytes: int) -> tuple[int, int, int]:
    """Send ``num_bytes`` of dial data; return (data bytes, wire bytes, messages)."""
    full = length_prefixed(encode_v2_dial_data_response(bytes(DIAL_DATA_CHUNK)))
    paid = sent = chunks = 0
    while paid < num_bytes:
        size = min(DIAL_DATA_CHUNK, num_bytes - paid)
        message = full if size == DIAL_DATA_CHUNK else length_prefixed(
            encode_v2_dial_data_response(bytes(size)))
        await stream.send_all(message)
        paid += size
        sent += len(message)
        chunks += 1
    return paid, sent, chunks


@dataclass(frozen=True)
class V2ProbeResult:
    """How one v2 probe ended."""

    server: PeerId
    #: the address the server tested (None if it tested none)
    addr: Multiaddr | None
    response: V2DialResponse | None
    #: PUBLIC/PRIVATE for ``addr``; None when the answer says nothing about an address
    observation: Observation | None
    #: the statuses' names, or why there was no answer
    status: str
    outcome: str = spans.OUTCOME_SUCCESS
    reason: str = ""
    dial_data: int = 0


def _judge(server: PeerId, addrs: Sequence[Multiaddr], response: V2DialResponse,
           pending: PendingDialBack, paid: int) -> V2ProbeResult:
    """Turn a DialResponse (and the dial-back we saw, or not) into a verdict."""
    status = f"{response.status_name}/{response.dial_status_name}"

    def result(addr: Multiaddr | None, observation: Observation | None, outcome: str,
               reason: str = "") -> V2ProbeResult:
        return V2ProbeResult(server, addr, response, observation, status, outcome, reason, paid)

    if response.status != V2ResponseStatus.OK:
        outcome = spans.OUTCOME_FAILED
        return result(None, None, outcome, f"the server answered {response.status_name}")
    if response.addr_idx >= len(addrs):
        return result(None, None, spans.OUTCOME_PROTOCOL_ERROR,
                      f"the server names address #{response.addr_idx} of {len(addrs)}")
    addr = addrs[response.addr_idx]
    if response.dial_status == V2DialStatus.E_DIAL_ERROR:
        return result(addr, Observation.PRIVATE, spans.OUTCOME_SUCCESS)
    if response.dial_status not in (V2DialStatus.OK, V2DialStatus.E_DIAL_BACK_ERROR):
        return result(None, None, spans.OUTCOME_PROTOCOL_ERROR,
                      f"dial status {response.dial_status_name} with an OK response")
    if not pending.done.is_set():
        return result(None, None, spans.OUTCOME_PROTOCOL_ERROR,
                      "the server says it dialled us but no dial-back with our nonce came")
    if not pending.fresh:
        return result(None, None, spans.OUTCOME_PROTOCOL_ERROR,
                      "the dial-back came over an existing connection: it proves nothing")
    assert pending.local_addr is not None
    if not consistent_with(pending.local_addr, addr):
        return result(None, None, spans.OUTCOME_PROTOCOL_ERROR,
                      f"the dial-back arrived on {pending.local_addr}, which cannot be {addr}")
    return result(addr, Observation.PUBLIC, spans.OUTCOME_SUCCESS)


async def probe_v2(
    node: Node, server: PeerId, addrs: Sequence[Multiaddr], receiver: DialBackReceiver, *,
    config: AutoNATConfig, tracer: Tracer = spans.NO_TRACER,
) -> V2ProbeResult:
    """Ask ``server`` to test the first of ``addrs`` it can; never raises for what the
    server does. ``receiver`` must be serving /libp2p/autonat/2/dial-back on ``node``."""
    attrs: dict[str, spans.AttributeValue] = {
        spans.LIBP2P_REMOTE_PEER_ID: str(server),
        spans.LIBP2P_PROTOCOL: V2_DIAL_REQUEST_PROTOCOL,
        spans.LIBP2P_ROLE: spans.ROLE_INITIATOR,
        attr.VERSION: 2,
        attr.ADDRS: [str(a) for a in addrs],
    }
    nonce = secrets.randbits(64)
    timeout = config.v2_request_timeout
    with tracer.start_as_current_span(
        spans.AUTONAT_PROBE, attributes=attrs, record_exception=False,
        set_status_on_exception=False,
    ) as span:
        pending = receiver.expect(nonce, trio.current_time())
        try:
            with trio.fail_after(timeout):
                stream = await node.new_stream(server, V2_DIAL_REQUEST_PROTOCOL)
                pending.request_connection = stream.connection.id
                try:
                    response, paid = await exchange_v2(
                        stream, addrs=addrs, nonce=nonce, send_dial_data=config.send_dial_data,
                        max_dial_data=config.max_dial_data, span=span)
                except _DialDataRefused:
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        await stream.reset()
                    raise
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        await stream.aclose()
                if response.status == V2ResponseStatus.OK and response.dial_status in (
                        V2DialStatus.OK, V2DialStatus.E_DIAL_BACK_ERROR):
                    with trio.move_on_after(config.dial_back_wait):
                        await pending.done.wait()
            result = _judge(server, addrs, response, pending, paid)
        except trio.TooSlowError:
            result = V2ProbeResult(server, None, None, None, "timeout", spans.OUTCOME_TIMEOUT,
                                   f"no answer within {timeout} s")
        except _DialDataRefused as exc:
            result = V2ProbeResult(server, None, None, None, "dial data refused",
                                   spans.OUTCOME_FAILED, str(exc))
        except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError,
                OSError) as exc:
            attach_context(exc, peer=server, protocol=V2_DIAL_REQUEST_PROTOCOL)
            spans.mark_error(span, exc)
            outcome = (spans.OUTCOME_PROTOCOL_ERROR if isinstance(exc, RemoteProtocolError)
                       else spans.OUTCOME_FAILED)
            result = V2ProbeResult(server, None, None, None, "error", outcome, str(exc))
        finally:
            receiver.forget(nonce)
        span.set_attribute(attr.STATUS, result.status)
        span.set_attribute(attr.NONCE_VERIFIED, pending.done.is_set())
        span.set_attribute(spans.LIBP2P_OUTCOME, result.outcome)
        span.set_attribute(attr.REACHABILITY,
                           result.observation.value if result.observation else "none")
        if result.addr is not None:
            span.set_attribute(attr.DIALED_ADDR, str(result.addr))
        if result.reason:
            span.set_attribute(spans.LIBP2P_REASON, result.reason[:1024])
        if result.dial_data:
            span.set_attribute(attr.DIAL_DATA_BYTES, result.dial_data)
        return result


# ====================================================================== server


class V2Server(AutoNATServer):
    """Answers /libp2p/autonat/2/dial-request for one node."""

    def limits(self, config: AutoNATConfig) -> RateLimits:
        """The v2 server's rate limits."""
        return config.v2_limits

    async def serve(
        self, stream: trio.abc.Stream, *, requester: PeerId, observed: Multiaddr | None
    ) -> V2DialResponse:
        """Serve one request from ``requester`` seen at ``observed``; return our answer."""
        span = trace.get_current_span()
        span.set_attribute(attr.VERSION, 2)
        refused = self.limiter.acquire(requester, trio.current_time())
        if refused is not None:
            self.metrics.record_refused("rate_limited")
            return await self._respond(stream, span, V2ResponseStatus.E_REQUEST_REJECTED,
                                       reason=f"request rejected: {refused}")
        try:
            return await self._serve(stream, span, requester, observed)
        finally:
            self.limiter.release(requester)

    async def _serve(self, stream: trio.abc.Stream, span: Span, requester: PeerId,
                     observed: Multiaddr | None) -> V2DialResponse:
        reader = StreamReader(stream, chunk=V2_MAX_MESSAGE)
        timeout = self.config.server_stream_timeout
        with trio.fail_after(timeout):  # the swarm reports a handler timeout as the peer's
            data = await reader.read_length_prefixed(V2_MAX_MESSAGE)
            request = decode_v2_message(data)
            if not isinstance(request, V2DialRequest):
                raise RemoteProtocolError(
                    f"expected a DialRequest, got {type(request).__name__}",
                    peer=requester, protocol=V2_DIAL_REQUEST_PROTOCOL)
            spans.message_received(span, "DialRequest", len(data) + 1,
                                   {attr.ADDRS: [str(a) for a in request.addrs if a]})
            choice = select_v2(request.addrs, observed=observed, requester=requester,
                               policy=self.node.config.address_policy,
                               can_dial=self._can_dial)
            if choice.addr is None or choice.index is None:
                self.metrics.record_refused("no_valid_address")
                return await self._respond(
                    stream, span, V2ResponseStatus.E_DIAL_REFUSED,
                    reason="no address to dial: " + (choice.reason() or "none named"))
            span.set_attribute(attr.DIALED_ADDR, str(choice.addr))
            if choice.needs_dial_data:
                if not self.limiter.acquire_dial_data(trio.current_time()):
                    self.metrics.record_refused("dial_data_rate_limited")
                    return await self._respond(
                        stream, span, V2ResponseStatus.E_REQUEST_REJECTED,
                        reason="too many requests that need dial data", addr=choice.addr,
                        dial_data=True)
                await self._collect_dial_data(stream, reader, span, choice.index, requester)
        if choice.needs_dial_data:
            await trio.sleep(self.config.rng.uniform(0, self.config.amplification_dial_wait))
        dial_status = await self._dial_back(requester, choice.addr, request.nonce)
        return await self._respond(stream, span, V2ResponseStatus.OK, choice.index,
                                   dial_status, addr=choice.addr,
                                   dial_data=choice.needs_dial_data)

    def _can_dial(self, addr: Multiaddr) -> bool:
        """A transport dials it, and we have an address of its IP version (spec: an
        IPv4-only server refuses IPv6 addresses)."""
        if not self.node.dialer.dialable([addr]):
            return False
        ip = addr.ip_address
        assert ip is not None
        return any(a.ip_address is not None and a.ip_address.version == ip.version
                   for a in self.node.listen_addrs())

    async def _collect_dial_data(self, stream: trio.abc.Stream, reader: StreamReader,
                                 span: Span, index: int, requester: PeerId) -> None:
        """Ask for dial data and read it (amplification protection)."""
        cfg = self.config
        wanted = cfg.rng.randint(cfg.dial_data_min, cfg.dial_data_max)
        ask = length_prefixed(encode_v2_dial_data_request(index, wanted))
        await stream.send_all(ask)
        spans.message_sent(span, "DialDataRequest", len(ask), {attr.DIAL_DATA_BYTES: wanted})
        got = wire = chunks = 0
        while got < wanted:
            data = await reader.read_length_prefixed(V2_MAX_MESSAGE)
            message = decode_v2_message(data)
            if not isinstance(message, V2DialDataResponse):
                raise RemoteProtocolError(
                    f"expected DialDataResponse, got {type(message).__name__}",
                    peer=requester, protocol=V2_DIAL_REQUEST_PROTOCOL)
            if message.size > DIAL_DATA_CHUNK:
                raise RemoteProtocolError(
                    f"dial data chunk of {message.size} bytes (at most {DIAL_DATA_CHUNK})",
                    peer=requester, protocol=V2_DIAL_REQUEST_PROTOCOL)
            got += message.size
            wire += len(data) + 1
            chunks += 1
            if message.size < MIN_DIAL_DATA_CHUNK and got < wanted:
                raise RemoteProtocolError(
                    f"dial data chunk of {message.size} bytes: too small to be worth reading",
                    peer=requester, protocol=V2_DIAL_REQUEST_PROTOCOL)
        spans.message_received(span, "DialDataResponse", wire,
                               {attr.DIAL_DATA_BYTES: got, attr.CHUNKS: chunks})

    async def _dial_back(self, peer: PeerId, addr: Multiaddr, nonce: int) -> V2DialStatus:
        """Dial ``addr`` on a fresh connection and deliver ``nonce``."""
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
            spans.LIBP2P_PROTOCOL: V2_DIAL_BACK_PROTOCOL,
            spans.LIBP2P_ROLE: spans.ROLE_INITIATOR,
            attr.VERSION: 2,
            attr.DIALED_ADDR: str(addr),
        }
        with self.node.tracer.start_as_current_span(
            spans.AUTONAT_DIAL_BACK, attributes=attrs, record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                with trio.fail_after(self.config.v2_dial_timeout):
                    conn = await dial_fresh(self.node, peer, addr)
            except (trio.TooSlowError, FlarelabError, OSError, trio.BrokenResourceError) as exc:
                timed_out = isinstance(exc, trio.TooSlowError)
                span.set_attribute(spans.LIBP2P_OUTCOME,
                                   spans.OUTCOME_TIMEOUT if timed_out else spans.OUTCOME_FAILED)
                span.set_attribute(spans.LIBP2P_REASON,
                                   "no answer in time" if timed_out else str(exc)[:1024])
                span.set_attribute(attr.DIAL_STATUS, V2DialStatus.E_DIAL_ERROR.name)
                return V2DialStatus.E_DIAL_ERROR
            span.set_attribute(spans.LIBP2P_CONNECTION_ID, conn.id)
            try:
                status = await self._send_nonce(conn, nonce, span)
            finally:
                await close_dial_back(conn)
            span.set_attribute(attr.DIAL_STATUS, status.name)
            return status

    async def _send_nonce(self, conn: Connection, nonce: int, span: Span) -> V2DialStatus:
        try:
            with trio.fail_after(self.config.dial_back_timeout):
                stream = await conn.new_stream(V2_DIAL_BACK_PROTOCOL)
                try:
                    message = length_prefixed(encode_v2_dial_back(nonce))
                    await stream.send_all(message)
                    spans.message_sent(span, "DialBack", len(message))
                    await stream.send_eof()
                    data = await StreamReader(stream, chunk=64).read_length_prefixed(
                        V2_MAX_DIAL_BACK_MESSAGE)
                    decode_v2_dial_back_response(data)
                    spans.message_received(span, "DialBackResponse", len(data) + 1)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        await stream.aclose()
        except (trio.TooSlowError, FlarelabError, trio.BrokenResourceError,
                trio.ClosedResourceError) as exc:
            span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_FAILED)
            span.set_attribute(spans.LIBP2P_REASON, f"dial-back stream failed: {exc}"[:1024])
            return V2DialStatus.E_DIAL_BACK_ERROR
        span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
        return V2DialStatus.OK

    async def _respond(self, stream: trio.abc.Stream, span: Span, status: V2ResponseStatus,
                       addr_idx: int = 0, dial_status: V2DialStatus = V2DialStatus.UNUSED, *,
                       reason: str = "", addr: Multiaddr | None = None,
                       dial_data: bool = False) -> V2DialResponse:
        message = length_prefixed(encode_v2_response(status, addr_idx, dial_status))
        await stream.send_all(message)
        spans.message_sent(span, "DialResponse", len(message),
                           {attr.STATUS: status.name, attr.DIAL_STATUS: dial_status.name})
        span.set_attribute(attr.STATUS, status.name)
        span.set_attribute(attr.DIAL_STATUS, dial_status.name)
        if reason:
            span.set_attribute(spans.LIBP2P_REASON, reason[:1024])
        self.metrics.record_v2_served(response_status=status.name, dial_status=dial_status.name,
                                      dial_data_required=dial_data, addr=addr)
        return V2DialResponse(status, addr_idx, dial_status)
