"""QUIC (quic-v1) with libp2p TLS 1.3 on trio, driven around aioquic's sans-IO core.

* :mod:`.tls` -- the libp2p certificate we present and the checks on the peer's (pure);
* :mod:`.core` -- :class:`QuicCore`, aioquic's connection with mutual authentication,
  flow control that follows what the application reads, and stream limits (sans-IO);
* :mod:`.driver` -- :class:`QuicConnection`, the trio driver of one core and the node's
  muxed connection; :mod:`.streams` -- :class:`QuicStream`, its native streams;
* :mod:`.endpoint` -- :class:`QuicEndpoint`, one UDP socket shared by a listener and its
  dials, datagrams routed by connection id; :mod:`.sockets` -- the socket abstraction;
* :mod:`.transport` -- :class:`QuicTransport` for the node.

The names below are imported on first use: a node that never speaks QUIC does not load
aioquic (about 5 MiB and 150 ms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .config import LOOPBACK_DATAGRAM_SIZE, PATH_DATAGRAM_SIZE, InitialResend, QuicConfig
    from .core import CloseInfo, QuicCore, QuicStats
    from .driver import QUIC_MUXER_ID, QuicConnection
    from .endpoint import QuicEndpoint, peek_header, quic_multiaddr
    from .sockets import DatagramSocket, SocketFactory, UdpSocket, open_udp_socket
    from .streams import QuicStream
    from .tls import ALPN, TLS_PROTOCOL_ID, CertificateError
    from .transport import QuicListener, QuicTransport, quic_target

_WHERE = {
    "LOOPBACK_DATAGRAM_SIZE": "config",
    "PATH_DATAGRAM_SIZE": "config",
    "QuicConfig": "config",
    "InitialResend": "config",
    "CloseInfo": "core",
    "QuicCore": "core",
    "QuicStats": "core",
    "QUIC_MUXER_ID": "driver",
    "QuicConnection": "driver",
    "QuicEndpoint": "endpoint",
    "peek_header": "endpoint",
    "quic_multiaddr": "endpoint",
    "DatagramSocket": "sockets",
    "SocketFactory": "sockets",
    "UdpSocket": "sockets",
    "open_udp_socket": "sockets",
    "QuicStream": "streams",
    "ALPN": "tls",
    "TLS_PROTOCOL_ID": "tls",
    "CertificateError": "tls",
    "QuicListener": "transport",
    "QuicTransport": "transport",
    "quic_target": "transport",
}

__all__ = [
    "ALPN",
    "LOOPBACK_DATAGRAM_SIZE",
    "PATH_DATAGRAM_SIZE",
    "QUIC_MUXER_ID",
    "TLS_PROTOCOL_ID",
    "CertificateError",
    "CloseInfo",
    "DatagramSocket",
    "InitialResend",
    "QuicConfig",
    "QuicConnection",
    "QuicCore",
    "QuicEndpoint",
    "QuicListener",
    "QuicStats",
    "QuicStream",
    "QuicTransport",
    "SocketFactory",
    "UdpSocket",
    "open_udp_socket",
    "peek_header",
    "quic_multiaddr",
    "quic_target",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
