"""TCP on trio: listen and dial, IPv4 and IPv6, dials that leave from the listen port.

Hole punching needs an outbound dial to leave from the port we listen on (the NAT mapping
the peer learned about is for that port), so every socket sets ``SO_REUSEADDR`` and
``SO_REUSEPORT`` and a dial binds to a listener's port when one fits the destination, as
go-libp2p's reuseport transport does. ``trio.SocketStream`` sets ``TCP_NODELAY``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

import trio
from opentelemetry.trace import Tracer

from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..tracing import spans
from .base import (
    ConnectionHandler,
    Listener,
    RawConnection,
    Transport,
    address_family,
    transport_target,
)

__all__ = ["TcpListener", "TcpTransport"]

_REUSE_FAILURES = {errno.EADDRINUSE, errno.EADDRNOTAVAIL}


def _tcp_target(addr: Multiaddr) -> tuple[str, str, int] | None:
    """Return (kind, host, port) for /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/..]."""
    return transport_target(addr, ("tcp",))


def _sockaddr_multiaddr(sockaddr: tuple) -> Multiaddr:  # type: ignore[type-arg]
    return Multiaddr.from_ip_port(sockaddr[0], sockaddr[1], "tcp")


@dataclass(eq=False)
class TcpListener(Listener):
    """A bound, listening TCP socket."""

    socket_listener: trio.SocketListener
    bound: tuple[str, int]
    addrs: list[Multiaddr]  # type: ignore[misc]

    @property
    def family(self) -> int:
        return address_family(self.bound[0])

    async def aclose(self) -> None:
        await self.socket_listener.aclose()


class TcpTransport(Transport):
    """The TCP transport.

    ``reuse_port``: bind dials to a listener's port when one fits the destination.
    ``connect_timeout``: seconds for the TCP handshake of one dial.
    """

    name = "tcp"
    supports_reuse_port = True

    def __init__(
        self,
        *,
        reuse_port: bool = True,
        connect_timeout: float = 10.0,
        backlog: int = 128,
        tracer: Tracer = spans.NO_TRACER,
    ) -> None:
        self.reuse_port = reuse_port
        self.connect_timeout = connect_timeout
        self.backlog = backlog
        self.tracer = tracer
        self._listeners: list[TcpListener] = []

    # ------------------------------------------------------------------ dial
    def can_dial(self, addr: Multiaddr) -> bool:
        return _tcp_target(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        target = _tcp_target(addr)
        return target is not None and target[0] in ("ip4", "ip6") and addr.peer_id is None

    async def _resolve(self, kind: str, host: str, port: int) -> list[tuple[int, str]]:
        if kind in ("ip4", "ip6"):
            return [(address_family(host), host)]
        family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(kind, socket.AF_UNSPEC)
        infos = await trio.socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        seen: list[tuple[int, str]] = []
        for fam, _, _, _, sockaddr in infos:
            entry = (int(fam), str(sockaddr[0]))
            if entry not in seen:
                seen.append(entry)
        return seen

    def reuse_source(
        self, family: int, dest_ip: str, *, reuse_port: bool | None = None
    ) -> tuple[str, int] | None:
        """The (ip, port) a dial to ``dest_ip`` should bind to, or None for an ephemeral port.

        ``reuse_port`` overrides the transport's setting for one dial (None: keep it).
        """
        if not (self.reuse_port if reuse_port is None else reuse_port):
            return None
        dest = ipaddress.ip_address(dest_ip)
        wildcard = None
        for lst in self._listeners:
            if lst.family != family:
                continue
            ip = ipaddress.ip_address(lst.bound[0])
            if ip.is_unspecified:
                wildcard = wildcard or lst.bound
            elif ip.is_loopback == dest.is_loopback:
                return lst.bound
        return wildcard

    async def _connect(
        self, family: int, ip: str, port: int, source: tuple[str, int] | None
    ) -> trio.SocketStream:
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if source is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                await sock.bind(source)
            with trio.fail_after(self.connect_timeout):
                await sock.connect((ip, port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    async def dial(
        self,
        addr: Multiaddr,
        *,
        expected_peer: PeerId | None = None,
        reuse_port: bool | None = None,
    ) -> RawConnection:
        """Connect to ``addr``; ``reuse_port=False`` leaves from an ephemeral port."""
        target = _tcp_target(addr)
        if target is None:
            raise ValueError(f"not a TCP address: {addr}")
        kind, host, port = target
        with self.tracer.start_as_current_span(
            spans.TCP_DIAL,
            attributes={
                spans.NETWORK_TRANSPORT: "tcp",
                spans.NETWORK_PEER_ADDRESS: host,
                spans.NETWORK_PEER_PORT: port,
                spans.LIBP2P_MULTIADDR: str(addr),
            },
        ) as span:
            last_error: BaseException | None = None
            for family, ip in await self._resolve(kind, host, port):
                source = self.reuse_source(family, ip, reuse_port=reuse_port)
                try:
                    try:
                        stream = await self._connect(family, ip, port, source)
                    except OSError as exc:
                        if source is None or exc.errno not in _REUSE_FAILURES:
                            raise
                        # the same 4-tuple exists already: fall back to an ephemeral port
                        span.add_event(spans.TCP_REUSE_PORT_FAILED, {"error": str(exc)})
                        source = None
                        stream = await self._connect(family, ip, port, None)
                except (OSError, trio.TooSlowError) as exc:
                    last_error = exc
                    continue
                local = stream.socket.getsockname()
                span.set_attribute(spans.NETWORK_LOCAL_ADDRESS, str(local[0]))
                span.set_attribute(spans.NETWORK_LOCAL_PORT, int(local[1]))
                span.set_attribute(spans.LIBP2P_REUSE_PORT, source is not None)
                return RawConnection(
                    stream=stream,
                    local_addr=_sockaddr_multiaddr(local),
                    remote_addr=_sockaddr_multiaddr(stream.socket.getpeername()),
                    is_initiator=True,
                    transport="tcp",
                    details={"reuse_port": source is not None},
                )
            assert last_error is not None
            spans.mark_error(span, last_error, side="remote")
            if isinstance(last_error, trio.TooSlowError):
                raise TimeoutError(f"TCP connect to {addr} timed out") from last_error
            raise last_error

    # ------------------------------------------------------------------ listen
    async def listen(
        self,
        addr: Multiaddr,
        handler: ConnectionHandler,
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        target = _tcp_target(addr)
        if target is None or target[0] not in ("ip4", "ip6"):
            raise ValueError(f"cannot listen on {addr}")
        _, host, port = target
        family = address_family(host)
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind((host, port))
            sock.listen(self.backlog)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        listener = TcpListener(
            socket_listener=trio.SocketListener(sock),
            bound=(str(bound[0]), int(bound[1])),
            addrs=[Multiaddr.from_ip_port(bound[0], bound[1], "tcp")],
        )
        self._listeners.append(listener)
        with self.tracer.start_as_current_span(
            spans.TCP_LISTEN, attributes={spans.LIBP2P_LOCAL_MULTIADDR: str(listener.addrs[0])}
        ):
            pass
        task_status.started(listener)
        try:
            while True:
                try:
                    stream = await listener.socket_listener.accept()
                except trio.ClosedResourceError:
                    return
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        # out of descriptors: back off instead of spinning (as trio does)
                        await trio.sleep(0.1)
                        continue
                    raise
                try:
                    local, remote = stream.socket.getsockname(), stream.socket.getpeername()
                except OSError:  # reset before we looked at it
                    await stream.aclose()
                    continue
                conn = RawConnection(
                    stream=stream,
                    local_addr=_sockaddr_multiaddr(local),
                    remote_addr=_sockaddr_multiaddr(remote),
                    is_initiator=False,
                    transport="tcp",
                )
                handler_nursery.start_soon(handler, conn)
        finally:
            self._listeners.remove(listener)
            with trio.CancelScope(shield=True):
                await listener.socket_listener.aclose()
