"""The connection table and what runs on every connection.

:class:`Swarm` keeps the open connections by peer, runs each one (its muxer engine in a
connection nursery, the inbound-stream loop, services such as identify), serves inbound
streams from the protocol handler registry, and publishes the connection events. A
failure on one stream resets that stream; a failure of a connection's muxer, or of a
service running on it, closes that connection; neither reaches the node's nursery. Each
is traced on the stream's or the connection's span, naming the peer and the protocol:
a stream that stalls in negotiation, a handler that times out waiting for the peer, a
stream refused because the peer has too many in service.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from opentelemetry import trace
from opentelemetry.trace import Tracer

from ..errors import (
    ConnectionClosedError,
    LimitExceededError,
    LocalProtocolError,
    RemoteProtocolError,
    attach_context,
)
from ..mss import MULTISTREAM_PROTOCOL, negotiate_responder
from ..tracing import spans
from .connection import Connection, NetStream
from .events import (
    ConnectionClosed,
    ConnectionOpened,
    EventBus,
    PeerConnected,
    PeerDisconnected,
)
from .peerstore import AddrTTL, Peerstore

if TYPE_CHECKING:
    from ..identity import PeerId
    from ..muxers.base import MuxedStream
    from ..tracing.metrics import NodeMetrics
    from .config import NodeConfig

__all__ = ["ConnectionHook", "Handler", "HandlerRegistry", "Swarm"]

log = logging.getLogger("flarelab.node")

Handler = Callable[[NetStream], Awaitable[object]]
#: called in a connection's nursery when it opens, and when it closes
ConnectionHook = Callable[[Connection], Awaitable[object]]


@dataclass(frozen=True)
class _HandlerEntry:
    handler: Handler
    allow_limited: bool


class HandlerRegistry:
    """Protocol id -> handler, with whether it may run over limited connections."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._entries: dict[str, _HandlerEntry] = {}
        self.on_change = on_change

    def set(self, protocol: str, handler: Handler, *, allow_limited: bool = False) -> None:
        """Serve ``protocol`` with ``handler``."""
        if not protocol.startswith("/"):
            raise LocalProtocolError(f"protocol ids start with '/': {protocol!r}")
        is_new = protocol not in self._entries
        self._entries[protocol] = _HandlerEntry(handler, allow_limited)
        if is_new and self.on_change is not None:
            self.on_change()

    def remove(self, protocol: str) -> None:
        """Stop serving ``protocol``."""
        if self._entries.pop(protocol, None) is not None and self.on_change is not None:
            self.on_change()

    def protocols(self) -> list[str]:
        """The protocols served, sorted."""
        return sorted(self._entries)

    def accepts(self, protocol: str, *, limited: bool) -> bool:
        """Whether an inbound stream for ``protocol`` is served on this kind of connection."""
        entry = self._entries.get(protocol)
        return entry is not None and (not limited or entry.allow_limited)

    def handler(self, protocol: str) -> Handler:
        """The handler of ``protocol`` (KeyError if none)."""
        return self._entries[protocol].handler


class Swarm:
    """Open connections, and the tasks that serve them."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        handlers: HandlerRegistry,
        peerstore: Peerstore,
        events: EventBus,
        metrics: NodeMetrics,
        tracer: Tracer,
    ) -> None:
        self.config = config
        self.handlers = handlers
        self.peerstore = peerstore
        self.events = events
        self.metrics = metrics
        self.tracer = tracer
        self._connections: dict[PeerId, list[Connection]] = {}
        #: services started in every new connection's nursery (identify, ...)
        self.on_open: list[ConnectionHook] = []
        #: called (synchronously) when a connection is gone
        self.on_close: list[Callable[[Connection], None]] = []

    # ------------------------------------------------------------------ the table
    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        """Open connections to ``peer`` (to everyone if None)."""
        if peer is not None:
            return [c for c in self._connections.get(peer, ()) if not c.is_closed]
        return [c for conns in self._connections.values() for c in conns if not c.is_closed]

    def connected_peers(self) -> list[PeerId]:
        """Peers we have at least one open connection to."""
        return [p for p, conns in self._connections.items() if any(not c.is_closed for c in conns)]

    def best_connection(self, peer: PeerId, *, allow_limited: bool = True) -> Connection | None:
        """The connection new streams to ``peer`` should use: unlimited first, oldest first."""
        conns = [c for c in self.connections(peer) if allow_limited or not c.limited]
        if not conns:
            return None
        return min(conns, key=lambda c: (c.limited, c.opened_at, c.id))

    async def close_all(self, reason: str, *, grace: float = 2.0) -> None:
        """Close every connection (GoAway), waiting at most ``grace`` seconds."""
        with trio.move_on_after(grace):
            async with trio.open_nursery() as nursery:
                for conn in self.connections():
                    nursery.start_soon(close_quietly, conn, reason)

    # ------------------------------------------------------------------ running connections
    async def run(
        self,
        conn: Connection,
        *,
        task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``conn`` until it ends: muxer engine, inbound streams, services."""
        conn.span = self.tracer.start_span(
            spans.CONNECTION,
            attributes={
                spans.LIBP2P_CONNECTION_ID: conn.id,
                spans.LIBP2P_REMOTE_PEER_ID: str(conn.remote_peer),
                spans.LIBP2P_DIRECTION: conn.direction,
                spans.LIBP2P_MULTIADDR: str(conn.remote_addr),
                spans.LIBP2P_LOCAL_MULTIADDR: str(conn.local_addr),
                spans.NETWORK_TRANSPORT: conn.transport,
                spans.LIBP2P_SECURITY: conn.security,
                spans.LIBP2P_MUXER: conn.muxer_protocol,
                spans.LIBP2P_LIMITED: conn.limited,
            },
        )
        registered = False
        started = False
        reason = "closed"
        try:
            with trace.use_span(conn.span, end_on_exit=False):
                async with trio.open_nursery() as nursery:
                    conn.nursery = nursery
                    await nursery.start(self._run_muxer, conn, nursery)
                    self._register(conn)
                    registered = True
                    nursery.start_soon(self._accept_streams, conn, nursery)
                    for hook in self.on_open:
                        nursery.start_soon(hook, conn)
                    task_status.started(conn)
                    started = True
        except Exception as exc:
            err = _sole_error(exc)
            reason = conn.close_reason = conn.close_reason or _reason_text(err) or reason
            expected = isinstance(err, (RemoteProtocolError, LocalProtocolError))
            spans.mark_error(conn.span, err, side=None if expected else "local")
            if not started and task_status is not trio.TASK_STATUS_IGNORED:
                raise  # the muxer failed to start: whoever waits for the connection hears it
            # a service (or the muxer) failed on this connection: it ends, the node does not
            log.error("connection %s ended by an unexpected error", conn, exc_info=err)
        finally:
            conn.closed.set()
            reason = conn.close_reason or _reason_text(conn.muxer.close_reason) or reason
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await conn.muxer.aclose()
            if registered:
                self._unregister(conn, reason)
            conn.span.set_attribute(spans.LIBP2P_CLOSE_REASON, reason)
            conn.span.end()

    async def _run_muxer(
        self, conn: Connection, nursery: trio.Nursery, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            await conn.muxer.run(task_status=task_status)
        except RemoteProtocolError as exc:
            attach_context(exc, peer=conn.remote_peer)
            conn.close_reason = conn.close_reason or str(exc)
            log.info("connection %s closed: %s", conn, exc)
            if conn.span is not None:
                spans.mark_error(conn.span, exc, side="remote")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            conn.close_reason = conn.close_reason or f"transport: {exc}"
        finally:
            conn.closed.set()
            nursery.cancel_scope.cancel()

    async def _accept_streams(self, conn: Connection, nursery: trio.Nursery) -> None:
        active = [0]
        limit = self.config.max_handler_streams_per_connection
        while True:
            try:
                muxed = await conn.muxer.accept_stream()
            except (ConnectionClosedError, trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if active[0] >= limit:
                self._refuse_stream(conn, muxed, limit)
                await reset_quietly(muxed)
                continue
            active[0] += 1
            nursery.start_soon(self._serve_stream, conn, muxed, active)

    def _stream_attributes(
        self, conn: Connection, muxed: MuxedStream
    ) -> dict[str, spans.AttributeValue]:
        return {
            spans.LIBP2P_REMOTE_PEER_ID: str(conn.remote_peer),
            spans.LIBP2P_STREAM_ID: muxed.stream_id,
            spans.LIBP2P_CONNECTION_ID: conn.id,
        }

    def _refuse_stream(self, conn: Connection, muxed: MuxedStream, limit: int) -> None:
        """Trace an inbound stream refused because the peer has ``limit`` in service."""
        err = LimitExceededError(
            f"stream {muxed.stream_id} refused: the peer already has {limit} handler streams "
            "open on this connection",
            peer=conn.remote_peer,
            protocol=conn.muxer_protocol,
        )
        log.info("%s", err)
        with self.tracer.start_as_current_span(
            spans.STREAM_HANDLE,
            attributes=self._stream_attributes(conn, muxed),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            spans.mark_error(span, err)

    async def _serve_stream(self, conn: Connection, muxed: MuxedStream, active: list[int]) -> None:
        peer = conn.remote_peer
        attrs = self._stream_attributes(conn, muxed)
        protocol: str | None = None
        with self.tracer.start_as_current_span(
            spans.STREAM_HANDLE,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                protocol, stream = await self._negotiate(conn, muxed)
                span.set_attribute(spans.LIBP2P_PROTOCOL, protocol)
                net_stream = NetStream(stream, muxed, protocol, conn)
                self.metrics.record_stream(protocol, direction="inbound")
                await self.handlers.handler(protocol)(net_stream)
            except trio.TooSlowError:
                # a deadline inside the handler: it waited on the peer for too long
                err = RemoteProtocolError(
                    "the protocol handler timed out waiting for the peer",
                    peer=peer,
                    protocol=protocol,
                )
                log.info("stream %s: %s", muxed.stream_id, err)
                spans.mark_error(span, err)
                await reset_quietly(muxed)
            except (RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                attach_context(exc, peer=peer, protocol=protocol)
                log.info("stream %s from %s ended with an error: %s", muxed.stream_id, peer, exc)
                spans.mark_error(span, exc)
                await reset_quietly(muxed)
            except Exception as exc:
                log.exception("handler for a stream from %s failed", peer)
                spans.mark_error(span, exc, side="local")
                await reset_quietly(muxed)
            else:
                with trio.move_on_after(self.config.negotiate_timeout):
                    await muxed.aclose()
            finally:
                active[0] -= 1

    async def _negotiate(self, conn: Connection, muxed: MuxedStream) -> tuple[str, trio.abc.Stream]:
        """Agree on a protocol we serve, within ``negotiate_timeout``."""
        timeout = self.config.negotiate_timeout
        with trio.move_on_after(timeout):
            return await negotiate_responder(
                muxed,
                lambda p: self.handlers.accepts(p, limited=conn.limited),
                tracer=self.tracer,
                peer=conn.remote_peer,
            )
        raise RemoteProtocolError(
            f"protocol negotiation timed out after {timeout} s",
            peer=conn.remote_peer,
            protocol=MULTISTREAM_PROTOCOL,
        )

    def _register(self, conn: Connection) -> None:
        peer = conn.remote_peer
        conns = self._connections.setdefault(peer, [])
        first = not any(not c.is_closed for c in conns)
        conns.append(conn)
        now = trio.current_time()
        self.peerstore.protected.add(peer)
        self.peerstore.add_public_key(peer, conn.remote_public_key, now)
        if conn.direction == "outbound" and not conn.limited:
            self.peerstore.add_addrs(peer, [conn.remote_addr], AddrTTL.CONNECTED, now)
        self.metrics.record_connection_opened(conn.direction, conn.transport)
        self.events.publish(ConnectionOpened(conn))
        if first:
            self.events.publish(PeerConnected(peer, conn))

    def _unregister(self, conn: Connection, reason: str) -> None:
        peer = conn.remote_peer
        conns = self._connections.get(peer, [])
        if conn in conns:
            conns.remove(conn)
        self.metrics.record_connection_closed(conn.direction, conn.transport)
        for callback in self.on_close:
            callback(conn)
        self.events.publish(ConnectionClosed(conn, reason))
        if not any(not c.is_closed for c in conns):
            self._connections.pop(peer, None)
            self.peerstore.protected.discard(peer)
            self.peerstore.update_addr_ttls(
                peer, AddrTTL.CONNECTED, AddrTTL.RECENTLY_CONNECTED, trio.current_time()
            )
            self.events.publish(PeerDisconnected(peer))


async def close_quietly(conn: Connection, reason: str) -> None:
    """Close ``conn``, ignoring errors (it may be dying already)."""
    with contextlib.suppress(Exception):
        await conn.aclose(reason)


async def reset_quietly(stream: MuxedStream) -> None:
    """Reset ``stream``, ignoring errors, within a second, even when cancelled."""
    with contextlib.suppress(Exception), trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await stream.reset()


def _sole_error(exc: BaseException) -> BaseException:
    """Return the one error inside (nested) single-error groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _reason_text(reason: object) -> str | None:
    if reason is None:
        return None
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)
