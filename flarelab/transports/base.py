"""What every transport offers the node: dial, listen, and raw connections.

A transport moves bytes; it knows nothing of peers or protocols. TCP (and, later, the
simulated network's TCP) return *raw* connections that the node upgrades with
multistream-select, Noise and a muxer. Transports that bring their own security and
streams (QUIC) set ``upgrades = False`` and return ready connections instead.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ..multiaddr import Multiaddr

if TYPE_CHECKING:
    from ..identity import PeerId, PublicKey
    from ..muxers.base import MuxedConnection

__all__ = [
    "HOST_PROTOCOLS",
    "Listener",
    "RawConnection",
    "SecuredConnection",
    "Transport",
    "address_family",
    "transport_target",
]

#: the first components a transport address may start with (IP or DNS name)
HOST_PROTOCOLS = ("ip4", "ip6", "dns", "dns4", "dns6")


def transport_target(addr: Multiaddr, protocols: tuple[str, ...],
                     hosts: tuple[str, ...] = HOST_PROTOCOLS) -> tuple[str, str, int] | None:
    """Return ``(kind, host, port)`` for ``/<host kind>/<host>/<protocols...>[/p2p/..]``.

    ``protocols`` are the components after the host, the first carrying the port:
    ``("tcp",)`` or ``("udp", "quic-v1")``; None if ``addr`` has another shape.
    """
    comps = addr.components()
    n = len(protocols) + 1
    if len(comps) < n or tuple(c.name for c in comps[1:n]) != protocols:
        return None
    if len(comps) > n and not (len(comps) == n + 1 and comps[n].name == "p2p"):
        return None
    kind = comps[0].name
    if kind not in hosts or comps[0].value is None or comps[1].value is None:
        return None
    return kind, comps[0].value, int(comps[1].value)


def address_family(host: str) -> int:
    """``AF_INET6`` for an IPv6 address, else ``AF_INET``."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@dataclass(eq=False)
class RawConnection:
    """A byte stream between two hosts, before security and multiplexing."""

    stream: trio.abc.HalfCloseableStream
    local_addr: Multiaddr
    remote_addr: Multiaddr
    is_initiator: bool
    transport: str
    #: transport-specific facts for spans (e.g. whether the dial reused the listen port)
    details: dict[str, object] = field(default_factory=dict)
    #: a limited link (a relayed circuit): only protocols that allow it run over it
    limited: bool = False


@dataclass(eq=False)
class SecuredConnection:
    """A connection its transport already secured and multiplexed (QUIC: TLS 1.3 and
    native streams). The transport has authenticated ``remote_peer`` (and checked it
    against the peer a dial expected)."""

    muxer: MuxedConnection
    remote_peer: PeerId
    remote_public_key: PublicKey
    local_addr: Multiaddr
    remote_addr: Multiaddr
    is_initiator: bool
    transport: str
    #: the security protocol, for traces ("/tls/1.0.0" for QUIC)
    security: str
    details: dict[str, object] = field(default_factory=dict)


class Listener(ABC):
    """A listening endpoint; ``addrs`` are the bound addresses (real ports, not 0)."""

    addrs: list[Multiaddr]

    @abstractmethod
    async def aclose(self) -> None:
        """Stop accepting; connections already accepted are not touched."""


ConnectionHandler = Callable[[RawConnection | SecuredConnection], Awaitable[None]]


class Transport(ABC):
    """A way to reach hosts: TCP, QUIC, a relay, the simulated network."""

    name: str
    #: ``dial`` accepts ``reuse_port=``: True leaves from a listen port, False from an
    #: ephemeral port (or a fresh socket), None does what the transport was configured to
    supports_reuse_port: bool = False

    @abstractmethod
    def can_dial(self, addr: Multiaddr) -> bool:
        """True if this transport can dial ``addr`` (a trailing /p2p/ is allowed)."""

    @abstractmethod
    def can_listen(self, addr: Multiaddr) -> bool:
        """True if this transport can listen on ``addr``."""

    @abstractmethod
    async def dial(
        self, addr: Multiaddr, *, expected_peer: PeerId | None = None
    ) -> RawConnection | SecuredConnection:
        """Open a connection to ``addr``; raise ``OSError`` or a flarelab error on failure.

        Transports that secure connections themselves must authenticate the peer and
        refuse one that is not ``expected_peer`` (when given) with PeerIdMismatchError;
        the others return a :class:`RawConnection` that the node upgrades.
        """

    @abstractmethod
    async def listen(
        self,
        addr: Multiaddr,
        handler: ConnectionHandler,
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``addr`` and run ``handler`` for every inbound connection.

        Start it with ``listener = await nursery.start(transport.listen, addr, handler, n)``;
        the task runs until the listener is closed or the nursery is cancelled. Handlers run
        in ``handler_nursery`` and own the connection they are given.
        """
