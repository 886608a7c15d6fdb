"""The node: listen, dial, streams, handlers, peerstore, events."""

from .config import NodeConfig
from .connection import Connection, NetStream
from .events import (
    ConnectionClosed,
    ConnectionOpened,
    Event,
    EventBus,
    ListenAddressesChanged,
    LocalAddressesChanged,
    ObservedAddressConfirmed,
    PeerConnected,
    PeerDisconnected,
    PeerIdentified,
    PeerProtocolsUpdated,
)
from .node import Node
from .peerstore import AddrTTL, Peerstore
from .swarm import Handler

__all__ = [
    "AddrTTL",
    "Connection",
    "ConnectionClosed",
    "ConnectionOpened",
    "Event",
    "EventBus",
    "Handler",
    "ListenAddressesChanged",
    "LocalAddressesChanged",
    "NetStream",
    "Node",
    "NodeConfig",
    "ObservedAddressConfirmed",
    "PeerConnected",
    "PeerDisconnected",
    "PeerIdentified",
    "PeerProtocolsUpdated",
    "Peerstore",
]
