"""flarelab: a traced libp2p node on trio, for learning and debugging NAT hole punching.

The public API::

    from flarelab import Node, NodeConfig, Multiaddr, PeerId

    async with Node(NodeConfig(listen_addrs=["/ip4/127.0.0.1/tcp/0"], label="A")) as node:
        rtts = await node.ping("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...")

Names are imported lazily on first use, so ``import flarelab.multiaddr`` (or the CLI's
``--help``) does not pay for the whole node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "FlarelabError": "errors",
    "LocalProtocolError": "errors",
    "RemoteProtocolError": "errors",
    "HandshakeError": "errors",
    "PeerIdMismatchError": "errors",
    "LimitExceededError": "errors",
    "ProtocolNotSupportedError": "errors",
    "DialError": "errors",
    "StreamResetError": "errors",
    "ConnectionClosedError": "errors",
    # identity and addressing
    "PeerId": "identity",
    "PrivateKey": "identity",
    "PublicKey": "identity",
    "Ed25519PrivateKey": "identity",
    "Envelope": "identity",
    "PeerRecord": "identity",
    "load_private_key": "identity",
    "save_private_key": "identity",
    "Multiaddr": "multiaddr",
    "AddressPolicy": "multiaddr",
    # the node
    "Node": "node",
    "NodeConfig": "node",
    "Connection": "node",
    "NetStream": "node",
    "ConnectionOpened": "node",
    "ConnectionClosed": "node",
    "PeerConnected": "node",
    "PeerDisconnected": "node",
    "PeerIdentified": "node",
    "IdentifyInfo": "protocols.identify",
    "PerfResult": "protocols.perf",
    # tracing
    "TracingConfig": "tracing.provider",
    "SpanBus": "tracing.bus",
    # Project Flare: AutoNAT -> relays -> DCUtR
    "enable_flare": "flare",
    "Flare": "flare",
    "FlareConfig": "flare",
    "FlareStateChanged": "flare",
    "FlareTrial": "flare",
    "FlareSummary": "flare",
    "AutoNATService": "protocols.autonat",
    "AutoNATConfig": "protocols.autonat",
    "Reachability": "protocols.autonat",
    "ReachabilityChanged": "protocols.autonat",
    "RelayService": "protocols.relay",
    "RelayTransport": "protocols.relay",
    "HolePunchService": "protocols.dcutr",
    "HolePunchConfig": "protocols.dcutr",
    "HolePunchSucceeded": "protocols.dcutr",
    "HolePunchFailed": "protocols.dcutr",
}

__all__ = [
    "AddressPolicy",
    "AutoNATConfig",
    "AutoNATService",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionOpened",
    "DialError",
    "Ed25519PrivateKey",
    "Envelope",
    "Flare",
    "FlareConfig",
    "FlareStateChanged",
    "FlareSummary",
    "FlareTrial",
    "FlarelabError",
    "HandshakeError",
    "HolePunchConfig",
    "HolePunchFailed",
    "HolePunchService",
    "HolePunchSucceeded",
    "IdentifyInfo",
    "LimitExceededError",
    "LocalProtocolError",
    "Multiaddr",
    "NetStream",
    "Node",
    "NodeConfig",
    "PeerConnected",
    "PeerDisconnected",
    "PeerId",
    "PeerIdMismatchError",
    "PeerIdentified",
    "PeerRecord",
    "PerfResult",
    "PrivateKey",
    "ProtocolNotSupportedError",
    "PublicKey",
    "Reachability",
    "ReachabilityChanged",
    "RelayService",
    "RelayTransport",
    "RemoteProtocolError",
    "SpanBus",
    "StreamResetError",
    "TracingConfig",
    "__version__",
    "enable_flare",
    "load_private_key",
    "save_private_key",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .errors import (
        ConnectionClosedError,
        DialError,
        FlarelabError,
        HandshakeError,
        LimitExceededError,
        LocalProtocolError,
        PeerIdMismatchError,
        ProtocolNotSupportedError,
        RemoteProtocolError,
        StreamResetError,
    )
    from .flare import (
        Flare,
        FlareConfig,
        FlareStateChanged,
        FlareSummary,
        FlareTrial,
        enable_flare,
    )
    from .identity import (
        Ed25519PrivateKey,
        Envelope,
        PeerId,
        PeerRecord,
        PrivateKey,
        PublicKey,
        load_private_key,
        save_private_key,
    )
    from .multiaddr import AddressPolicy, Multiaddr
    from .node import (
        Connection,
        ConnectionClosed,
        ConnectionOpened,
        NetStream,
        Node,
        NodeConfig,
        PeerConnected,
        PeerDisconnected,
        PeerIdentified,
    )
    from .protocols.autonat import (
        AutoNATConfig,
        AutoNATService,
        Reachability,
        ReachabilityChanged,
    )
    from .protocols.dcutr import (
        HolePunchConfig,
        HolePunchFailed,
        HolePunchService,
        HolePunchSucceeded,
    )
    from .protocols.identify import IdentifyInfo
    from .protocols.perf import PerfResult
    from .protocols.relay import RelayService, RelayTransport
    from .tracing.bus import SpanBus
    from .tracing.provider import TracingConfig
