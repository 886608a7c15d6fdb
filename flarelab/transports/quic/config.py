"""QuicConfig: the knobs of the QUIC transport, with the defaults go-libp2p's QUIC uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ...errors import LocalProtocolError

if TYPE_CHECKING:
    from .sockets import SocketFactory

__all__ = ["LOOPBACK_DATAGRAM_SIZE", "PATH_DATAGRAM_SIZE", "QuicConfig"]

#: UDP payload for paths that may cross Ethernet (1500 - 40 IPv6 - 8 UDP), as quic-go uses
PATH_DATAGRAM_SIZE: Final = 1452
#: UDP payload on loopback. aioquic's STREAM frames carry at most 16383 bytes (a 2-byte
#: length), and its cost is per packet, so the largest packet that still fits one frame wins
LOOPBACK_DATAGRAM_SIZE: Final = 16000
#: the smallest datagram QUIC allows (RFC 9000 section 14)
MIN_DATAGRAM_SIZE: Final = 1200
MAX_DATAGRAM_SIZE: Final = 16300


@dataclass(frozen=True)
class QuicConfig:
    """How the QUIC transport behaves. Times are in seconds, sizes in bytes."""

    #: a connection with no packet from the peer for this long is closed (go: 30 s)
    idle_timeout: float = 30.0
    #: PING an otherwise idle connection this often so NAT mappings stay open (go: 15 s);
    #: 0 disables keep-alive
    keepalive_interval: float = 15.0
    #: the whole dial (Initial to a verified peer); go: 5 s for hole punches, 10 s otherwise
    handshake_timeout: float = 10.0
    #: how long ``open_stream`` waits for the peer to allow another stream
    stream_open_timeout: float = 10.0
    #: UDP payload size; None picks it per path: LOOPBACK_DATAGRAM_SIZE towards a loopback
    #: address, PATH_DATAGRAM_SIZE otherwise. The handshake always uses at most
    #: PATH_DATAGRAM_SIZE, and larger packets only follow if the peer's
    #: max_udp_payload_size allows them
    max_datagram_size: int | None = None
    #: streams the peer may have open at once (QUIC MAX_STREAMS; go: 256); beyond it the
    #: peer is blocked by QUIC flow control, and one that ignores that is closed with
    #: STREAM_LIMIT_ERROR
    max_inbound_streams: int = 256
    #: receive window per stream: bytes the peer may send ahead of what we have read
    stream_receive_window: int = 1 << 20
    #: receive window for the whole connection
    connection_receive_window: int = 4 << 20
    #: bytes one stream may hold written but not yet acknowledged before send_all waits
    stream_send_buffer: int = 1 << 20
    #: inbound connections still in their handshake, per UDP socket; more are dropped
    max_pending_handshakes: int = 64
    #: "reno" or "cubic" (aioquic's congestion controllers)
    congestion_control: str = "reno"
    #: makes the bound UDP sockets (None: real sockets; the simulated network passes its own)
    socket_factory: SocketFactory | None = None

    def __post_init__(self) -> None:
        size = self.max_datagram_size
        if size is not None and not MIN_DATAGRAM_SIZE <= size <= MAX_DATAGRAM_SIZE:
            raise LocalProtocolError(
                f"max_datagram_size must be in {MIN_DATAGRAM_SIZE}..{MAX_DATAGRAM_SIZE}, not {size}"
            )
        for name in (
            "max_inbound_streams",
            "stream_receive_window",
            "connection_receive_window",
            "stream_send_buffer",
            "max_pending_handshakes",
        ):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"QuicConfig.{name} must be positive")
        for name in ("idle_timeout", "handshake_timeout", "stream_open_timeout"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"QuicConfig.{name} must be positive")
        if self.keepalive_interval < 0:
            raise LocalProtocolError("QuicConfig.keepalive_interval must be >= 0")
        if self.congestion_control not in ("reno", "cubic"):
            raise LocalProtocolError("congestion_control must be 'reno' or 'cubic'")

    def datagram_size(self, *, loopback: bool) -> int:
        """The UDP payload size to use on a path (after the handshake)."""
        if self.max_datagram_size is not None:
            return self.max_datagram_size
        return LOOPBACK_DATAGRAM_SIZE if loopback else PATH_DATAGRAM_SIZE
