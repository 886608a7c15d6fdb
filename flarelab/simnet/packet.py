"""What travels on the simulated network: IP packets carrying TCP, UDP or ICMP.

Pure data, no I/O. Addresses are canonical text (``"192.168.1.2"``, ``"2001:db8::1"``)
and endpoints are ``(ip, port)`` tuples, so the hot path hashes plain strings and ints.
Sequence numbers are Python ints that never wrap (a simulated connection never moves
4 GiB in one direction; wrapping would add risk and teach nothing).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ACK",
    "FIN",
    "IP_HEADER",
    "RST",
    "SYN",
    "Endpoint",
    "IcmpError",
    "Packet",
    "Proto",
    "Segment",
    "canonical_ip",
    "format_endpoint",
    "ip_version",
]

Endpoint = tuple[str, int]
Proto = Literal["tcp", "udp", "icmp"]

# TCP flags, with RFC 793's bit values
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
ACK: Final = 0x10

#: bytes of IP header counted for a packet's size (v4; v6 adds 20)
IP_HEADER: Final = 20
_TRANSPORT_HEADER: Final = {"tcp": 20, "udp": 8, "icmp": 8}


def canonical_ip(ip: object) -> str:
    """Return the canonical text of an IP address; ValueError if it is not one."""
    return ipaddress.ip_address(ip).compressed  # type: ignore[arg-type]


def ip_version(ip: str) -> int:
    """Return 6 for IPv6 text, else 4 (the address is assumed canonical)."""
    return 6 if ":" in ip else 4


def format_endpoint(endpoint: Endpoint) -> str:
    """Return ``ip:port`` (``[ip6]:port`` for IPv6), as traces show endpoints."""
    ip, port = endpoint
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True, slots=True)
class Segment:
    """A TCP segment: sequence and acknowledgement numbers, flags, window and payload."""

    seq: int
    ack: int = 0
    flags: int = 0
    window: int = 0
    data: bytes = b""
    #: RFC 7323 timestamps (TSval, TSecr) in trio seconds; None when absent
    ts_val: float | None = None
    ts_ecr: float | None = None

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def has_ack(self) -> bool:
        return bool(self.flags & ACK)

    @property
    def seq_len(self) -> int:
        """How much sequence space the segment uses (data, plus one each for SYN and FIN)."""
        return len(self.data) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    @property
    def is_control(self) -> bool:
        """True for segments that open or close a connection (SYN, FIN, RST)."""
        return bool(self.flags & (SYN | FIN | RST))

    def reset_reply(self) -> Segment | None:
        """The RST that answers this segment when no connection wants it (RFC 9293 3.10.7.1).

        None for a RST, which is never answered.
        """
        if self.flags & RST:
            return None
        if self.flags & ACK:
            return Segment(seq=self.ack, flags=RST)
        return Segment(seq=0, ack=self.seq + self.seq_len, flags=RST | ACK)

    def describe(self) -> str:
        """Return the flags as tcpdump-like text: ``SYN``, ``SYN-ACK``, ``FIN-ACK``, ``RST``."""
        names = [name for bit, name in ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"))
                 if self.flags & bit]
        if self.flags & ACK:
            names.append("ACK")
        text = "-".join(names) or "NONE"
        return f"{text} {len(self.data)} B" if self.data else text


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error about an earlier packet (only "port-unreachable" is simulated).

    ``original`` is the (proto, source, destination) of the packet that caused it, as a
    NAT must see it to translate the error back to the right internal host.
    """

    kind: str
    original: tuple[Proto, Endpoint, Endpoint]


@dataclass(slots=True, eq=False)
class Packet:
    """One IP packet between two endpoints."""

    proto: Proto
    src: Endpoint
    dst: Endpoint
    payload: bytes | Segment | IcmpError
    #: hops left; routers decrement it and drop the packet at zero
    ttl: int = 64

    @property
    def size(self) -> int:
        """Bytes on the wire: IP and transport headers plus payload."""
        header = IP_HEADER + (20 if ":" in self.src[0] else 0) + _TRANSPORT_HEADER[self.proto]
        payload = self.payload
        if isinstance(payload, Segment):
            return header + len(payload.data)
        if isinstance(payload, IcmpError):
            return header + 28
        return header + len(payload)

    @property
    def segment(self) -> Segment:
        """The TCP segment this packet carries (TypeError if it carries none)."""
        if not isinstance(self.payload, Segment):
            raise TypeError(f"a {self.proto} packet carries no TCP segment")
        return self.payload

    def describe(self) -> str:
        """Return a short text for traces: ``SYN``, ``udp 1200 B``, ``icmp port-unreachable``."""
        payload = self.payload
        if isinstance(payload, Segment):
            return payload.describe()
        if isinstance(payload, IcmpError):
            return f"icmp {payload.kind}"
        return f"udp {len(payload)} B"

    def __repr__(self) -> str:
        return (
            f"<Packet {self.proto} {format_endpoint(self.src)} -> "
            f"{format_endpoint(self.dst)} {self.describe()}>"
        )
