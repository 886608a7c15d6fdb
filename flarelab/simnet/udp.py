"""Virtual UDP sockets with the small interface of ``trio.socket`` UDP sockets.

``await sock.sendto(data, (ip, port))``, ``await sock.recvfrom(bufsize)``,
``sock.getsockname()``, ``sock.close()``; bound when made (``host.udp_socket(bind)``). A
transport written against trio sockets (QUIC) runs on them unchanged. Like a kernel socket
the receive queue is bounded (datagrams beyond it are dropped, as UDP drops them) and
``recvfrom`` truncates a datagram longer than ``bufsize``. Addresses come back as
``(ip, port)`` for IPv4 and ``(ip, port, 0, 0)`` for IPv6, as Python's sockets give them.
"""

from __future__ import annotations

import builtins
import errno
import os
import socket
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final

import trio

from .packet import Endpoint, Packet, canonical_ip, ip_version

if TYPE_CHECKING:
    from .host import Host

__all__ = ["MAX_DATAGRAM", "SimUdpSocket", "UdpStack"]

#: the largest UDP payload IPv4 can carry
MAX_DATAGRAM: Final = 65507
#: default receive queue, bytes (Linux net.core.rmem_default)
DEFAULT_RECEIVE_BUFFER: Final = 212_992

SockAddr = tuple[str, int] | tuple[str, int, int, int]


def _os_error(code: int, detail: str = "") -> OSError:
    message = os.strerror(code) + (f": {detail}" if detail else "")
    return OSError(code, message)


def _sockaddr(endpoint: Endpoint) -> SockAddr:
    ip, port = endpoint
    return (ip, port, 0, 0) if ":" in ip else (ip, port)


class SimUdpSocket:
    """A bound UDP socket on a simulated host (see the module docstring)."""

    type: socket.SocketKind = socket.SOCK_DGRAM

    def __init__(self, stack: UdpStack, local: Endpoint, receive_buffer: int) -> None:
        self._stack = stack
        self._local = local
        self.family = socket.AF_INET6 if ip_version(local[0]) == 6 else socket.AF_INET
        self._queue: deque[tuple[bytes, Endpoint]] = deque()
        self._queued_bytes = 0
        self._receive_buffer = receive_buffer
        self._lot = trio.lowlevel.ParkingLot()
        self._receiving = False
        self._closed = False
        #: datagrams dropped because the receive queue was full
        self.dropped = 0

    @property
    def host(self) -> Host:
        """The host the socket lives on."""
        return self._stack.host

    def getsockname(self) -> SockAddr:
        """The bound address (a wildcard address stays a wildcard, as with real sockets)."""
        if self._closed:
            raise _os_error(errno.EBADF)
        return _sockaddr(self._local)

    def fileno(self) -> int:
        """-1 when closed, else a fake descriptor (some code checks it)."""
        return -1 if self._closed else 1_000_000 + self._local[1]

    async def sendto(self, data: bytes | bytearray | memoryview, address: tuple) -> int:  # type: ignore[type-arg]
        """Send one datagram to ``address`` (an IP literal and a port); return its size."""
        await trio.lowlevel.checkpoint()
        return self._send(data, address)

    def _send(self, data: bytes | bytearray | memoryview, address: tuple) -> int:  # type: ignore[type-arg]
        if self._closed:
            raise _os_error(errno.EBADF)
        payload = bytes(data)
        if len(payload) > MAX_DATAGRAM:
            raise _os_error(errno.EMSGSIZE)
        try:
            ip = canonical_ip(address[0])
            port = int(address[1])
        except (ValueError, TypeError, IndexError):
            raise _os_error(errno.EINVAL, f"bad address {address!r}") from None
        if not 0 < port <= 65535:
            raise _os_error(errno.EINVAL, f"bad port {port}")
        if ip_version(ip) != ip_version(self._local[0]):
            raise _os_error(errno.EAFNOSUPPORT, f"{ip} from a socket bound to {self._local[0]}")
        host = self._stack.host
        host.network.check_running()
        source = (host.source_ip(ip) if self._local[0] in ("0.0.0.0", "::")
                  else self._local[0], self._local[1])
        host.send(Packet("udp", source, (ip, port), payload))
        return len(payload)

    async def recvfrom(self, bufsize: int) -> tuple[bytes, SockAddr]:
        """Wait for a datagram; return (its first ``bufsize`` bytes, the sender's address)."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this socket")
        if bufsize < 1:
            raise ValueError("bufsize must be at least 1")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise _os_error(errno.EBADF)
            while not self._queue:
                await self._lot.park()
                if self._closed:
                    raise trio.ClosedResourceError("the socket was closed")
            data, source = self._queue.popleft()
            self._queued_bytes -= len(data)
            return data[:bufsize], _sockaddr(source)
        finally:
            self._receiving = False

    async def receive_batch(self, max_count: int) -> list[tuple[bytes, SockAddr]]:
        """Wait for at least one datagram; return all that are queued (up to ``max_count``).

        With :meth:`send_batch`, what the QUIC endpoint uses to move many datagrams per
        wake-up when a socket offers it.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this socket")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise _os_error(errno.EBADF)
            while not self._queue:
                await self._lot.park()
                if self._closed:
                    raise trio.ClosedResourceError("the socket was closed")
            out: list[tuple[bytes, SockAddr]] = []
            queue = self._queue
            while queue and len(out) < max_count:
                data, source = queue.popleft()
                self._queued_bytes -= len(data)
                out.append((data, _sockaddr(source)))
            return out
        finally:
            self._receiving = False

    async def send_batch(self, datagrams: Sequence[tuple[bytes, tuple]]) -> None:  # type: ignore[type-arg]
        """Send datagrams in order (never blocks, so no checkpoint, as a real socket's)."""
        for data, address in datagrams:
            self._send(data, address)

    def close(self) -> None:
        """Close the socket; a task waiting in :meth:`recvfrom` gets ClosedResourceError."""
        if self._closed:
            return
        self._closed = True
        self._stack._unbind(self)
        self._queue.clear()
        self._lot.unpark_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SimUdpSocket:
        return self

    def __exit__(self, exc_type: builtins.type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _deliver(self, packet: Packet) -> None:
        data = packet.payload
        assert isinstance(data, bytes)
        if self._queued_bytes + len(data) > self._receive_buffer:
            self.dropped += 1
            return
        self._queue.append((data, packet.src))
        self._queued_bytes += len(data)
        self._lot.unpark_all()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._local[0]}:{self._local[1]}"
        return f"<SimUdpSocket {self._stack.host.name} {state}>"


class UdpStack:
    """The UDP sockets of one host, by bound address."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._bound: dict[Endpoint, SimUdpSocket] = {}

    def bind(self, ip: str, port: int, receive_buffer: int = DEFAULT_RECEIVE_BUFFER
             ) -> SimUdpSocket:
        """Bind a new socket to (ip, port); port 0 picks a free ephemeral port."""
        wildcard = ip in ("0.0.0.0", "::")
        if not wildcard and ip not in self.host.addresses:
            raise _os_error(errno.EADDRNOTAVAIL, f"{ip} is not an address of {self.host.name}")
        if port == 0:
            port = self.host.ephemeral_port(lambda p: self._in_use(ip, p))
        elif self._in_use(ip, port):
            raise _os_error(errno.EADDRINUSE, f"udp {ip}:{port}")
        sock = SimUdpSocket(self, (ip, port), receive_buffer)
        self._bound[(ip, port)] = sock
        return sock

    def _in_use(self, ip: str, port: int) -> bool:
        if (ip, port) in self._bound:
            return True
        version = ip_version(ip)
        if ip in ("0.0.0.0", "::"):
            return any(p == port and ip_version(i) == version for i, p in self._bound)
        return ("0.0.0.0" if version == 4 else "::", port) in self._bound

    def _unbind(self, sock: SimUdpSocket) -> None:
        if self._bound.get(sock._local) is sock:
            del self._bound[sock._local]

    def receive(self, packet: Packet) -> bool:
        """Hand a datagram to the socket bound to its destination; False if none is."""
        ip, port = packet.dst
        sock = self._bound.get((ip, port)) or self._bound.get(
            ("::" if ":" in ip else "0.0.0.0", port))
        if sock is None:
            return False
        sock._deliver(packet)
        return True

    def close_all(self) -> None:
        for sock in list(self._bound.values()):
            sock.close()
