"""The multiaddr protocol table: code, name, value size and transcoder of every protocol we know.

Codes and names follow multiformats/multiaddr ``protocols.csv`` and the implementations that
libp2p peers run (go-multiaddr, rust-multiaddr, js @multiformats/multiaddr). Sizes are in
bytes here (the CSV counts bits): ``0`` means no value, a positive size is a fixed-length
value, :data:`VAR` a value prefixed by its uvarint length.

Where the CSV and the implementations differ, we follow the implementations, because that is
what arrives on the wire:

* ``udp`` is 273 and ``p2p`` is 421 (``ipfs`` is an input-only alias of ``p2p``).
* ``memory`` (777) is a fixed 8-byte big-endian integer, as in go and rust (the CSV says
  ``V`` and js length-prefixes it).
* ``unix`` is a *path* protocol, as in go: its value is the rest of the text address, which
  must start with ``/`` (``/unix/tmp/p2p.sock`` has the value ``/tmp/p2p.sock``), and nothing
  may follow it in a binary address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from ..wire import encode_uvarint
from . import transcoders as tc

__all__ = [
    "PROTOCOLS",
    "VAR",
    "ProtocolInfo",
    "protocol_by_code",
    "protocol_by_name",
]

#: size of a value that is prefixed by its uvarint length
VAR: Final = -1

P_IP4: Final = 4
P_TCP: Final = 6
P_DCCP: Final = 33
P_IP6: Final = 41
P_IP6ZONE: Final = 42
P_IPCIDR: Final = 43
P_DNS: Final = 53
P_DNS4: Final = 54
P_DNS6: Final = 55
P_DNSADDR: Final = 56
P_SCTP: Final = 132
P_UDP: Final = 273
P_P2P_WEBRTC_STAR: Final = 275
P_P2P_WEBRTC_DIRECT: Final = 276
P_P2P_STARDUST: Final = 277
P_WEBRTC_DIRECT: Final = 280
P_WEBRTC: Final = 281
P_P2P_CIRCUIT: Final = 290
P_UDT: Final = 301
P_UTP: Final = 302
P_UNIX: Final = 400
P_P2P: Final = 421
P_HTTPS: Final = 443
P_ONION: Final = 444
P_ONION3: Final = 445
P_GARLIC64: Final = 446
P_GARLIC32: Final = 447
P_TLS: Final = 448
P_SNI: Final = 449
P_NOISE: Final = 454
P_QUIC: Final = 460
P_QUIC_V1: Final = 461
P_WEBTRANSPORT: Final = 465
P_CERTHASH: Final = 466
P_WS: Final = 477
P_WSS: Final = 478
P_P2P_WEBSOCKET_STAR: Final = 479
P_HTTP: Final = 480
P_HTTP_PATH: Final = 481
P_MEMORY: Final = 777
P_PLAINTEXTV2: Final = 7367777


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    """One row of the protocol table."""

    code: int
    name: str
    #: value size in bytes: 0 (no value), a fixed length, or :data:`VAR`
    size: int
    transcoder: tc.Transcoder | None = None
    #: the value is the rest of the text address (``unix``); nothing may follow it
    path: bool = False
    #: the code as a uvarint, ready to write
    code_bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "code_bytes", encode_uvarint(self.code))
        if (self.size == 0) != (self.transcoder is None):
            raise AssertionError(f"protocol {self.name}: a value needs a transcoder")


#: every protocol we know, in code order
PROTOCOLS: Final[tuple[ProtocolInfo, ...]] = (
    ProtocolInfo(P_IP4, "ip4", 4, tc.IP4),
    ProtocolInfo(P_TCP, "tcp", 2, tc.PORT),
    ProtocolInfo(P_DCCP, "dccp", 2, tc.PORT),
    ProtocolInfo(P_IP6, "ip6", 16, tc.IP6),
    ProtocolInfo(P_IP6ZONE, "ip6zone", VAR, tc.IP6ZONE),
    ProtocolInfo(P_IPCIDR, "ipcidr", 1, tc.IPCIDR),
    ProtocolInfo(P_DNS, "dns", VAR, tc.DNS),
    ProtocolInfo(P_DNS4, "dns4", VAR, tc.DNS),
    ProtocolInfo(P_DNS6, "dns6", VAR, tc.DNS),
    ProtocolInfo(P_DNSADDR, "dnsaddr", VAR, tc.DNS),
    ProtocolInfo(P_SCTP, "sctp", 2, tc.PORT),
    ProtocolInfo(P_UDP, "udp", 2, tc.PORT),
    ProtocolInfo(P_P2P_WEBRTC_STAR, "p2p-webrtc-star", 0),
    ProtocolInfo(P_P2P_WEBRTC_DIRECT, "p2p-webrtc-direct", 0),
    ProtocolInfo(P_P2P_STARDUST, "p2p-stardust", 0),
    ProtocolInfo(P_WEBRTC_DIRECT, "webrtc-direct", 0),
    ProtocolInfo(P_WEBRTC, "webrtc", 0),
    ProtocolInfo(P_P2P_CIRCUIT, "p2p-circuit", 0),
    ProtocolInfo(P_UDT, "udt", 0),
    ProtocolInfo(P_UTP, "utp", 0),
    ProtocolInfo(P_UNIX, "unix", VAR, tc.UNIX, path=True),
    ProtocolInfo(P_P2P, "p2p", VAR, tc.P2P),
    ProtocolInfo(P_HTTPS, "https", 0),
    ProtocolInfo(P_ONION, "onion", 12, tc.ONION),
    ProtocolInfo(P_ONION3, "onion3", 37, tc.ONION3),
    ProtocolInfo(P_GARLIC64, "garlic64", VAR, tc.GARLIC64),
    ProtocolInfo(P_GARLIC32, "garlic32", VAR, tc.GARLIC32),
    ProtocolInfo(P_TLS, "tls", 0),
    ProtocolInfo(P_SNI, "sni", VAR, tc.DNS),
    ProtocolInfo(P_NOISE, "noise", 0),
    ProtocolInfo(P_QUIC, "quic", 0),
    ProtocolInfo(P_QUIC_V1, "quic-v1", 0),
    ProtocolInfo(P_WEBTRANSPORT, "webtransport", 0),
    ProtocolInfo(P_CERTHASH, "certhash", VAR, tc.CERTHASH),
    ProtocolInfo(P_WS, "ws", 0),
    ProtocolInfo(P_WSS, "wss", 0),
    ProtocolInfo(P_P2P_WEBSOCKET_STAR, "p2p-websocket-star", 0),
    ProtocolInfo(P_HTTP, "http", 0),
    ProtocolInfo(P_HTTP_PATH, "http-path", VAR, tc.HTTP_PATH),
    ProtocolInfo(P_MEMORY, "memory", 8, tc.MEMORY),
    ProtocolInfo(P_PLAINTEXTV2, "plaintextv2", 0),
)

_BY_CODE: Final = {p.code: p for p in PROTOCOLS}
_BY_NAME: Final = {p.name: p for p in PROTOCOLS} | {"ipfs": _BY_CODE[P_P2P]}


def protocol_by_code(code: int) -> ProtocolInfo | None:
    """Return the protocol with this code, or None."""
    return _BY_CODE.get(code)


def protocol_by_name(name: str) -> ProtocolInfo | None:
    """Return the protocol with this name (``ipfs`` means ``p2p``), or None."""
    return _BY_NAME.get(name)
