"""NodeConfig: everything a node can be told, with defaults a demanding user would pick."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..multiaddr import DEFAULT_POLICY, AddressPolicy, Multiaddr

if TYPE_CHECKING:
    from ..flare.config import FlareConfig
    from ..identity import PrivateKey
    from ..muxers.mplex import MplexConfig
    from ..muxers.yamux import YamuxConfig
    from ..tracing.provider import TracingConfig
    from ..transports.quic import QuicConfig

__all__ = ["AGENT_VERSION", "NodeConfig"]

AGENT_VERSION = "flarelab/0.1.0"

YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"


@dataclass
class NodeConfig:
    """How a :class:`~flarelab.node.Node` behaves.

    Every timeout is in seconds; every limit is a count of things a remote peer could
    otherwise make us hold without bound.
    """

    #: the node's identity; a fresh Ed25519 key if None
    key: PrivateKey | None = None
    #: multiaddrs (or strings) to listen on when the node starts
    listen_addrs: Sequence[str | Multiaddr] = ()
    #: a human label for traces and plots ("A", "relay", ...)
    label: str | None = None
    agent_version: str = AGENT_VERSION
    protocol_version: str = "ipfs/0.1.0"
    #: stream muxers in order of preference
    muxers: tuple[str, ...] = (YAMUX, MPLEX)
    yamux: YamuxConfig | None = None
    mplex: MplexConfig | None = None
    tracing: TracingConfig | None = None
    #: which addresses count as public (the netns lab widens it)
    address_policy: AddressPolicy = DEFAULT_POLICY

    # timeouts
    dial_timeout: float = 15.0  # a whole dial, all addresses
    connect_timeout: float = 10.0  # one transport connect
    handshake_timeout: float = 10.0  # security + muxer negotiation of one connection
    negotiate_timeout: float = 10.0  # multistream-select on one stream
    #: delay before trying the next address of a peer while earlier dials are still running
    dial_stagger: float = 0.25

    # limits
    max_connections: int = 512
    max_connections_per_peer: int = 8
    max_pending_inbound: int = 64  # inbound connections still in their handshake
    max_handler_streams_per_connection: int = 512

    # services
    enable_identify: bool = True
    enable_ping: bool = True
    enable_perf: bool = True
    #: distinct observers needed before we trust an observed address of ours
    observed_addr_threshold: int = 4
    #: count observers by "ip-group" (as go: /24 and /56) or by "peer"
    observed_addr_group_by: str = "ip-group"
    #: dial out from the listen port (needed for hole punching)
    reuse_port: bool = True
    #: run the QUIC transport (/udp/<port>/quic-v1) beside TCP
    enable_quic: bool = True
    #: when a peer offers QUIC and TCP addresses, dial QUIC first (False: TCP first)
    prefer_quic: bool = True
    quic: QuicConfig | None = None
    #: run Project Flare (AutoNAT -> relays -> DCUtR, :func:`flarelab.flare.enable_flare`)
    flare: FlareConfig | None = None
    extra: dict[str, object] = field(default_factory=dict)
