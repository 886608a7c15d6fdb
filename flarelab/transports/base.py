"""What every transport offers the node: dial, listen, and raw connections.

A transport moves bytes; it knows nothing of peers or protocols. TCP (and, later, the
simulated network's TCP) return *raw* connections that the node upgrades with
multistream-select, Noise and a muxer. Transports that bring their own security and
streams (QUIC) set ``upgrades = False`` and return ready connections instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ..multiaddr import Multiaddr

__all__ = ["Listener", "RawConnection", "Transport"]


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


class Listener(ABC):
    """A listening endpoint; ``addrs`` are the bound addresses (real ports, not 0)."""

    addrs: list[Multiaddr]

    @abstractmethod
    async def aclose(self) -> None:
        """Stop accepting; connections already accepted are not touched."""


ConnectionHandler = Callable[[RawConnection], Awaitable[None]]


class Transport(ABC):
    """A way to reach hosts: TCP, QUIC, a relay, the simulated network."""

    name: str
    #: True if the node must run security and muxer negotiation over what dial returns
    upgrades: bool = True

    @abstractmethod
    def can_dial(self, addr: Multiaddr) -> bool:
        """True if this transport can dial ``addr`` (a trailing /p2p/ is allowed)."""

    @abstractmethod
    def can_listen(self, addr: Multiaddr) -> bool:
        """True if this transport can listen on ``addr``."""

    @abstractmethod
    async def dial(self, addr: Multiaddr) -> RawConnection:
        """Open a connection to ``addr``; raise ``OSError`` or a flarelab error on failure."""

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
