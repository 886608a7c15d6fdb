"""AutoNAT v1 (/libp2p/autonat/1.0.0): ask a server to dial us back; be such a server.

Client: open a stream, send ``DIAL{peer: {id, addrs}}``, read ``DIAL_RESPONSE``. ``OK``
means the server reached us (we are public), ``E_DIAL_ERROR`` that it could not (private),
``E_DIAL_REFUSED`` that it would not try (no verdict); anything else is a failed probe.

Server: read the request, refuse what the rules refuse (:mod:`.dial_policy`: only the
requester's observed IP, public, plain IP addresses; never over a relayed connection; rate
limits), dial the rest back on a fresh connection from an ephemeral port
(:mod:`.dialback`), and answer. A failed dial-back is answered only when the dial timeout
is over (``hide_dial_timing``), so the server is useless as a port scanner.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from ...errors import FlarelabError, RemoteProtocolError, attach_context
from ...tracing import spans
from ...wire import IncompleteError, StreamReader, length_prefixed
from . import attributes as attr
from .dial_policy import observed_refusal, select_v1
from .dialback import close_dial_back, dial_first
from .messages import (
    V1_MAX_MESSAGE,
    V1_PROTOCOL,
    V1DialResponse,
    V1Status,
    decode_v1_request,
    decode_v1_response,
    encode_v1_request,
    encode_v1_response,
)
from .ratelimit import RateLimits
from .reachability import Observation
from .server import AutoNATServer

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node.node import Node
    from .config import AutoNATConfig

__all__ = ["V1ProbeResult", "V1Server", "exchange_v1", "observation_of_v1", "probe_v1"]

log = logging.getLogger("flarelab.autonat")


# ====================================================================== client


@dataclass(frozen=True)
class V1ProbeResult:
    """How one v1 probe ended: the server's answer (if any) and what it tells us."""

    server: PeerId
    #: the server's answer, None if there was none (timeout, error)
    response: V1DialResponse | None
    #: PUBLIC/PRIVATE, FAILED for no usable answer, None for a refusal (no verdict)
    observation: Observation | None
    #: the status's name, or why there was no answer
    status: str
    outcome: str = spans.OUTCOME_SUCCESS


def observation_of_v1(response: V1DialResponse) -> Observation | None:
    """What a v1 answer tells us: OK public, E_DIAL_ERROR private, E_DIAL_REFUSED nothing."""
    if response.status == V1Status.OK:
        return Observation.PUBLIC
    if response.status == V1Status.E_DIAL_ERROR:
        return Observation.PRIVATE
    if response.status == V1Status.E_DIAL_REFUSED:
        return None
    return Observation.FAILED


async def exchange_v1(
    stream: trio.abc.Stream, *, local_peer: PeerId, addrs: Sequence[Multiaddr],
    span: Span = trace.INVALID_SPAN,
) -> V1DialResponse:
    """Send a ``DIAL`` for ``addrs`` on ``stream`` and read the answer (no timeout here)."""
    request = length_prefixed(encode_v1_request(local_peer, addrs))
    await stream.send_all(request)
    spans.message_sent(span, "DIAL", len(request), {attr.ADDRS: [str(a) for a in addrs]})
    reader = StreamReader(stream, chunk=V1_MAX_MESSAGE)
    data = await reader.read_length_prefixed(V1_MAX_MESSAGE)
    response = decode_v1_response(data)
    extra: dict[str, spans.AttributeValue] = {attr.STATUS: response.status_name}
    if response.addr is not None:
        extra[attr.DIALED_ADDR] = str(response.addr)
    spans.message_received(span, "DIAL_RESPONSE", len(data) + 1, extra)
    return response


async def probe_v1(
    node: Node, server: PeerId, addrs: Sequence[Multiaddr], *,
    request_timeout: float = 30.0,
    tracer: Tracer = spans.NO_TRACER,
) -> V1ProbeResult:
    """Ask ``server`` to dial us back at ``addrs``; never raises for what the server does."""
    attrs: dict[str, spans.AttributeValue] = {
        spans.LIBP2P_REMOTE_PEER_ID: str(server),
        spans.LIBP2P_PROTOCOL: V1_PROTOCOL,
        spans.LIBP2P_ROLE: spans.ROLE_INITIATOR,
        attr.VERSION: 1,
        attr.ADDRS: [str(a) for a in addrs],
    }
    with tracer.start_as_current_span(spans.AUTONAT_PROBE, attributes=attrs) as span:
        response: V1DialResponse | None = None
        try:
            with trio.fail_after(request_timeout):
                stream = await node.new_stream(server, V1_PROTOCOL)
                try:
                    response = await exchange_v1(
                        stream, local_peer=node.peer_id, addrs=addrs, span=span
                    )
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        await stream.aclose()
        except trio.TooSlowError:
            result = V1ProbeResult(server, None, Observation.FAILED,
                                   f"no answer within {request_timeout} s",
                                   spans.OUTCOME_TIMEOUT)
        except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError,
                OSError) as exc:
            attach_context(exc, peer=server, protocol=V1_PROTOCOL)
            spans.mark_error(span, exc)
            outcome = (spans.OUTCOME_PROTOCOL_ERROR if isinstance(exc, RemoteProtocolError)
                       else spans.OUTCOME_FAILED)
            result = V1ProbeResult(server, None, Observation.FAILED, str(exc), outcome)
        else:
            observation = observation_of_v1(response)
            outcome = spans.OUTCOME_FAILED if observation in (None, Observation.FAILED) else (
                spans.OUTCOME_SUCCESS)
            result = V1ProbeResult(server, response, observation, response.status_name, outcome)
            span.set_attribute(attr.STATUS, response.status_name)
            if response.addr is not None:
                span.set_attribute(attr.DIALED_ADDR, str(response.addr))
        span.set_attribute(spans.LIBP2P_OUTCOME, result.outcome)
        if result.outcome != spans.OUTCOME_SUCCESS:
            reason = response.text or response.status_name if response else result.status
            span.set_attribute(spans.LIBP2P_REASON, reason[:1024])
        span.set_attribute(attr.REACHABILITY,
                           result.observation.value if result.observation else "none")
        return result


# ====================================================================== server


class V1Server(AutoNATServer):
    """Answers /libp2p/autonat/1.0.0 for one node."""

    def limits(self, config: AutoNATConfig) -> RateLimits:
        """The v1 server's rate limits."""
        return config.v1_limits

    async def serve(
        self, stream: trio.abc.Stream, *, requester: PeerId, observed: Multiaddr | None
    ) -> V1Status:
        """Serve one request from ``requester`` seen at ``observed``; return our status."""
        span = trace.get_current_span()
        span.set_attribute(attr.VERSION, 1)
        reader = StreamReader(stream, chunk=V1_MAX_MESSAGE)
        try:
            with trio.fail_after(self.config.server_stream_timeout):
                data = await reader.read_length_prefixed(V1_MAX_MESSAGE)
            request = decode_v1_request(data)
        except trio.TooSlowError:
            raise RemoteProtocolError("no AutoNAT request within "
                                      f"{self.config.server_stream_timeout} s",
                                      peer=requester, protocol=V1_PROTOCOL) from None
        except IncompleteError as exc:
            attach_context(exc, peer=requester, protocol=V1_PROTOCOL)
            raise  # the stream broke off: nobody to answer
        except RemoteProtocolError as exc:  # malformed or oversized: say so
            attach_context(exc, peer=requester, protocol=V1_PROTOCOL)
            spans.mark_error(span, exc)
            return await self._respond(stream, span, V1Status.E_BAD_REQUEST, exc.message)
        spans.message_received(span, "DIAL", len(data) + 1,
                               {attr.ADDRS: [str(a) for a in request.addrs]})
        if request.peer_id is not None and request.peer_id != requester:
            return await self._respond(stream, span, V1Status.E_BAD_REQUEST,
                                       "the peer id in the request is not the requester's")
        refusal = observed_refusal(observed, self.node.config.address_policy)
        if refusal is not None:
            self.metrics.record_refused("dial_blocked")
            return await self._respond(stream, span, V1Status.E_DIAL_REFUSED, refusal)
        assert observed is not None
        selection = select_v1(
            request.addrs, observed=observed, requester=requester,
            policy=self.node.config.address_policy, can_dial=self._can_dial,
            max_addrs=self.config.max_dial_addrs,
        )
        if not selection.candidates:
            self.metrics.record_refused("no_valid_address")
            why = selection.reason() or "the request named no address"
            return await self._respond(stream, span, V1Status.E_DIAL_REFUSED,
                                       f"no address to dial: {why}")
        limited = self.limiter.acquire(requester, trio.current_time())
        if limited is not None:
            self.metrics.record_refused("rate_limited")
            return await self._respond(stream, span, V1Status.E_DIAL_REFUSED,
                                       f"too many dials ({limited})")
        try:
            dialed = await self._dial_back(requester, selection.candidates)
        finally:
            self.limiter.release(requester)
        if dialed is None:
            return await self._respond(stream, span, V1Status.E_DIAL_ERROR, "dial failed")
        return await self._respond(stream, span, V1Status.OK, "", dialed)

    def _can_dial(self, addr: Multiaddr) -> bool:
        return bool(self.node.dialer.dialable([addr]))

    async def _dial_back(self, peer: PeerId, addrs: Sequence[Multiaddr]) -> Multiaddr | None:
        """Dial ``peer`` back on a fresh connection; the address reached, or None."""
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
            spans.LIBP2P_PROTOCOL: V1_PROTOCOL,
            spans.LIBP2P_ROLE: spans.ROLE_INITIATOR,
            attr.VERSION: 1,
            attr.ADDRS: [str(a) for a in addrs],
        }
        timeout = self.config.v1_dial_timeout
        deadline = trio.current_time() + timeout
        with self.node.tracer.start_as_current_span(
            spans.AUTONAT_DIAL_BACK, attributes=attrs, record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                with trio.fail_after(timeout):
                    conn, addr = await dial_first(self.node, peer, addrs,
                                                  stagger=self.config.v1_dial_stagger)
            except (trio.TooSlowError, FlarelabError) as exc:
                timed_out = isinstance(exc, trio.TooSlowError)
                reason = f"no answer within {timeout} s" if timed_out else str(exc)
                span.set_attribute(spans.LIBP2P_OUTCOME,
                                   spans.OUTCOME_TIMEOUT if timed_out else spans.OUTCOME_FAILED)
                span.set_attribute(spans.LIBP2P_REASON, reason[:1024])
                log.debug("AutoNAT v1 dial-back to %s failed: %s", peer, reason)
                if self.config.hide_dial_timing:
                    await trio.sleep_until(deadline)
                return None
            span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
            span.set_attribute(attr.DIALED_ADDR, str(addr))
            span.set_attribute(spans.LIBP2P_CONNECTION_ID, conn.id)
            await close_dial_back(conn)
            return addr

    async def _respond(self, stream: trio.abc.Stream, span: Span, status: V1Status, text: str,
                       addr: Multiaddr | None = None) -> V1Status:
        message = length_prefixed(encode_v1_response(status, text[:512], addr))
        await stream.send_all(message)
        extra: dict[str, spans.AttributeValue] = {attr.STATUS: status.name}
        if text:
            extra[spans.LIBP2P_REASON] = text[:512]
        spans.message_sent(span, "DIAL_RESPONSE", len(message), extra)
        span.set_attribute(attr.STATUS, status.name)
        if text:
            span.set_attribute(spans.LIBP2P_REASON, text[:512])
        self.metrics.record_response_sent(status.name)
        return status
