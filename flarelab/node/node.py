"""The libp2p node: listen, dial, upgrade, serve protocols, keep track of peers.

One nursery per node (every listener, connection and background task lives in it) and one
nursery per connection (its muxer engine, its inbound streams, its identify). A failure on
one connection or stream closes that connection or stream and is traced; the node goes on
serving everyone else.

    async with Node(NodeConfig(listen_addrs=["/ip4/127.0.0.1/tcp/0"])) as node:
        print(node.peer_id, node.listen_addrs())
        rtts = await node.ping(other_addr)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from opentelemetry import trace

from ..errors import (
    ConnectionClosedError,
    DialError,
    FlarelabError,
    LocalProtocolError,
    RemoteProtocolError,
    attach_context,
)
from ..identity import Ed25519PrivateKey, PeerId
from ..mss import negotiate_responder
from ..multiaddr import Multiaddr
from ..netif import interface_addresses
from ..protocols.perf import PERF_PROTOCOL, PerfResult, handle_perf, perf_stream
from ..protocols.ping import PING_PROTOCOL, handle_ping, ping_stream
from ..tracing import spans
from ..tracing.metrics import NodeMetrics
from ..tracing.provider import NodeTracing, TracingConfig
from ..transports.tcp import TcpTransport
from .config import NodeConfig
from .connection import Connection, NetStream
from .events import (
    ConnectionClosed,
    ConnectionOpened,
    EventBus,
    ListenAddressesChanged,
    LocalAddressesChanged,
    PeerConnected,
    PeerDisconnected,
)
from .observed import ObservedAddrManager
from .peerstore import AddrTTL, Peerstore
from .upgrader import Upgrader

if TYPE_CHECKING:
    from ..protocols.identify import IdentifyInfo
    from ..protocols.identify_service import IdentifyService
    from ..transports.base import Listener, RawConnection, Transport

__all__ = ["Handler", "Node"]

log = logging.getLogger("flarelab.node")

Handler = Callable[[NetStream], Awaitable[object]]


@dataclass(frozen=True)
class _HandlerEntry:
    handler: Handler
    allow_limited: bool


class _PendingDial:
    """A dial in progress that later callers for the same peer wait on."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.connection: Connection | None = None
        self.error: BaseException | None = None


class Node:
    """A libp2p node. Use it as ``async with Node(config) as node: ...``."""

    def __init__(
        self, config: NodeConfig | None = None, *, transports: Sequence[Transport] | None = None
    ) -> None:
        self.config = config = config or NodeConfig()
        self.key = config.key or Ed25519PrivateKey.generate()
        self.peer_id = PeerId.from_public_key(self.key.public_key)
        self.label = config.label or self.peer_id.short()
        tracing_config = config.tracing or TracingConfig(label=self.label)
        if tracing_config.label is None:
            tracing_config = dataclasses.replace(tracing_config, label=self.label)
        self.tracing = NodeTracing.create(tracing_config, str(self.peer_id))
        self.tracer = self.tracing.tracer
        self.metrics = NodeMetrics(self.tracing.meter)
        self.events = EventBus()
        self.peerstore = Peerstore()
        self.observed_addrs = ObservedAddrManager(
            threshold=config.observed_addr_threshold, group_by=config.observed_addr_group_by
        )
        self.transports: list[Transport] = list(transports) if transports else [
            TcpTransport(
                reuse_port=config.reuse_port,
                connect_timeout=config.connect_timeout,
                tracer=self.tracer,
            )
        ]
        self.upgrader = Upgrader(
            local_key=self.key,
            muxers=config.muxers,
            yamux=config.yamux,
            mplex=config.mplex,
            tracer=self.tracer,
        )
        self._handlers: dict[str, _HandlerEntry] = {}
        self._connections: dict[PeerId, list[Connection]] = {}
        self._listeners: list[Listener] = []
        self._dials: dict[PeerId, _PendingDial] = {}
        self._pending_inbound = 0
        self._nursery: trio.Nursery | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._closing = False
        #: extra addresses to advertise (relay addresses, port mappings...), by source name
        self.extra_addrs: dict[str, list[Multiaddr]] = {}

        self.identify: IdentifyService | None = None
        if config.enable_identify:
            from ..protocols.identify_service import IdentifyService

            self.identify = IdentifyService(self)
        if config.enable_ping:
            self.set_handler(PING_PROTOCOL, self._serve_ping, allow_limited=True)
        if config.enable_perf:
            self.set_handler(PERF_PROTOCOL, self._serve_perf)

    # ================================================================== lifecycle
    async def __aenter__(self) -> Node:
        if self._nursery is not None:
            raise LocalProtocolError("node already started")
        stack = contextlib.AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._exit_stack = stack
        try:
            if self.identify is not None:
                self._nursery.start_soon(self.identify.run)
            for addr in self.config.listen_addrs:
                await self.listen(addr)
        except BaseException as exc:
            await self._shutdown()
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        await self._shutdown()
        assert self._exit_stack is not None
        return await self._exit_stack.__aexit__(*exc_info)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Close listeners and connections and stop every task (``__aexit__`` does this)."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        with trio.CancelScope(shield=True):
            for listener in list(self._listeners):
                with contextlib.suppress(Exception):
                    await listener.aclose()
            with trio.move_on_after(2.0):
                async with trio.open_nursery() as nursery:
                    for conns in list(self._connections.values()):
                        for conn in conns:
                            nursery.start_soon(self._close_quietly, conn, "node shutting down")
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self.events.close()
        self.tracing.shutdown()

    @staticmethod
    async def _close_quietly(conn: Connection, reason: str) -> None:
        with contextlib.suppress(Exception):
            await conn.aclose(reason)

    @property
    def nursery(self) -> trio.Nursery:
        """The node's nursery, for services that run tasks as long as the node runs."""
        if self._nursery is None or self._closing:
            raise LocalProtocolError("node is not running (use 'async with node:')")
        return self._nursery

    # ================================================================== protocol handlers
    def set_handler(self, protocol: str, handler: Handler, *, allow_limited: bool = False) -> None:
        """Serve ``protocol`` on inbound streams with ``handler(stream)``.

        ``allow_limited``: also serve it over limited (relayed) connections.
        """
        if not protocol.startswith("/"):
            raise LocalProtocolError(f"protocol ids start with '/': {protocol!r}")
        is_new = protocol not in self._handlers
        self._handlers[protocol] = _HandlerEntry(handler, allow_limited)
        if is_new and self.identify is not None:
            self.identify.schedule_push()

    def remove_handler(self, protocol: str) -> None:
        """Stop serving ``protocol``."""
        if self._handlers.pop(protocol, None) is not None and self.identify is not None:
            self.identify.schedule_push()

    def protocols(self) -> list[str]:
        """The protocols we serve, sorted."""
        return sorted(self._handlers)

    # ================================================================== addresses
    async def listen(self, addr: Multiaddr | str) -> list[Multiaddr]:
        """Start listening on ``addr``; return the bound addresses."""
        ma = Multiaddr(addr)
        for transport in self.transports:
            if transport.can_listen(ma):
                break
        else:
            raise LocalProtocolError(f"no transport can listen on {ma}")
        listener: Listener = await self.nursery.start(
            transport.listen, ma, self._on_inbound, self.nursery
        )
        self._listeners.append(listener)
        self.events.publish(ListenAddressesChanged(tuple(self.listen_addrs())))
        self.addresses_changed()
        return list(listener.addrs)

    def listen_addrs(self) -> list[Multiaddr]:
        """Addresses we listen on, with wildcard IPs expanded to this host's interfaces."""
        out: list[Multiaddr] = []
        for listener in self._listeners:
            for addr in listener.addrs:
                ip = addr.ip_address
                if ip is not None and ip.is_unspecified:
                    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
                    comps = addr.components()
                    rest = "".join(f"/{c.name}" + (f"/{c.value}" if c.value else "")
                                   for c in comps[1:])
                    for local in interface_addresses(family):
                        out.append(Multiaddr(f"/ip{ip.version}/{local}{rest}"))
                else:
                    out.append(addr)
        return list(dict.fromkeys(out))

    def advertised_addrs(self) -> list[Multiaddr]:
        """Addresses we tell peers about: listen addresses, confirmed observations, extras."""
        addrs = self.listen_addrs()
        addrs += self.observed_addrs.confirmed(trio.current_time())
        for extra in self.extra_addrs.values():
            addrs += extra
        return list(dict.fromkeys(addrs))

    @property
    def addrs(self) -> list[Multiaddr]:
        """Advertised addresses with ``/p2p/<our id>`` appended, ready to share."""
        return [a.with_peer_id(self.peer_id) for a in self.advertised_addrs()]

    def addresses_changed(self) -> None:
        """Tell the node its advertised addresses changed (publishes an event, pushes)."""
        self.events.publish(LocalAddressesChanged(tuple(self.advertised_addrs())))
        if self.identify is not None:
            self.identify.schedule_push()

    # ================================================================== connections
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

    def _resolve_target(
        self, target: PeerId | Multiaddr | str, addrs: Sequence[Multiaddr | str]
    ) -> tuple[PeerId | None, list[Multiaddr]]:
        if isinstance(target, str):
            target = Multiaddr(target) if target.startswith("/") else PeerId.from_string(target)
        extra = [Multiaddr(a) for a in addrs]
        if isinstance(target, PeerId):
            return target, extra
        return target.peer_id, [target, *extra]

    async def connect(
        self,
        target: PeerId | Multiaddr | str,
        addrs: Sequence[Multiaddr | str] = (),
        *,
        allow_limited: bool = True,
        force_new: bool = False,
    ) -> Connection:
        """Return a connection to ``target``, reusing an open one unless ``force_new``.

        ``target`` is a peer id (addresses come from ``addrs`` and the peerstore) or a
        multiaddr (with ``/p2p/<id>`` the peer is authenticated against it; without, we
        connect to whoever answers).
        """
        peer, candidates = self._resolve_target(target, addrs)
        if peer == self.peer_id:
            raise LocalProtocolError("a node cannot dial itself")
        if peer is not None and not force_new:
            existing = self.best_connection(peer, allow_limited=allow_limited)
            if existing is not None:
                return existing
            pending = self._dials.get(peer)
            if pending is not None:
                await pending.done.wait()
                if pending.connection is not None and not pending.connection.is_closed:
                    return pending.connection
                raise DialError(f"dial to {peer} failed", peer=peer) from pending.error
        if peer is not None:
            now = trio.current_time()
            known = self.peerstore.addrs(peer, now)
            candidates = list(dict.fromkeys([*candidates, *known]))
            if candidates:
                self.peerstore.add_addrs(peer, candidates[: len(candidates)], AddrTTL.TEMP, now)
        pending = _PendingDial()
        if peer is not None:
            self._dials[peer] = pending
        try:
            conn = await self._dial(peer, candidates)
            pending.connection = conn
            return conn
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            pending.done.set()
            if peer is not None and self._dials.get(peer) is pending:
                del self._dials[peer]

    def _dialable(self, addrs: Sequence[Multiaddr]) -> list[tuple[Multiaddr, Transport]]:
        out = []
        for addr in addrs:
            for transport in self.transports:
                if transport.can_dial(addr):
                    out.append((addr, transport))
                    break
        return out

    async def _dial(self, peer: PeerId | None, candidates: Sequence[Multiaddr]) -> Connection:
        attrs: dict[str, spans.AttributeValue] = {"libp2p.candidates": [str(a) for a in candidates]}
        if peer is not None:
            attrs[spans.LIBP2P_REMOTE_PEER_ID] = str(peer)
        with self.tracer.start_as_current_span(spans.NODE_DIAL, attributes=attrs) as span:
            dialable = self._dialable(candidates)
            try:
                if not dialable:
                    raise DialError(
                        "no dialable address" if candidates else "no known address", peer=peer
                    )
                started = trio.current_time()
                with trio.fail_after(self.config.dial_timeout):
                    conn = await self._dial_many(peer, dialable)
                elapsed = trio.current_time() - started
                self.metrics.record_dial(elapsed, transport=conn.transport, ok=True)
                span.set_attribute(spans.LIBP2P_MULTIADDR, str(conn.remote_addr))
                span.set_attribute(spans.LIBP2P_REMOTE_PEER_ID, str(conn.remote_peer))
                span.set_attribute(spans.LIBP2P_CONNECTION_ID, conn.id)
                return conn
            except trio.TooSlowError:
                err = DialError(f"dial timed out after {self.config.dial_timeout} s", peer=peer)
                spans.mark_error(span, err, side="remote")
                raise err from None
            except FlarelabError as exc:
                attach_context(exc, peer=peer)
                spans.mark_error(span, exc)
                raise

    async def _dial_many(
        self, peer: PeerId | None, dialable: Sequence[tuple[Multiaddr, Transport]]
    ) -> Connection:
        """Dial addresses one after another, starting the next when the previous failed or
        after ``dial_stagger`` seconds; the first connection wins and the rest are cancelled."""
        errors: list[tuple[Multiaddr, BaseException]] = []
        winner: Connection | None = None

        async def attempt(addr: Multiaddr, transport: Transport, failed: trio.Event) -> None:
            nonlocal winner
            try:
                conn = await self._dial_one(peer, addr, transport)
            except Exception as exc:
                errors.append((addr, exc))
                failed.set()
                return
            if winner is None:
                winner = conn
                nursery.cancel_scope.cancel()
            else:
                await self._close_quietly(conn, "lost the dial race")

        async with trio.open_nursery() as nursery:
            for addr, transport in dialable:
                failed = trio.Event()
                nursery.start_soon(attempt, addr, transport, failed)
                with trio.move_on_after(self.config.dial_stagger):
                    await failed.wait()
        if winner is not None:
            return winner
        if len(errors) == 1 and isinstance(errors[0][1], FlarelabError):
            err = errors[0][1]
            if not isinstance(err, DialError):
                raise DialError(f"could not connect: {err}", attempts=errors, peer=peer) from err
        raise DialError("could not connect", attempts=errors, peer=peer)

    async def _dial_one(
        self, peer: PeerId | None, addr: Multiaddr, transport: Transport
    ) -> Connection:
        if len(self.connections()) >= self.config.max_connections:
            raise DialError(f"connection limit of {self.config.max_connections} reached")
        raw = await transport.dial(addr)
        return await self.upgrade_and_run(raw, expected_peer=peer, is_initiator=True)

    async def upgrade_and_run(
        self,
        raw: RawConnection,
        *,
        expected_peer: PeerId | None,
        is_initiator: bool,
        limited: bool = False,
    ) -> Connection:
        """Upgrade an outbound-style raw connection and run it in the node's nursery.

        ``is_initiator`` is the role in the security and muxer handshakes (DCUtR's TCP
        simultaneous open decides it by protocol, not by who dialled).
        """
        try:
            conn = await self._upgrade(
                raw, expected_peer=expected_peer, is_initiator=is_initiator, limited=limited
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await _close_raw(raw)
            raise
        return await self.nursery.start(self._run_connection, conn)

    async def _upgrade(
        self,
        raw: RawConnection,
        *,
        expected_peer: PeerId | None,
        is_initiator: bool,
        limited: bool = False,
    ) -> Connection:
        direction = "outbound" if raw.is_initiator else "inbound"
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_DIRECTION: direction,
            spans.LIBP2P_ROLE: "initiator" if is_initiator else "responder",
            spans.LIBP2P_MULTIADDR: str(raw.remote_addr),
            spans.LIBP2P_LOCAL_MULTIADDR: str(raw.local_addr),
            spans.NETWORK_TRANSPORT: raw.transport,
        }
        with self.tracer.start_as_current_span(spans.NODE_UPGRADE, attributes=attrs) as span:
            started = trio.current_time()
            try:
                with trio.fail_after(self.config.handshake_timeout):
                    result = await self.upgrader.upgrade(
                        raw.stream, is_initiator=is_initiator, expected_peer=expected_peer
                    )
            except trio.TooSlowError:
                err = RemoteProtocolError(
                    f"handshake did not finish within {self.config.handshake_timeout} s",
                    peer=expected_peer,
                )
                spans.mark_error(span, err)
                raise err from None
            except Exception as exc:
                spans.mark_error(span, exc)
                raise
            elapsed = trio.current_time() - started
            self.metrics.record_handshake(elapsed, transport=raw.transport)
            span.set_attribute(spans.LIBP2P_REMOTE_PEER_ID, str(result.remote_peer))
            span.set_attribute(spans.LIBP2P_SECURITY, result.security)
            span.set_attribute(spans.LIBP2P_MUXER, result.muxer.protocol_id)
            span.set_attribute("libp2p.early_muxer", result.early_muxer)
        return Connection(
            muxer=result.muxer,
            remote_peer=result.remote_peer,
            remote_public_key=result.remote_public_key,
            local_addr=raw.local_addr,
            remote_addr=raw.remote_addr,
            direction=direction,
            transport=raw.transport,
            security=result.security,
            limited=limited,
            tracer=self.tracer,
            negotiate_timeout=self.config.negotiate_timeout,
        )

    async def _on_inbound(self, raw: RawConnection) -> None:
        """Handle one inbound raw connection (runs as the transport's handler task)."""
        if self._closing or self._pending_inbound >= self.config.max_pending_inbound or (
            len(self.connections()) >= self.config.max_connections
        ):
            self.metrics.record_refused(transport=raw.transport)
            await _close_raw(raw)
            return
        self._pending_inbound += 1
        try:
            conn = await self._upgrade(raw, expected_peer=None, is_initiator=False)
        except Exception as exc:
            log.info("inbound connection from %s failed its handshake: %s", raw.remote_addr, exc)
            with trio.CancelScope(shield=True):
                await _close_raw(raw)
            return
        finally:
            self._pending_inbound -= 1
        if len(self.connections(conn.remote_peer)) >= self.config.max_connections_per_peer:
            log.info("refusing connection %s: per-peer limit reached", conn)
            await self._close_quietly(conn, "per-peer connection limit")
            return
        await self._run_connection(conn)

    async def _run_connection(
        self,
        conn: Connection,
        *,
        task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one connection until it ends: muxer engine, inbound streams, identify."""
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
                "libp2p.limited": conn.limited,
            },
        )
        registered = False
        reason = "closed"
        try:
            with trace.use_span(conn.span, end_on_exit=False):
                async with trio.open_nursery() as nursery:
                    conn.nursery = nursery
                    await nursery.start(self._run_muxer, conn, nursery)
                    self._register(conn)
                    registered = True
                    nursery.start_soon(self._accept_streams, conn, nursery)
                    if self.identify is not None:
                        nursery.start_soon(self.identify.identify_connection, conn)
                    task_status.started(conn)
        except Exception as exc:  # the muxer failed to start
            reason = f"{type(exc).__name__}: {exc}"
            spans.mark_error(conn.span, exc)
            raise
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
        while True:
            try:
                muxed = await conn.muxer.accept_stream()
            except (ConnectionClosedError, trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if active[0] >= self.config.max_handler_streams_per_connection:
                await muxed.reset()
                continue
            active[0] += 1
            nursery.start_soon(self._handle_stream, conn, muxed, active)

    async def _handle_stream(self, conn: Connection, muxed: object, active: list[int]) -> None:
        from ..muxers.base import MuxedStream

        assert isinstance(muxed, MuxedStream)
        peer = conn.remote_peer
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
            spans.LIBP2P_STREAM_ID: muxed.stream_id,
            spans.LIBP2P_CONNECTION_ID: conn.id,
        }
        with self.tracer.start_as_current_span(spans.STREAM_HANDLE, attributes=attrs) as span:
            try:
                with trio.fail_after(self.config.negotiate_timeout):
                    protocol, stream = await negotiate_responder(
                        muxed,
                        lambda p: p in self._handlers
                        and (not conn.limited or self._handlers[p].allow_limited),
                        tracer=self.tracer,
                        peer=peer,
                    )
                span.set_attribute(spans.LIBP2P_PROTOCOL, protocol)
                net_stream = NetStream(stream, muxed, protocol, conn)
                self.metrics.record_stream(protocol, direction="inbound")
                await self._handlers[protocol].handler(net_stream)
            except trio.TooSlowError:
                spans.mark_error(span, RemoteProtocolError("protocol negotiation timed out"))
                await _reset_quietly(muxed)
            except (RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                attach_context(exc, peer=peer)
                log.info("stream %s from %s ended with an error: %s", muxed.stream_id, peer, exc)
                spans.mark_error(span, exc)
                await _reset_quietly(muxed)
            except Exception as exc:
                log.exception("handler for a stream from %s failed", peer)
                spans.mark_error(span, exc, side="local")
                await _reset_quietly(muxed)
            else:
                with trio.move_on_after(self.config.negotiate_timeout):
                    await muxed.aclose()
            finally:
                active[0] -= 1

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
        if self.identify is not None:
            self.identify.forget(conn)
        self.events.publish(ConnectionClosed(conn, reason))
        if not any(not c.is_closed for c in conns):
            self._connections.pop(peer, None)
            self.peerstore.protected.discard(peer)
            self.peerstore.update_addr_ttls(
                peer, AddrTTL.CONNECTED, AddrTTL.RECENTLY_CONNECTED, trio.current_time()
            )
            self.events.publish(PeerDisconnected(peer))

    async def disconnect(self, peer: PeerId) -> None:
        """Close every connection to ``peer``."""
        for conn in self.connections(peer):
            await self._close_quietly(conn, "local disconnect")

    # ================================================================== streams
    async def new_stream(
        self,
        peer: PeerId | Multiaddr | str,
        protocols: Sequence[str] | str,
        *,
        allow_limited: bool = False,
    ) -> NetStream:
        """Open a stream to ``peer`` speaking the first of ``protocols`` it accepts.

        Connects first if needed. The round trip of multistream-select is skipped when the
        peer is known (from identify) to speak the only protocol asked for.
        """
        if isinstance(protocols, str):
            protocols = (protocols,)
        conn = await self.connect(peer, allow_limited=allow_limited)
        if conn.limited and not allow_limited:
            raise LocalProtocolError(
                f"only a limited connection to {conn.remote_peer} exists; "
                "pass allow_limited=True for protocols that may run over it"
            )
        lazy = len(protocols) == 1 and protocols[0] in self.peerstore.protocols(conn.remote_peer)
        stream = await conn.new_stream(protocols, lazy=lazy)
        self.metrics.record_stream(stream.protocol, direction="outbound")
        return stream

    # ================================================================== built-in protocols
    async def ping(self, peer: PeerId | Multiaddr | str, count: int = 1) -> list[float]:
        """Ping ``peer`` ``count`` times over one stream; return the RTTs in ms."""
        stream = await self.new_stream(peer, PING_PROTOCOL, allow_limited=True)
        try:
            return await ping_stream(stream, count, tracer=self.tracer, peer=stream.remote_peer)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await stream.aclose()

    async def perf(
        self, peer: PeerId | Multiaddr | str, *, upload: int, download: int
    ) -> PerfResult:
        """Run a perf measurement against ``peer``."""
        stream = await self.new_stream(peer, PERF_PROTOCOL)
        try:
            return await perf_stream(
                stream, upload=upload, download=download, tracer=self.tracer,
                peer=stream.remote_peer,
            )
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await stream.aclose()

    async def identify_peer(self, peer: PeerId | Multiaddr | str) -> IdentifyInfo:
        """Connect if needed and return what identify told us about ``peer``."""
        if self.identify is None:
            raise LocalProtocolError("identify is disabled in this node's config")
        conn = await self.connect(peer)
        return await self.identify.wait_identified(conn)

    async def _serve_ping(self, stream: NetStream) -> None:
        with self.tracer.start_as_current_span(
            spans.PING,
            attributes={
                spans.LIBP2P_REMOTE_PEER_ID: str(stream.remote_peer),
                spans.LIBP2P_ROLE: "responder",
            },
        ) as span:
            answered = await handle_ping(stream)
            span.set_attribute("ping.count", answered)

    async def _serve_perf(self, stream: NetStream) -> None:
        with self.tracer.start_as_current_span(
            spans.PERF,
            attributes={
                spans.LIBP2P_REMOTE_PEER_ID: str(stream.remote_peer),
                spans.LIBP2P_ROLE: "responder",
            },
        ) as span:
            received, sent = await handle_perf(stream)
            span.set_attribute(spans.LIBP2P_BYTES_RECEIVED, received)
            span.set_attribute(spans.LIBP2P_BYTES_SENT, sent)

    def __repr__(self) -> str:
        return f"<Node {self.label} {self.peer_id.short()}>"


async def _close_raw(raw: RawConnection) -> None:
    with contextlib.suppress(Exception), trio.move_on_after(1.0):
        await raw.stream.aclose()


async def _reset_quietly(stream: object) -> None:
    with contextlib.suppress(Exception), trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await stream.reset()  # type: ignore[attr-defined]


def _reason_text(reason: object) -> str | None:
    if reason is None:
        return None
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)
