"""A simulated host: addresses, a UDP and a TCP stack, and ways to run a node on it."""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import LocalProtocolError
from .packet import Endpoint, Packet, canonical_ip, ip_version
from .tcp import SimTcpListener, SimTcpStream, TcpStack
from .udp import DEFAULT_RECEIVE_BUFFER, SimUdpSocket, UdpStack

if TYPE_CHECKING:
    from ..node import Node, NodeConfig
    from .network import Attachment, Network
    from .transport import SimTcpTransport

__all__ = ["EPHEMERAL_PORTS", "Host"]

#: Linux's net.ipv4.ip_local_port_range
EPHEMERAL_PORTS: Final = (32768, 60999)


class Host:
    """A machine on a subnet of a :class:`~flarelab.simnet.network.Network`.

    Made by ``network.add_host(...)`` or ``router.add_host(...)``. ``addresses`` lists its
    IPv4 address (first) and IPv6 address (if any).
    """

    def __init__(self, network: Network, name: str, addresses: list[str]) -> None:
        self.network = network
        self.name = name
        self.addresses = addresses
        self._address_set = frozenset(addresses)
        self.random = random.Random(network.random.getrandbits(64))
        self.tcp = TcpStack(self)
        self.udp = UdpStack(self)
        self._attachment: Attachment | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def ip(self) -> str | None:
        """The host's IPv4 address (None if it has none)."""
        return next((a for a in self.addresses if ip_version(a) == 4), None)

    @property
    def ip6(self) -> str | None:
        """The host's IPv6 address (None if it has none)."""
        return next((a for a in self.addresses if ip_version(a) == 6), None)

    def source_ip(self, dst_ip: str) -> str:
        """The address this host sends from to reach ``dst_ip`` (OSError if none fits)."""
        version = ip_version(dst_ip)
        for address in self.addresses:
            if ip_version(address) == version:
                return address
        raise OSError(errno.ENETUNREACH, f"{self.name} has no IPv{version} address")

    def ephemeral_port(self, in_use: Callable[[int], bool]) -> int:
        """A free port from the ephemeral range (random start, as Linux picks)."""
        low, high = EPHEMERAL_PORTS
        span = high - low + 1
        start = self.random.randrange(span)
        for i in range(span):
            port = low + (start + i) % span
            if not in_use(port):
                return port
        raise OSError(errno.EADDRNOTAVAIL, f"{self.name} has no free ephemeral port")

    # ------------------------------------------------------------------ sockets
    def udp_socket(self, bind: tuple[str, int] | tuple[Any, ...] = ("0.0.0.0", 0), *,
                   receive_buffer: int = DEFAULT_RECEIVE_BUFFER) -> SimUdpSocket:
        """A UDP socket bound to ``bind`` (ip, port); port 0 picks a free one."""
        ip = canonical_ip(bind[0]) if bind[0] not in ("", "0.0.0.0", "::") else (
            bind[0] or "0.0.0.0")
        return self.udp.bind(ip, int(bind[1]), receive_buffer)

    async def open_udp_socket(self, family: int, local: tuple[Any, ...]) -> SimUdpSocket:
        """A bound UDP socket, as a transport's socket factory makes one.

        The signature of the QUIC transport's ``SocketFactory``:
        ``await factory(family, (host, port))``; pass ``host.open_udp_socket``.
        """
        await trio.lowlevel.checkpoint()
        host = local[0] if local and local[0] not in ("", None) else (
            "::" if family == socket.AF_INET6 else "0.0.0.0")
        return self.udp_socket((host, int(local[1]) if len(local) > 1 else 0))

    def listen_tcp(self, port: int = 0, ip: str = "0.0.0.0", *, backlog: int = 128
                   ) -> SimTcpListener:
        """A TCP listener on (ip, port); port 0 picks a free one."""
        return self.tcp.listen(ip, port, backlog)

    async def connect_tcp(self, ip: str, port: int, *, source: Endpoint | None = None
                          ) -> SimTcpStream:
        """Connect to (ip, port), from ``source`` (ip, port) if given."""
        return await self.tcp.connect((ip, port), source=source)

    # ------------------------------------------------------------------ libp2p
    def transport(self, **kwargs: Any) -> SimTcpTransport:
        """A libp2p TCP transport on this host (see :class:`SimTcpTransport`)."""
        from .transport import SimTcpTransport

        return SimTcpTransport(self, **kwargs)

    def node(self, config: NodeConfig | None = None, **overrides: Any) -> Node:
        """A flarelab Node on this host (see :func:`flarelab.simnet.transport.make_node`)."""
        from .transport import make_node

        return make_node(self, config, **overrides)

    # ------------------------------------------------------------------ packets
    def send(self, packet: Packet) -> None:
        """Put a packet on the wire (or loop it back if it is for this host)."""
        network = self.network
        if not network.running:
            return
        stats = network.stats
        stats.sent += 1
        stats.bytes_sent += packet.size
        if network._captures:
            network._capture("sent", self.name, packet)
        if packet.dst[0] in self._address_set:
            network.call_at(trio.current_time(), self._receive, packet)
            return
        if self._attachment is None:
            raise LocalProtocolError(f"host {self.name} is not attached")
        network.transmit(packet, self._attachment)

    def _receive(self, packet: Packet) -> None:
        network = self.network
        if packet.dst[0] not in self._address_set:
            network.stats.unroutable += 1
            return
        network.stats.delivered += 1
        if network._captures:
            network._capture("delivered", self.name, packet)
        proto = packet.proto
        if proto == "tcp":
            taken = self.tcp.receive(packet)
        elif proto == "udp":
            taken = self.udp.receive(packet)
        else:
            taken = True  # ICMP errors: hosts take note of nothing
        if not taken:
            network.stats.refused += 1

    def _shutdown(self) -> None:
        self.tcp.shutdown()
        self.udp.close_all()

    def __repr__(self) -> str:
        return f"<Host {self.name} {' '.join(self.addresses)}>"
