"""QuicConfig: the knobs of the QUIC transport, with the defaults go-libp2p's QUIC uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ...errors import LocalProtocolError
from ...tracing import spans

if TYPE_CHECKING:
    from .sockets import SocketFactory

__all__ = [
    "INITIAL_RESENT_COUNT",
    "INITIAL_RESENT_EVENT",
    "LOOPBACK_DATAGRAM_SIZE",
    "MAX_INITIAL_RESENDS",
    "PATH_DATAGRAM_SIZE",
    "InitialResend",
    "QuicConfig",
]

#: UDP payload for paths that may cross Ethernet (1500 - 40 IPv6 - 8 UDP), as quic-go uses
PATH_DATAGRAM_SIZE: Final = 1452
#: UDP payload on loopback. aioquic's STREAM frames carry at most 16383 bytes (a 2-byte
#: length), and its cost is per packet, so the largest packet that still fits one frame wins
LOOPBACK_DATAGRAM_SIZE: Final = 16000
#: the smallest datagram QUIC allows (RFC 9000 section 14)
MIN_DATAGRAM_SIZE: Final = 1200
MAX_DATAGRAM_SIZE: Final = 16300
#: copies of a first flight one dial may send at most (InitialResend.count)
MAX_INITIAL_RESENDS: Final = 50
#: the shortest interval between two copies (InitialResend.interval)
MIN_INITIAL_RESEND_INTERVAL: Final = 0.001
#: span event (on ``quic.handshake``) for each copy of a first flight sent again
INITIAL_RESENT_EVENT: Final = spans.QUIC_INITIAL_RESENT
#: its attribute, and ``quic.dial``'s: how many copies went out
INITIAL_RESENT_COUNT: Final = spans.LIBP2P_QUIC_INITIAL_RESENT


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


@dataclass(frozen=True)
class InitialResend:
    """Re-send copies of a dial's first flight (its Initial datagrams) on a short schedule.

    For hole-punch dials (DCUtR's A): the peer's NAT may drop our first Initial because the
    peer's punch packets have not opened its mapping yet, and QUIC itself would only
    retransmit after the PTO (2 x aioquic's initial RTT of 100 ms). The copies are the same
    datagrams, byte for byte: a server that got an earlier one drops them as duplicate
    packet numbers. They go out every ``interval`` seconds, at most ``count`` of them, and
    stop as soon as any datagram of the connection arrives from the peer (or the handshake
    ends). ``on_resend(n)`` is told the running count after each copy (for traces).
    """

    interval: float = 0.010
    count: int = 10
    on_resend: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if not MIN_INITIAL_RESEND_INTERVAL <= self.interval <= 1.0:
            raise LocalProtocolError(
                f"InitialResend.interval must be in {MIN_INITIAL_RESEND_INTERVAL}..1 s, "
                f"not {self.interval}")
        if not 0 <= self.count <= MAX_INITIAL_RESENDS:
            raise LocalProtocolError(
                f"InitialResend.count must be in 0..{MAX_INITIAL_RESENDS}, not {self.count}")
