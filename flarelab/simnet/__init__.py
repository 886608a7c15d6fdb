"""An in-process internet with NAT routers, for running real flarelab nodes in simulation.

    from flarelab.simnet import Network

    async with Network(seed=1) as net:
        relay = net.add_host("relay")                       # public: 198.51.100.x
        a = net.add_router("NAT A", "home_router").add_host("A")
        b = net.add_router("NAT B", "symmetric").add_host("B")
        async with a.node() as node_a, relay.node() as node_r:
            await node_a.ping(node_r.addrs[0])

* :class:`Network`, :class:`Host`, :class:`NatRouter`, :class:`Link`: the topology (nested
  routers make carrier-grade NAT; ``lan6=`` routes IPv6 through a router's firewall).
  Links have latency, jitter and loss; everything runs on trio's clock (real, or
  ``MockClock(autojump_threshold=0)``) with seeded randomness
  (:func:`seed_trio_scheduler` makes a whole run repeat packet for packet).
* :class:`NatBehavior` and :data:`PRESETS`: NATs in RFC 4787 terms (mapping, filtering,
  port assignment, timeouts, hairpinning, and Linux's conntrack collision behaviour);
  routers trace their sessions and drops as ``nat.*`` spans.
* ``host.udp_socket(bind)`` / ``host.open_udp_socket``: virtual UDP sockets shaped like
  ``trio.socket`` ones (the QUIC transport runs on them); ``host.connect_tcp`` /
  ``host.listen_tcp``: a virtual TCP whose streams are ``trio.abc.HalfCloseableStream``;
  ``host.node()``: a flarelab Node on the host, over TCP and QUIC.
* :mod:`flarelab.simnet.theory` predicts a hole punch from RFC 4787 alone;
  :mod:`flarelab.simnet.punch` runs one (plain sockets, DCUtR timing) to compare.
"""

from .host import Host
from .nat import (
    PRESETS,
    FilteringBehavior,
    MappingBehavior,
    NatBehavior,
    NatTable,
    NatTimeouts,
    PortAssignment,
    PortSharing,
    Session,
    UnsolicitedPolicy,
)
from .network import (
    CapturedPacket,
    Link,
    Network,
    NetworkStats,
    PacketCapture,
    Subnet,
    seed_trio_scheduler,
)
from .packet import Packet, Segment
from .router import NatRouter
from .tcp import SimTcpListener, SimTcpStream
from .tcp_connection import TcpConfig, TcpConnection, TcpState
from .transport import SimTcpTransport, make_node
from .udp import SimUdpSocket

__all__ = [
    "PRESETS",
    "CapturedPacket",
    "FilteringBehavior",
    "Host",
    "Link",
    "MappingBehavior",
    "NatBehavior",
    "NatRouter",
    "NatTable",
    "NatTimeouts",
    "Network",
    "NetworkStats",
    "Packet",
    "PacketCapture",
    "PortAssignment",
    "PortSharing",
    "Segment",
    "Session",
    "SimTcpListener",
    "SimTcpStream",
    "SimTcpTransport",
    "SimUdpSocket",
    "Subnet",
    "TcpConfig",
    "TcpConnection",
    "TcpState",
    "UnsolicitedPolicy",
    "make_node",
    "seed_trio_scheduler",
]
