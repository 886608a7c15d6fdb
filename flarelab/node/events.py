"""The node's event bus: what happened, for anyone who wants to know.

Events are frozen dataclasses named subject + past-tense verb (``PeerConnected``,
``PeerIdentified``). Subscribers get a bounded trio channel: a slow subscriber loses events
(counted in ``Subscription.dropped``), it never blocks the node. Synchronous listeners
(widgets, tests) can register a callback instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ..identity import PeerId
    from ..multiaddr import Multiaddr
    from ..protocols.identify import IdentifyInfo
    from .connection import Connection

__all__ = [
    "ConnectionClosed",
    "ConnectionOpened",
    "Event",
    "EventBus",
    "ListenAddressesChanged",
    "LocalAddressesChanged",
    "ObservedAddressConfirmed",
    "PeerConnected",
    "PeerDisconnected",
    "PeerIdentified",
    "PeerProtocolsUpdated",
    "Subscription",
]

log = logging.getLogger(__name__)


class Event:
    """Base class of node events."""


@dataclass(frozen=True)
class ConnectionOpened(Event):
    """A connection finished its upgrade and is ready for streams."""

    connection: Connection


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """A connection ended; ``reason`` says why (``"local close"``, an error message, ...)."""

    connection: Connection
    reason: str


@dataclass(frozen=True)
class PeerConnected(Event):
    """We now have at least one connection to ``peer``."""

    peer: PeerId
    connection: Connection


@dataclass(frozen=True)
class PeerDisconnected(Event):
    """The last connection to ``peer`` closed."""

    peer: PeerId


@dataclass(frozen=True)
class PeerIdentified(Event):
    """Identify (or identify push) told us about ``peer``."""

    peer: PeerId
    info: IdentifyInfo
    push: bool = False


@dataclass(frozen=True)
class PeerProtocolsUpdated(Event):
    """The protocols we know ``peer`` speaks changed."""

    peer: PeerId
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class ListenAddressesChanged(Event):
    """The addresses we listen on changed (a listener opened or closed)."""

    addrs: tuple[Multiaddr, ...]


@dataclass(frozen=True)
class LocalAddressesChanged(Event):
    """The addresses we advertise changed (listen addresses, confirmed observations...)."""

    addrs: tuple[Multiaddr, ...]


@dataclass(frozen=True)
class ObservedAddressConfirmed(Event):
    """Enough distinct observers reported ``addr`` for us to trust and advertise it."""

    addr: Multiaddr
    observers: int


@dataclass(eq=False)
class Subscription:
    """A bounded stream of events; iterate it with ``async for``."""

    bus: EventBus
    types: tuple[type[Event], ...]
    send: trio.MemorySendChannel[Event]
    receive: trio.MemoryReceiveChannel[Event]
    dropped: int = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def next(
        self, *types: type[Event], predicate: Callable[[Any], bool] | None = None
    ) -> Any:
        """Wait for the next event of one of ``types`` (any if none) matching ``predicate``."""
        async for event in self:
            if types and not isinstance(event, types):
                continue
            if predicate is None or predicate(event):
                return event
        raise trio.EndOfChannel("event bus closed")

    def close(self) -> None:
        """Stop receiving events."""
        self.bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(eq=False)
class EventBus:
    """Publishes node events to subscriptions and listeners; never blocks the publisher."""

    _subs: list[Subscription] = field(default_factory=list)
    _listeners: list[Callable[[Event], None]] = field(default_factory=list)

    def subscribe(self, *types: type[Event], max_buffer: int = 256) -> Subscription:
        """Subscribe to events of ``types`` (all if none); use as a context manager."""
        send, receive = trio.open_memory_channel[Event](max_buffer)
        sub = Subscription(self, types, send, receive)
        self._subs.append(sub)
        return sub

    def add_listener(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` synchronously for every event; returns a remover."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        sub.send.close()

    def publish(self, event: Event) -> None:
        """Deliver ``event`` now to every listener and matching subscription."""
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("event listener %r failed on %r", callback, event)
        for sub in list(self._subs):
            if sub.types and not isinstance(event, sub.types):
                continue
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                sub.dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._unsubscribe(sub)

    def close(self) -> None:
        """End every subscription (their iterators finish)."""
        for sub in list(self._subs):
            self._unsubscribe(sub)
