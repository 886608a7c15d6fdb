"""The UDP socket under a QUIC endpoint, abstracted so the simulated network can plug in.

An endpoint needs only what a bound ``trio.socket`` UDP socket offers::

    await sock.sendto(data, addr)        await sock.recvfrom(bufsize)
    sock.getsockname()                   sock.close()

A :data:`SocketFactory` makes one, already bound: ``await factory(family, (host, port))``.
The default, :func:`open_udp_socket`, returns a :class:`UdpSocket`: a real non-blocking
socket with ``SO_REUSEADDR`` that also offers :meth:`~UdpSocket.receive_batch` and
:meth:`~UdpSocket.send_batch`, which move many datagrams per wake-up and per checkpoint
(aioquic's cost is per packet, so the driver's per-datagram overhead matters). The endpoint
uses those two when a socket has them and falls back to the small interface otherwise.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import trio

__all__ = [
    "Address",
    "BatchDatagramSocket",
    "DatagramSocket",
    "SocketFactory",
    "UdpSocket",
    "open_udp_socket",
]

#: (host, port) as the socket module spells it (IPv6 sockets may add flowinfo and scope)
Address = tuple[Any, ...]

#: receive buffer we ask the kernel for (it caps this at net.core.rmem_max)
RECEIVE_BUFFER = 4 << 20
#: largest UDP payload we read
MAX_UDP_PAYLOAD = 65535


@runtime_checkable
class DatagramSocket(Protocol):
    """A bound UDP socket, as trio.socket offers one (and the simulated network)."""

    async def sendto(self, data: bytes, address: Address, /) -> int:
        """Send one datagram."""
        ...

    async def recvfrom(self, bufsize: int, /) -> tuple[bytes, Address]:
        """Receive one datagram and its source."""
        ...

    def getsockname(self) -> Address:
        """The bound (host, port)."""
        ...

    def close(self) -> None:
        """Close the socket; a pending recvfrom fails."""
        ...


@runtime_checkable
class BatchDatagramSocket(DatagramSocket, Protocol):
    """A datagram socket that can move many datagrams per call."""

    async def receive_batch(self, max_count: int) -> list[tuple[bytes, Address]]:
        """Wait for at least one datagram; return all that are ready (up to max_count)."""
        ...

    async def send_batch(self, datagrams: Sequence[tuple[bytes, Address]]) -> None:
        """Send datagrams in order."""
        ...


SocketFactory = Callable[[int, Address], Awaitable[DatagramSocket]]


class UdpSocket:
    """A real, non-blocking UDP socket driven by trio's I/O waits."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._closed = False

    @property
    def family(self) -> int:
        """The address family (AF_INET or AF_INET6)."""
        return self._sock.family

    def getsockname(self) -> Address:
        """The bound (host, port[, flowinfo, scope_id])."""
        return tuple(self._sock.getsockname())

    def fileno(self) -> int:
        """The socket's file descriptor."""
        return self._sock.fileno()

    def close(self) -> None:
        """Close the socket, waking any task waiting on it."""
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    async def sendto(self, data: bytes, address: Address, /) -> int:
        """Send one datagram (waiting while the kernel's buffer is full)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                sent = self._sock.sendto(data, address)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return sent

    async def recvfrom(self, bufsize: int, /) -> tuple[bytes, Address]:
        """Receive one datagram."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data, addr = self._sock.recvfrom(bufsize)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data, addr

    async def receive_batch(self, max_count: int) -> list[tuple[bytes, Address]]:
        """Wait until readable, then read every ready datagram (up to ``max_count``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        out: list[tuple[bytes, Address]] = []
        recvfrom = self._sock.recvfrom
        waited = False
        while True:
            try:
                while len(out) < max_count:
                    out.append(recvfrom(MAX_UDP_PAYLOAD))
            except BlockingIOError:
                pass
            except OSError as exc:
                # an ICMP error for an earlier send (port unreachable) surfaces here on
                # Linux; it concerns one peer, not the socket
                if exc.errno not in _TRANSIENT:
                    raise
                continue
            if out:
                if not waited:  # one checkpoint per batch, so a busy socket starves no one
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return out
            await trio.lowlevel.wait_readable(self._sock)
            waited = True

    async def send_batch(self, datagrams: Sequence[tuple[bytes, Address]]) -> None:
        """Send datagrams in order, waiting only when the kernel's buffer is full.

        Not a checkpoint when nothing blocks: the caller (the connection's flusher) yields
        on its own wake-up event every round.
        """
        sendto = self._sock.sendto
        for data, addr in datagrams:
            while True:
                try:
                    sendto(data, addr)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self._sock)
                except OSError as exc:
                    if exc.errno not in _TRANSIENT:
                        raise
                    break  # unreachable peer: QUIC's loss recovery deals with it


_TRANSIENT = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
    errno.EMSGSIZE,
    errno.EPERM,  # a firewall refused the packet
}


async def open_udp_socket(family: int, local: Address) -> DatagramSocket:
    """Open a real UDP socket bound to ``local`` with SO_REUSEADDR (the default factory)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RECEIVE_BUFFER)
        except OSError:  # pragma: no cover - some systems refuse large buffers
            pass
        sock.bind(local)
    except BaseException:
        sock.close()
        raise
    await trio.lowlevel.checkpoint()
    return UdpSocket(sock)
