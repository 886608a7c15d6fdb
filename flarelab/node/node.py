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
from typing import TYPE_CHECKING

import trio

from ..errors import LocalProtocolError, RemoteProtocolError
from ..identity import Ed25519PrivateKey, PeerId
from ..multiaddr import Multiaddr
from ..netif import interface_addresses
from ..protocols.perf import PERF_PROTOCOL, PerfResult, handle_perf, perf_stream
from ..protocols.ping import PING_PROTOCOL, handle_ping, ping_stream
from ..tracing import spans
from ..tracing.metrics import NodeMetrics
from ..tracing.provider import NodeTracing, TracingConfig
from ..transports.base import SecuredConnection
from ..transports.tcp import TcpTransport
from .config import NodeConfig
from .connection import Connection, NetStream
from .dialer import Dialer
from .events import EventBus, ListenAddressesChanged, LocalAddressesChanged
from .observed import ObservedAddrManager
from .peerstore import Peerstore
from .swarm import Handler, HandlerRegistry, Swarm, close_quietly
from .upgrader import Upgrader

if TYPE_CHECKING:
    from ..flare import Flare
    from ..protocols.identify import IdentifyInfo
    from ..protocols.identify_service import IdentifyService
    from ..transports.base import Listener, RawConnection, Transport

__all__ = ["Handler", "Node"]

log = logging.getLogger("flarelab.node")


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
        if not transports and config.enable_quic:
            from ..transports.quic import QuicTransport

            self.transports.append(
                QuicTransport(
                    self.key, config=config.quic, reuse_port=config.reuse_port, tracer=self.tracer
                )
            )
        self.upgrader = Upgrader(
            local_key=self.key,
            muxers=config.muxers,
            yamux=config.yamux,
            mplex=config.mplex,
            tracer=self.tracer,
        )
        self.handlers = HandlerRegistry(on_change=self._protocols_changed)
        self.swarm = Swarm(
            config=config,
            handlers=self.handlers,
            peerstore=self.peerstore,
            events=self.events,
            metrics=self.metrics,
            tracer=self.tracer,
        )
        self.dialer = Dialer(
            local_peer=self.peer_id,
            config=config,
            transports=self.transports,
            swarm=self.swarm,
            peerstore=self.peerstore,
            metrics=self.metrics,
            tracer=self.tracer,
            upgrade_and_run=lambda raw, peer: self.upgrade_and_run(
                raw, expected_peer=peer, is_initiator=True
            ),
        )
        self._listeners: list[Listener] = []
        self._pending_inbound = 0
        self._nursery: trio.Nursery | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._closing = False
        #: extra addresses to advertise (relay addresses, port mappings...), by source name
        self.extra_addrs: dict[str, list[Multiaddr]] = {}
        #: hooks that may claim the roles of an inbound raw connection: (raw) -> (expected
        #: peer, is_initiator) or None. DCUtR: B's SYN of a TCP simultaneous open that
        #: reached A's listener still makes A the client of the handshakes.
        self.inbound_role_hooks: list[
            Callable[[RawConnection], tuple[PeerId | None, bool] | None]
        ] = []
        #: filters of the advertised addresses, by source name (Flare hides addresses
        #: nobody can dial while AutoNAT says we are private)
        self.address_filters: dict[str, Callable[[list[Multiaddr]], list[Multiaddr]]] = {}
        #: awaited once the node listens, in order (services that need the nursery)
        self.start_hooks: list[Callable[[], Awaitable[None]]] = []

        self.identify: IdentifyService | None = None
        if config.enable_identify:
            from ..protocols.identify_service import IdentifyService

            self.identify = IdentifyService(self)
            self.swarm.on_open.append(self.identify.identify_connection)
            self.swarm.on_close.append(self.identify.forget)
        if config.enable_ping:
            self.set_handler(PING_PROTOCOL, self._serve_ping, allow_limited=True)
        if config.enable_perf:
            self.set_handler(PERF_PROTOCOL, self._serve_perf)
        #: the Flare orchestrator, when ``config.flare`` (or enable_flare) turned it on
        self.flare: Flare | None = None
        if config.flare is not None:
            from ..flare import enable_flare

            enable_flare(self, config.flare)

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
            for hook in list(self.start_hooks):
                await hook()
        except BaseException as exc:
            await self._shutdown()
            try:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
            finally:
                self.tracing.shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        await self._shutdown()
        assert self._exit_stack is not None
        try:
            return await self._exit_stack.__aexit__(*exc_info)  # type: ignore[arg-type]
        finally:
            # only now: the node's tasks have ended their spans (connections, streams)
            self.tracing.shutdown()

    async def aclose(self) -> None:
        """Close listeners and connections and stop every task (``__aexit__`` does this;
        spans are flushed when the ``async with`` block exits)."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        with trio.CancelScope(shield=True):
            for listener in list(self._listeners):
                with contextlib.suppress(Exception):
                    await listener.aclose()
            await self.swarm.close_all("node shutting down")
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self.events.close()

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
        self.handlers.set(protocol, handler, allow_limited=allow_limited)

    def remove_handler(self, protocol: str) -> None:
        """Stop serving ``protocol``."""
        self.handlers.remove(protocol)

    def protocols(self) -> list[str]:
        """The protocols we serve, sorted."""
        return self.handlers.protocols()

    def _protocols_changed(self) -> None:
        if getattr(self, "identify", None) is not None:
            self.identify.schedule_push()  # type: ignore[union-attr]

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
                    _, rest = addr.split_first()
                    for local in interface_addresses(family):
                        out.append(Multiaddr(f"/ip{ip.version}/{local}").encapsulate(rest))
                else:
                    out.append(addr)
        return list(dict.fromkeys(out))

    def advertised_addrs(self) -> list[Multiaddr]:
        """Addresses we tell peers about: listen addresses, confirmed observations, extras."""
        addrs = self.listen_addrs()
        addrs += self.observed_addrs.confirmed(trio.current_time())
        for extra in self.extra_addrs.values():
            addrs += extra
        addrs = list(dict.fromkeys(addrs))
        for keep in self.address_filters.values():
            addrs = keep(addrs)
        return addrs

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
        return self.swarm.connections(peer)

    def connected_peers(self) -> list[PeerId]:
        """Peers we have at least one open connection to."""
        return self.swarm.connected_peers()

    def best_connection(self, peer: PeerId, *, allow_limited: bool = True) -> Connection | None:
        """The connection new streams to ``peer`` use: unlimited first, then the oldest."""
        return self.swarm.best_connection(peer, allow_limited=allow_limited)

    async def connect(
        self,
        target: PeerId | Multiaddr | str,
        addrs: Sequence[Multiaddr | str] = (),
        *,
        allow_limited: bool = True,
        force_new: bool = False,
        reuse_port: bool | None = None,
    ) -> Connection:
        """Return a connection to ``target``, reusing an open one unless ``force_new``.

        ``target`` is a peer id (addresses come from ``addrs`` and the peerstore) or a
        multiaddr (with ``/p2p/<id>`` the peer is authenticated against it; without, we
        connect to whoever answers). ``reuse_port``: True dials from a listen port, False
        from an ephemeral one (AutoNAT dial-backs), None as the transports are configured.
        """
        return await self.dialer.connect(
            target, addrs, allow_limited=allow_limited, force_new=force_new,
            reuse_port=reuse_port,
        )

    async def upgrade_and_run(
        self,
        raw: RawConnection | SecuredConnection,
        *,
        expected_peer: PeerId | None,
        is_initiator: bool,
        limited: bool = False,
    ) -> Connection:
        """Upgrade a raw connection (if it is one) and run it in the node's nursery.

        ``is_initiator`` is the role in the security and muxer handshakes (DCUtR's TCP
        simultaneous open decides it by protocol, not by who dialled).
        """
        if isinstance(raw, SecuredConnection):
            conn = self._adopt(raw, limited=limited)
            return await self.nursery.start(self.swarm.run, conn)
        try:
            conn = await self._upgrade(
                raw, expected_peer=expected_peer, is_initiator=is_initiator, limited=limited
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await _close_raw(raw)
            raise
        return await self.nursery.start(self.swarm.run, conn)

    async def _upgrade(
        self,
        raw: RawConnection,
        *,
        expected_peer: PeerId | None,
        is_initiator: bool,
        limited: bool = False,
    ) -> Connection:
        direction = "outbound" if raw.is_initiator else "inbound"
        limited = limited or raw.limited
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_DIRECTION: direction,
            spans.LIBP2P_ROLE: "initiator" if is_initiator else "responder",
            spans.LIBP2P_MULTIADDR: str(raw.remote_addr),
            spans.LIBP2P_LOCAL_MULTIADDR: str(raw.local_addr),
            spans.NETWORK_TRANSPORT: raw.transport,
        }
        with self.tracer.start_as_current_span(spans.NODE_UPGRADE, attributes=attrs) as span:
            started = trio.current_time()
            progress: list[str] = []
            try:
                with trio.fail_after(self.config.handshake_timeout):
                    result = await self.upgrader.upgrade(
                        raw.stream,
                        is_initiator=is_initiator,
                        expected_peer=expected_peer,
                        progress=progress,
                    )
            except trio.TooSlowError:
                err = RemoteProtocolError(
                    f"handshake did not finish within {self.config.handshake_timeout} s",
                    peer=expected_peer or str(raw.remote_addr),
                    protocol=progress[-1] if progress else None,
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
            span.set_attribute(spans.LIBP2P_EARLY_MUXER, result.early_muxer)
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

    def _adopt(self, secured: SecuredConnection, *, limited: bool = False) -> Connection:
        """Wrap a connection its transport secured and multiplexed (QUIC)."""
        return Connection(
            muxer=secured.muxer,
            remote_peer=secured.remote_peer,
            remote_public_key=secured.remote_public_key,
            local_addr=secured.local_addr,
            remote_addr=secured.remote_addr,
            direction="outbound" if secured.is_initiator else "inbound",
            transport=secured.transport,
            security=secured.security,
            limited=limited,
            tracer=self.tracer,
            negotiate_timeout=self.config.negotiate_timeout,
        )

    async def _on_inbound(self, raw: RawConnection | SecuredConnection) -> None:
        """Handle one inbound connection (runs as the transport's handler task)."""
        if self._closing or self._pending_inbound >= self.config.max_pending_inbound or (
            len(self.connections()) >= self.config.max_connections
        ):
            self.metrics.record_refused(transport=raw.transport)
            await _close_raw(raw)
            return
        if isinstance(raw, SecuredConnection):
            conn = self._adopt(raw)
            if len(self.connections(conn.remote_peer)) >= self.config.max_connections_per_peer:
                await close_quietly(conn, "per-peer connection limit")
                return
            await self.swarm.run(conn)
            return
        self._pending_inbound += 1
        expected, is_initiator = next(
            (c for hook in self.inbound_role_hooks if (c := hook(raw)) is not None), (None, False)
        )
        try:
            conn = await self._upgrade(raw, expected_peer=expected, is_initiator=is_initiator)
        except Exception as exc:
            log.info("inbound connection from %s failed its handshake: %s", raw.remote_addr, exc)
            with trio.CancelScope(shield=True):
                await _close_raw(raw)
            return
        finally:
            self._pending_inbound -= 1
        if len(self.connections(conn.remote_peer)) >= self.config.max_connections_per_peer:
            log.info("refusing connection %s: per-peer limit reached", conn)
            await close_quietly(conn, "per-peer connection limit")
            return
        await self.swarm.run(conn)

    async def disconnect(self, peer: PeerId) -> None:
        """Close every connection to ``peer``."""
        for conn in self.connections(peer):
            await close_quietly(conn, "local disconnect")

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


async def _close_raw(raw: RawConnection | SecuredConnection) -> None:
    with contextlib.suppress(Exception), trio.move_on_after(1.0):
        if isinstance(raw, SecuredConnection):
            await raw.muxer.aclose()
        else:
            await raw.stream.aclose()
