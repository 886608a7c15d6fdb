"""QuicTransport: ``/ip4|ip6|dns*/<host>/udp/<port>/quic-v1`` for the node.

QUIC secures (libp2p TLS 1.3) and multiplexes (native streams) by itself, so ``dial``
returns and the listener hands out :class:`~flarelab.transports.base.SecuredConnection`
objects with an authenticated peer, which the node adopts without an upgrade.

Dials leave from a listening socket of the same address family when there is one (the
NAT mapping a peer learned about is for that port, which hole punching needs); otherwise
from a fresh ephemeral socket that lives as long as the connection. The socket factory is
pluggable so the simulated network can supply virtual UDP sockets.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import Span, Tracer

from ...errors import DialError, FlarelabError, attach_context
from ...identity import PeerId, PrivateKey
from ...multiaddr import Multiaddr
from ...tracing import spans
from ..base import (
    ConnectionHandler,
    Listener,
    SecuredConnection,
    Transport,
    address_family,
    transport_target,
)
from .config import INITIAL_RESENT_COUNT, InitialResend, QuicConfig
from .sockets import DatagramSocket, SocketFactory, open_udp_socket

if TYPE_CHECKING:
    from .driver import QuicConnection
    from .endpoint import QuicEndpoint
    from .tls import CredentialCache

# aioquic and the modules built on it load on first use (listen, dial, punch): a node
# that never speaks QUIC does not pay for them

__all__ = ["QuicListener", "QuicTransport", "quic_target"]

log = logging.getLogger("flarelab.quic")

#: the bytes a punch sends when not told what to send (DCUtR: random bytes)
PUNCH_SIZE = 64


def quic_target(addr: Multiaddr) -> tuple[str, str, int] | None:
    """Return (kind, host, port) for /ip4|ip6|dns|dns4|dns6/<host>/udp/<port>/quic-v1[/p2p/..]."""
    return transport_target(addr, ("udp", "quic-v1"))


@dataclass(eq=False)
class QuicListener(Listener):
    """A listening QUIC endpoint."""

    endpoint: QuicEndpoint
    addrs: list[Multiaddr]  # type: ignore[misc]

    async def aclose(self) -> None:
        """Accept no more connections; those already accepted keep running."""
        self.endpoint.stop_listening()
        await trio.lowlevel.checkpoint()


class QuicTransport(Transport):
    """The QUIC transport (quic-v1, libp2p TLS, native streams) on aioquic's core."""

    name = "quic"
    supports_reuse_port = True

    def __init__(
        self,
        host_key: PrivateKey,
        *,
        config: QuicConfig | None = None,
        socket_factory: SocketFactory | None = None,
        reuse_port: bool = True,
        tracer: Tracer = spans.NO_TRACER,
    ) -> None:
        self.host_key = host_key
        self.config = config or QuicConfig()
        self.socket_factory = socket_factory or self.config.socket_factory or open_udp_socket
        self.reuse_port = reuse_port
        self.tracer = tracer
        self._credentials: CredentialCache | None = None
        self._listening: list[QuicEndpoint] = []

    @property
    def credentials(self) -> CredentialCache:
        """Fresh TLS credentials for every connection (one made ahead, when idle)."""
        if self._credentials is None:
            from .core import utc_now
            from .tls import CredentialCache

            self._credentials = CredentialCache(self.host_key, utc_now)
        return self._credentials

    @property
    def endpoints(self) -> list[QuicEndpoint]:
        """The listening endpoints (dial sources for hole punching)."""
        return list(self._listening)

    # ------------------------------------------------------------------ addresses

    def can_dial(self, addr: Multiaddr) -> bool:
        return quic_target(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        target = quic_target(addr)
        return target is not None and target[0] in ("ip4", "ip6") and addr.peer_id is None

    async def _resolve(self, kind: str, host: str, port: int) -> list[tuple[str, int]]:
        from .endpoint import canonical_address

        if kind in ("ip4", "ip6"):
            return [canonical_address((host, port))]
        family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(kind, socket.AF_UNSPEC)
        infos = await trio.socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        out: list[tuple[str, int]] = []
        for _, _, _, _, sockaddr in infos:
            entry = canonical_address((str(sockaddr[0]), port))
            if entry not in out:
                out.append(entry)
        return out

    def source_endpoint(
        self, dest_host: str, *, reuse_port: bool | None = None
    ) -> QuicEndpoint | None:
        """The listening endpoint a dial to ``dest_host`` leaves from (None: a new socket).

        ``reuse_port`` overrides the transport's setting for one dial (None: keep it).
        """
        if not (self.reuse_port if reuse_port is None else reuse_port):
            return None
        family = address_family(dest_host)
        dest = ipaddress.ip_address(dest_host.split("%", 1)[0])
        wildcard = None
        for endpoint in self._listening:
            if endpoint.family != family or not endpoint.listening:
                continue
            ip = ipaddress.ip_address(endpoint.bound[0].split("%", 1)[0])
            if ip.is_unspecified:
                wildcard = wildcard or endpoint
            elif ip.is_loopback == dest.is_loopback:
                return endpoint
        return wildcard

    # ------------------------------------------------------------------ dial

    async def dial(
        self,
        addr: Multiaddr,
        *,
        expected_peer: PeerId | None = None,
        reuse_port: bool | None = None,
        resend_initial: InitialResend | None = None,
    ) -> SecuredConnection:
        """Connect to ``addr``; ``reuse_port=False`` dials from a fresh ephemeral socket.

        ``resend_initial``: a hole-punch dial's schedule for copies of its first flight
        (None, as for ordinary dials: QUIC's own loss recovery only).
        """
        target = quic_target(addr)
        if target is None:
            raise ValueError(f"not a QUIC address: {addr}")
        expected = expected_peer or addr.peer_id
        kind, host, port = target
        with self.tracer.start_as_current_span(
            spans.QUIC_DIAL,
            attributes={
                spans.NETWORK_TRANSPORT: "udp",
                spans.NETWORK_PEER_ADDRESS: host,
                spans.NETWORK_PEER_PORT: port,
                spans.LIBP2P_MULTIADDR: str(addr),
                spans.LIBP2P_TRANSPORT: "quic-v1",
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                remotes = await self._resolve(kind, host, port)
                errors: list[tuple[object, BaseException]] = []
                for remote in remotes:
                    try:
                        with trio.fail_after(self.config.handshake_timeout):
                            conn = await self._dial_one(
                                remote, expected, span, reuse_port, resend_initial)
                    except trio.TooSlowError:
                        timeout = TimeoutError(
                            f"QUIC handshake with {addr} did not finish within "
                            f"{self.config.handshake_timeout} s"
                        )
                        if len(remotes) == 1:
                            raise timeout from None
                        errors.append((remote, timeout))
                        continue
                    except (OSError, FlarelabError) as exc:
                        attach_context(exc, peer=expected)
                        if len(remotes) == 1:
                            raise
                        errors.append((remote, exc))
                        continue
                    span.set_attribute(spans.LIBP2P_REMOTE_PEER_ID, str(conn.peer))
                    span.set_attribute(spans.LIBP2P_LOCAL_MULTIADDR, str(conn.endpoint.local_addr))
                    span.set_attribute(spans.LIBP2P_REUSE_PORT, conn.endpoint.owner is None)
                    span.set_attribute(spans.LIBP2P_QUIC_ODCID, conn.details()["odcid"])
                    if resend_initial is not None:
                        span.set_attribute(INITIAL_RESENT_COUNT, conn.initial_resent)
                    return self._secured(conn)
                raise DialError(
                    f"could not reach {addr}" if remotes else f"{host} resolved to no address",
                    attempts=errors,
                    peer=expected,
                )
            except BaseException as exc:
                if not isinstance(exc, trio.Cancelled):
                    spans.mark_error(span, exc)
                raise

    async def _dial_one(
        self,
        remote: tuple[str, int],
        expected: PeerId | None,
        span: Span,
        reuse_port: bool | None = None,
        resend_initial: InitialResend | None = None,
    ) -> QuicConnection:
        endpoint = self.source_endpoint(remote[0], reuse_port=reuse_port)
        if endpoint is not None:
            return await endpoint.connect(remote, expected_peer=expected, parent_span=span,
                                          resend_initial=resend_initial)
        wildcard = "::" if address_family(remote[0]) == socket.AF_INET6 else "0.0.0.0"
        sock = await self.socket_factory(address_family(remote[0]), (wildcard, 0))
        endpoint = self._endpoint(sock)
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(endpoint.serve)
                try:
                    conn = await endpoint.connect(remote, expected_peer=expected, parent_span=span,
                                                  resend_initial=resend_initial)
                except (OSError, FlarelabError, trio.ClosedResourceError) as exc:
                    failure = exc  # raised below, outside the nursery (no ExceptionGroup)
                finally:
                    nursery.cancel_scope.cancel()
        except BaseException:
            endpoint.close()
            raise
        if failure is not None:
            endpoint.close()
            raise failure
        # the connection's run() serves its endpoint from now on
        endpoint.owner = conn
        return conn

    def _endpoint(self, sock: DatagramSocket) -> QuicEndpoint:
        from .endpoint import QuicEndpoint

        return QuicEndpoint(
            sock, credentials=self.credentials, config=self.config, tracer=self.tracer
        )

    def _secured(self, conn: QuicConnection) -> SecuredConnection:
        from .endpoint import quic_multiaddr
        from .tls import TLS_PROTOCOL_ID

        assert conn.peer is not None and conn.remote_public_key is not None
        return SecuredConnection(
            muxer=conn,
            remote_peer=conn.peer,
            remote_public_key=conn.remote_public_key,
            local_addr=conn.endpoint.local_addr,
            remote_addr=quic_multiaddr(*conn.remote),
            is_initiator=conn.is_initiator,
            transport=self.name,
            security=TLS_PROTOCOL_ID,
            details=conn.details(),
        )

    # ------------------------------------------------------------------ listen

    async def listen(
        self,
        addr: Multiaddr,
        handler: ConnectionHandler,
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        target = quic_target(addr)
        if target is None or target[0] not in ("ip4", "ip6"):
            raise ValueError(f"cannot listen on {addr}")
        _, host, port = target
        sock = await self.socket_factory(address_family(host), (host, port))
        endpoint = self._endpoint(sock)
        listener = QuicListener(endpoint=endpoint, addrs=[endpoint.local_addr])

        def on_inbound(conn: QuicConnection) -> None:
            handler_nursery.start_soon(handler, self._secured(conn))

        endpoint.start_listening(on_inbound)
        with self.tracer.start_as_current_span(
            spans.QUIC_LISTEN, attributes={spans.LIBP2P_LOCAL_MULTIADDR: str(endpoint.local_addr)}
        ):
            pass
        self._listening.append(endpoint)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(endpoint.serve)
                task_status.started(listener)
        finally:
            self._listening.remove(endpoint)
            endpoint.close()

    # ------------------------------------------------------------------ hole punching

    async def punch(self, addr: Multiaddr, data: bytes | None = None, *, count: int = 1) -> None:
        """Send ``count`` datagrams (random bytes unless ``data``) to ``addr`` from the
        listening socket a dial to it would use: DCUtR's QUIC hole punch."""
        target = quic_target(addr)
        if target is None or target[0] not in ("ip4", "ip6"):
            raise ValueError(f"cannot punch towards {addr}")
        from .endpoint import canonical_address

        _, host, port = target
        remote = canonical_address((host, port))
        endpoint = self.source_endpoint(remote[0])
        if endpoint is None:
            raise DialError(f"no QUIC listen socket to punch {addr} from")
        with self.tracer.start_as_current_span(
            spans.QUIC_PUNCH,
            attributes={
                spans.NETWORK_PEER_ADDRESS: remote[0],
                spans.NETWORK_PEER_PORT: remote[1],
                spans.LIBP2P_LOCAL_MULTIADDR: str(endpoint.local_addr),
                spans.LIBP2P_QUIC_DATAGRAMS: count,
            },
        ) as span:
            sent = 0
            for _ in range(count):
                payload = data if data is not None else os.urandom(PUNCH_SIZE)
                await endpoint.send_raw(payload, remote)
                sent += len(payload)
            span.set_attribute(spans.LIBP2P_BYTES_SENT, sent)
