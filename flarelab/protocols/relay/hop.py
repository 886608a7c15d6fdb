"""The relay service: serve the hop protocol (RESERVE, CONNECT) and relay circuits.

A node becomes a relay by constructing the service (relays are public nodes; nothing turns
it on by itself)::

    relay = RelayService(node)                       # RelayServiceConfig() defaults
    ...
    relay.close()

RESERVE: the :class:`~.book.ReservationBook` decides; an accepted reservation is answered
with its expiration (Unix seconds), the relay's public addresses, a signed voucher and
the per-circuit limits. It lasts until it expires or the connection it was made on closes.

CONNECT: the book decides (a reservation of the target, circuit caps, rates); the relay
opens ``/libp2p/circuit/relay/0.2.0/stop`` to the target over the connection holding its
reservation, sends STOP CONNECT (source, limits), waits for the target's STATUS, answers
the source, and splices the two streams (:func:`~.circuit.splice`) until they close or a
limit resets both. Requests over relayed connections are refused (PERMISSION_DENIED).

Traced as ``relay.reserve`` and ``relay.circuit`` spans with every hop and stop message as
an event; counted in go-libp2p's ``libp2p_relaysvc_*`` metrics (:mod:`.metrics`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio
from opentelemetry import trace
from opentelemetry.trace import Span

from ...errors import FlarelabError, RemoteProtocolError
from ...tracing import spans
from ...wire import StreamReader
from .book import Accepted, CircuitBudget, Refused, RelayLimits, ReservationBook
from .circuit import splice
from .errors import RelayProtocolError
from .framing import note_received, parse_hop, read_frame, read_stop, write_hop, write_stop
from .messages import (
    HOP_PROTOCOL,
    MAX_MESSAGE_SIZE,
    STOP_PROTOCOL,
    HopConnect,
    HopReserve,
    HopStatus,
    Limit,
    PeerInfo,
    ReservationInfo,
    Status,
    StopConnect,
    StopStatus,
    Voucher,
)
from .metrics import RelayServiceMetrics

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node import Node
    from ...node.connection import Connection, NetStream

__all__ = ["RelayAcl", "RelayService", "RelayServiceConfig"]

log = logging.getLogger("flarelab.relay")


class RelayAcl(Protocol):
    """Who may reserve, and who may connect to whom (go-libp2p's ACLFilter)."""

    def allow_reserve(self, peer: PeerId, addr: Multiaddr) -> bool: ...

    def allow_connect(self, src: PeerId, src_addr: Multiaddr, dst: PeerId) -> bool: ...


@dataclass(frozen=True)
class RelayServiceConfig:
    """How a relay serves: limits, timeouts, and what it tells reserving peers."""

    limits: RelayLimits = field(default_factory=RelayLimits)
    #: time a peer has to send its request (and to take our answer)
    stream_timeout: float = 10.0
    #: time the target has to open the stop stream and answer STOP CONNECT: shorter than
    #: a client waits for the answer to CONNECT (10 s), so it hears CONNECTION_FAILED
    stop_timeout: float = 5.0
    #: bytes read per chunk when relaying (backpressure beyond that)
    buffer_size: int = 16384
    #: access control (None: everyone may reserve and connect)
    acl: RelayAcl | None = None
    #: the UTC clock that reservation expirations and vouchers are written in
    unix_time: Callable[[], float] = time.time


class RelayService:
    """Circuit relay v2 hop service on ``node`` (see the module docstring)."""

    def __init__(self, node: Node, config: RelayServiceConfig | None = None) -> None:
        self.node = node
        self.config = config = config or RelayServiceConfig()
        self.book = ReservationBook(config.limits)
        self.metrics = RelayServiceMetrics(node.tracing.meter)
        self.tracer = node.tracer
        self._closed = False
        node.set_handler(HOP_PROTOCOL, self._serve_hop, allow_limited=True)
        node.swarm.on_close.append(self._connection_closed)
        self.metrics.relay_status(True)

    def close(self) -> None:
        """Stop serving new requests (circuits in progress run to their end)."""
        if self._closed:
            return
        self._closed = True
        self.node.remove_handler(HOP_PROTOCOL)
        if self._connection_closed in self.node.swarm.on_close:
            self.node.swarm.on_close.remove(self._connection_closed)
        self.metrics.reservations_closed(len(self.book.reservations()))
        self.book = ReservationBook(self.config.limits)
        self.metrics.relay_status(False)

    # ------------------------------------------------------------------ bookkeeping
    def _connection_closed(self, conn: Connection) -> None:
        if self.book.connection_closed(conn.remote_peer, conn.id):
            self.metrics.reservations_closed(1)

    def _expire(self, now: float) -> None:
        self.metrics.reservations_closed(len(self.book.expire(now)))

    def reservation_addrs(self) -> list[Multiaddr]:
        """The relay's addresses a reservation hands out: public, direct, with our id."""
        policy = self.node.config.address_policy
        return [
            a.with_peer_id(self.node.peer_id)
            for a in self.node.advertised_addrs()
            if not a.is_relayed and policy.is_public(a)
        ]

    # ------------------------------------------------------------------ the hop protocol
    async def _serve_hop(self, stream: NetStream) -> None:
        conn = stream.connection
        peer = conn.remote_peer
        reader = StreamReader(stream, chunk=MAX_MESSAGE_SIZE)
        try:
            with trio.fail_after(self.config.stream_timeout):
                data = await read_frame(reader, HOP_PROTOCOL, peer)
            msg = parse_hop(data, peer=peer)
        except trio.TooSlowError:
            raise RemoteProtocolError(
                f"no hop request within {self.config.stream_timeout} s",
                peer=peer, protocol=HOP_PROTOCOL,
            ) from None
        except RelayProtocolError as err:
            await self._answer_bad_request(stream, err)
            return
        if isinstance(msg, HopReserve):
            await self._reserve(stream, conn, len(data))
        elif isinstance(msg, HopConnect):
            await self._connect(stream, reader, conn, msg, len(data))
        else:
            unexpected = RelayProtocolError(
                "a STATUS is not a request", status=Status.UNEXPECTED_MESSAGE,
                peer=peer, protocol=HOP_PROTOCOL,
            )
            await self._answer_bad_request(stream, unexpected)

    async def _answer_bad_request(self, stream: NetStream, err: RelayProtocolError) -> None:
        """Answer a malformed or unexpected request with its status, and trace it."""
        span = trace.get_current_span()
        spans.mark_error(span, err)
        log.info("hop request refused: %s", err)
        with trio.move_on_after(self.config.stream_timeout):
            try:
                await write_hop(stream, HopStatus(err.status), span=span)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await stream.aclose()

    async def _reserve(self, stream: NetStream, conn: Connection, size: int) -> None:
        peer = conn.remote_peer
        with self.tracer.start_as_current_span(
            spans.RELAY_RESERVE,
            attributes={
                spans.LIBP2P_REMOTE_PEER_ID: str(peer),
                spans.LIBP2P_ROLE: spans.ROLE_RESPONDER,
                spans.LIBP2P_PROTOCOL: HOP_PROTOCOL,
            },
        ) as span:
            note_received(span, HopReserve(), size)
            now = trio.current_time()
            self._expire(now)
            ip = conn.remote_addr.ip_address
            decision: Accepted | Refused
            acl = self.config.acl
            if acl is not None and not acl.allow_reserve(peer, conn.remote_addr):
                decision = Refused(Status.PERMISSION_DENIED, "refused by the relay's ACL")
            else:
                decision = self.book.reserve(
                    peer,
                    ip=None if ip is None else ip.compressed,
                    connection_id=conn.id,
                    relayed=conn.limited or conn.remote_addr.is_relayed,
                    now=now,
                )
            if isinstance(decision, Refused):
                await self._refuse(stream, span, decision)
                self.metrics.reservation_request_handled(decision.status)
                return
            if conn.is_closed:  # it closed while we decided: the reservation died with it
                self.book.connection_closed(peer, conn.id)
                return
            limits = self.config.limits
            lifetime = decision.expires_at - now
            expire = int(self.config.unix_time() + lifetime)
            addrs = self.reservation_addrs()
            voucher = Voucher(relay=self.node.peer_id, peer=peer, expiration=expire)
            limit = None if limits.circuit.unlimited else limits.circuit
            answer = HopStatus(
                Status.OK,
                ReservationInfo(expire, tuple(addrs), voucher.seal(self.node.key)),
                limit,
            )
            span.set_attribute(spans.LIBP2P_RELAY_STATUS, Status.OK.name)
            span.set_attribute(spans.LIBP2P_RELAY_EXPIRE, expire)
            span.set_attribute(spans.LIBP2P_RELAY_RENEWED, decision.renewed)
            span.set_attribute(spans.LIBP2P_RELAY_ADDRS, [str(a) for a in addrs])
            _limit_attributes(span, limit)
            try:
                with trio.fail_after(self.config.stream_timeout):
                    await write_hop(stream, answer, span=span)
                    await stream.aclose()
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.book.connection_closed(peer, conn.id)  # never delivered: retract it
                spans.mark_error(span, exc, side="remote")
                self.metrics.reservation_request_handled(Status.CONNECTION_FAILED)
                return
            span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
            self.metrics.reservation_request_handled(Status.OK)
            self.metrics.reservation_allowed(renewed=decision.renewed)

    async def _refuse(self, stream: NetStream, span: Span, refused: Refused) -> None:
        span.set_attribute(spans.LIBP2P_RELAY_STATUS, refused.status.name)
        span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_FAILED)
        span.set_attribute(spans.LIBP2P_REASON, refused.reason)
        log.debug("relay refused %s: %s", stream.remote_peer, refused.reason)
        with trio.move_on_after(self.config.stream_timeout):
            try:
                await write_hop(stream, HopStatus(refused.status), span=span)
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _connect(
        self, stream: NetStream, reader: StreamReader, conn: Connection, msg: HopConnect,
        size: int,
    ) -> None:
        src, dst = conn.remote_peer, msg.peer.peer_id
        with self.tracer.start_as_current_span(
            spans.RELAY_CIRCUIT,
            attributes={
                spans.LIBP2P_REMOTE_PEER_ID: str(src),
                spans.LIBP2P_RELAY_SRC: str(src),
                spans.LIBP2P_RELAY_DST: str(dst),
                spans.LIBP2P_ROLE: spans.ROLE_RESPONDER,
                spans.LIBP2P_PROTOCOL: HOP_PROTOCOL,
            },
        ) as span:
            note_received(span, msg, size)
            now = trio.current_time()
            self._expire(now)
            ip = conn.remote_addr.ip_address
            acl = self.config.acl
            decision = (
                Refused(Status.PERMISSION_DENIED, "refused by the relay's ACL")
                if acl is not None and not acl.allow_connect(src, conn.remote_addr, dst)
                else self.book.open_circuit(
                    src, dst,
                    ip=None if ip is None else ip.compressed,
                    relayed=conn.limited or conn.remote_addr.is_relayed,
                    now=now,
                )
            )
            if isinstance(decision, Refused):
                await self._refuse(stream, span, decision)
                self.metrics.connection_request_handled(decision.status)
                return
            try:
                await self._bridge(stream, reader, src, dst, span)
            finally:
                self.book.close_circuit(decision.circuit_id)

    async def _bridge(
        self, stream: NetStream, reader: StreamReader, src: PeerId, dst: PeerId, span: Span
    ) -> None:
        limits = self.config.limits
        limit = None if limits.circuit.unlimited else limits.circuit
        _limit_attributes(span, limit)
        opened = await self._open_stop(src, dst, limit, span)
        if isinstance(opened, Refused):
            await self._refuse(stream, span, opened)
            self.metrics.connection_request_handled(opened.status)
            return
        dst_stream, dst_reader = opened
        try:
            with trio.fail_after(self.config.stream_timeout):
                await write_hop(stream, HopStatus(Status.OK, limit=limit), span=span)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            spans.mark_error(span, exc, side="remote")
            self.metrics.connection_request_handled(Status.CONNECTION_FAILED)
            for s in (stream, dst_stream):
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await s.reset()
            return
        span.set_attribute(spans.LIBP2P_RELAY_STATUS, Status.OK.name)
        self.metrics.connection_request_handled(Status.OK)
        self.metrics.connection_opened()
        opened_at = trio.current_time()
        budget = CircuitBudget(limits.circuit, opened_at)
        end = None
        try:
            end = await splice(
                stream, reader, dst_stream, dst_reader, budget,
                buffer_size=self.config.buffer_size,
            )
        finally:
            relayed = budget.relayed
            span.set_attribute(spans.LIBP2P_RELAY_BYTES_SRC_TO_DST, relayed["src->dst"])
            span.set_attribute(spans.LIBP2P_RELAY_BYTES_DST_TO_SRC, relayed["dst->src"])
            span.set_attribute(spans.LIBP2P_CLOSE_REASON, end.reason if end else "cancelled")
            if budget.limit_hit:
                span.set_attribute(spans.LIBP2P_RELAY_LIMIT_HIT, budget.limit_hit)
            span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
            self.metrics.bytes_transferred(relayed["src->dst"] + relayed["dst->src"])
            self.metrics.connection_closed(
                trio.current_time() - opened_at, limit_hit=budget.limit_hit
            )

    async def _open_stop(
        self, src: PeerId, dst: PeerId, limit: Limit | None, span: Span
    ) -> tuple[NetStream, StreamReader] | Refused:
        """Ask ``dst`` to accept a connection from ``src``; its stop stream, or why not."""
        target = self._reservation_connection(dst)
        if target is None:
            return Refused(Status.CONNECTION_FAILED, f"no connection to {dst} any more")
        dst_stream: NetStream | None = None
        try:
            with trio.fail_after(self.config.stop_timeout):
                dst_stream = await target.new_stream(STOP_PROTOCOL)
                dst_reader = StreamReader(dst_stream, chunk=MAX_MESSAGE_SIZE)
                await write_stop(dst_stream, StopConnect(PeerInfo(src), limit), span=span)
                answer = await read_stop(dst_reader, peer=dst, span=span)
        except trio.TooSlowError:
            reason = f"the target did not answer STOP CONNECT within {self.config.stop_timeout} s"
        except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reason = f"stop exchange with the target failed: {exc}"
        else:
            if isinstance(answer, StopStatus) and answer.status is Status.OK:
                return dst_stream, dst_reader
            reason = (
                f"the target answered {answer.status.name}"
                if isinstance(answer, StopStatus)
                else "the target answered with a CONNECT"
            )
        if dst_stream is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await dst_stream.reset()
        return Refused(Status.CONNECTION_FAILED, reason)

    def _reservation_connection(self, dst: PeerId) -> Connection | None:
        """The connection ``dst`` reserved over, else any direct one to it."""
        entry = self.book.reservation(dst, trio.current_time())
        conns = [c for c in self.node.connections(dst) if not c.limited]
        for conn in conns:
            if entry is not None and conn.id == entry.connection_id:
                return conn
        return conns[0] if conns else None


def _limit_attributes(span: Span, limit: Limit | None) -> None:
    limit = limit or Limit()
    span.set_attribute(spans.LIBP2P_RELAY_LIMIT_DURATION, limit.duration)
    span.set_attribute(spans.LIBP2P_RELAY_LIMIT_DATA, limit.data)
