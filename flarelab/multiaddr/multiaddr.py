"""The Multiaddr value type: an immutable, validated, self-describing network address."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, NamedTuple, final

from ..errors import LocalProtocolError
from . import codec
from .codec import Part
from .errors import MultiaddrError
from .protocols import (
    P_DNS,
    P_DNS4,
    P_DNS6,
    P_IP4,
    P_IP6,
    P_IP6ZONE,
    P_P2P,
    P_P2P_CIRCUIT,
    P_TCP,
    P_UDP,
    ProtocolInfo,
    protocol_by_code,
    protocol_by_name,
)
from .transcoders import IP6ZONE as IP6ZONE_TRANSCODER
from .transcoders import P2P as P2P_TRANSCODER

if TYPE_CHECKING:
    from ..identity import PeerId

__all__ = ["Component", "Multiaddr"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOST_CODES: Final = frozenset({P_IP4, P_IP6, P_DNS, P_DNS4, P_DNS6})
_PORT_CODES: Final = frozenset({P_TCP, P_UDP})


def _info(code: int) -> ProtocolInfo:
    info = protocol_by_code(code)
    assert info is not None
    return info


_P2P_INFO: Final = _info(P_P2P)
_IP4_INFO: Final = _info(P_IP4)
_IP6_INFO: Final = _info(P_IP6)
_IP6ZONE_INFO: Final = _info(P_IP6ZONE)
_UNSET: Final[Any] = object()
#: parsed addresses kept for reuse (the same few addresses arrive again and again)
_CACHE_SIZE: Final = 1024


class Component(NamedTuple):
    """One component of a multiaddr: protocol name, code and canonical text value."""

    name: str
    code: int
    #: the canonical text value, None for protocols without a value (``/quic-v1``)
    value: str | None


@final
class Multiaddr:
    """A multiaddr: immutable, hashable and equal by its binary form.

    ``Multiaddr(value)`` takes text (``"/ip4/1.2.3.4/tcp/4001"``), the binary form (bytes)
    or another Multiaddr, validates it completely and raises :class:`MultiaddrError` if it
    is malformed. ``str()`` gives the canonical text (``/ipfs/`` becomes ``/p2p/``, IPv6 is
    compressed, peer ids are base58btc). An *empty* multiaddr (no components, ``str()`` is
    ``""``) only results from :meth:`decapsulate`, :meth:`without_peer_id` and the
    ``split_*`` methods; it cannot be parsed or sent.
    """

    __slots__ = ("_bytes", "_components", "_parts", "_peer_id", "_text")

    _bytes: bytes
    _parts: tuple[Part, ...]
    _text: str | None
    _components: tuple[Component, ...] | None
    _peer_id: Any

    def __new__(cls, value: str | bytes | bytearray | memoryview | Multiaddr) -> Multiaddr:
        """Parse ``value`` (text, binary or a Multiaddr)."""
        if isinstance(value, Multiaddr):
            return value
        if isinstance(value, str):
            return _from_text(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return _from_bytes(bytes(value))
        raise TypeError(f"cannot make a Multiaddr from {type(value).__name__}")

    @classmethod
    def _make(cls, data: bytes, parts: tuple[Part, ...]) -> Multiaddr:
        self = object.__new__(cls)
        object.__setattr__(self, "_bytes", data)
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_text", None)
        object.__setattr__(self, "_components", None)
        object.__setattr__(self, "_peer_id", _UNSET)
        return self

    @classmethod
    def _from_parts(cls, parts: tuple[Part, ...]) -> Multiaddr:
        data = codec.encode_parts(parts)
        codec.check_parts(parts, data)
        return cls._make(data, parts)

    @classmethod
    def from_string(cls, text: str) -> Multiaddr:
        """Parse a text multiaddr."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        return _from_text(text)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Multiaddr:
        """Parse a binary multiaddr (as sent in identify, DCUtR, relay and peer records)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        return _from_bytes(bytes(data))

    @classmethod
    def from_ip_port(cls, ip: str | IPAddress, port: int, transport: str = "tcp") -> Multiaddr:
        """Build ``/ip4|ip6/<ip>/tcp|udp/<port>`` from a socket address.

        An IPv6 zone (``fe80::1%eth0``) becomes ``/ip6zone/eth0/ip6/fe80::1``, and an
        IPv4-mapped IPv6 address (``::ffff:1.2.3.4``, what a dual-stack socket reports)
        becomes ``/ip4/1.2.3.4``, as go's ``manet.FromIP`` does.
        """
        info = protocol_by_name(transport)
        if transport not in ("tcp", "udp") or info is None:
            raise LocalProtocolError(f"transport must be 'tcp' or 'udp', not {transport!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise MultiaddrError(f"port {port!r} is not an integer in 0-65535")
        try:
            addr = ip if not isinstance(ip, str) else ipaddress.ip_address(ip)
        except ValueError:
            raise MultiaddrError(f"{ip!r} is not an IP address") from None
        parts: list[Part] = []
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            elif addr.scope_id:
                zone = addr.scope_id.encode("utf-8", "surrogatepass")
                try:
                    IP6ZONE_TRANSCODER.validate(zone)
                except ValueError as exc:
                    raise MultiaddrError(f"IPv6 zone of {ip!r}: {exc}") from None
                parts.append((_IP6ZONE_INFO, zone))
        if isinstance(addr, ipaddress.IPv4Address):
            parts.append((_IP4_INFO, addr.packed))
        elif isinstance(addr, ipaddress.IPv6Address):
            parts.append((_IP6_INFO, addr.packed))
        else:
            raise TypeError(f"expected an IP address, got {type(ip).__name__}")
        parts.append((info, port.to_bytes(2, "big")))
        return cls._from_parts(tuple(parts))

    # --- forms ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Return the binary form."""
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = codec.format_parts(self._parts)
            object.__setattr__(self, "_text", text)
        return text

    def __repr__(self) -> str:
        return f"Multiaddr({str(self)!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Multiaddr is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Multiaddr is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Multiaddr.from_bytes, (self._bytes,))

    def __copy__(self) -> Multiaddr:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Multiaddr:
        return self

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Multiaddr):
            return self._bytes == other._bytes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __len__(self) -> int:
        return len(self._parts)

    def __iter__(self) -> Iterator[Component]:
        return iter(self.components())

    # --- components ----------------------------------------------------------------------

    def components(self) -> tuple[Component, ...]:
        """Return the components, each with its canonical text value."""
        comps = self._components
        if comps is None:
            comps = tuple(
                Component(info.name, info.code, codec.format_value(info, value))
                for info, value in self._parts
            )
            object.__setattr__(self, "_components", comps)
        return comps

    def protocol_names(self) -> tuple[str, ...]:
        """Return the protocol names in order (``("ip4", "udp", "quic-v1")``)."""
        return tuple(info.name for info, _value in self._parts)

    def has_protocol(self, name: str) -> bool:
        """Say whether any component uses the protocol ``name``."""
        code = _code_of(name)
        return any(info.code == code for info, _value in self._parts)

    def value_for(self, name: str) -> str | None:
        """Return the text value of the first ``name`` component.

        None if there is none, and also for a protocol without a value (use
        :meth:`has_protocol` to tell those apart).
        """
        code = _code_of(name)
        for info, value in self._parts:
            if info.code == code:
                return codec.format_value(info, value)
        return None

    # --- composition ---------------------------------------------------------------------

    def encapsulate(self, other: Multiaddr | str) -> Multiaddr:
        """Return ``self`` followed by ``other``."""
        other = Multiaddr(other)
        if not other._parts:
            return self
        if not self._parts:
            return other
        return Multiaddr._from_parts(self._parts + other._parts)

    def decapsulate(self, other: Multiaddr | str) -> Multiaddr:
        """Remove the last occurrence of ``other`` and everything after it.

        Components must match exactly (protocol and value), as in go-multiaddr; if ``other``
        does not occur, ``self`` is returned unchanged.
        """
        needle = Multiaddr(other)._parts
        parts = self._parts
        n = len(needle)
        if n == 0:
            return self
        for start in range(len(parts) - n, -1, -1):
            if parts[start : start + n] == needle:
                return Multiaddr._make(codec.encode_parts(parts[:start]), parts[:start])
        return self

    def split_first(self) -> tuple[Multiaddr, Multiaddr]:
        """Return (the first component, the rest) as multiaddrs."""
        if not self._parts:
            raise LocalProtocolError("cannot split an empty multiaddr")
        return self._slice(0, 1), self._slice(1, len(self._parts))

    def split_last(self) -> tuple[Multiaddr, Multiaddr]:
        """Return (everything but the last component, the last component) as multiaddrs."""
        n = len(self._parts)
        if not n:
            raise LocalProtocolError("cannot split an empty multiaddr")
        return self._slice(0, n - 1), self._slice(n - 1, n)

    def _slice(self, start: int, stop: int) -> Multiaddr:
        parts = self._parts[start:stop]
        return Multiaddr._make(codec.encode_parts(parts), parts)

    # --- peer ids ------------------------------------------------------------------------

    def _peer_index(self) -> int | None:
        """Index of the /p2p/ component naming this address's peer (none after /p2p-circuit)."""
        for i in range(len(self._parts) - 1, -1, -1):
            code = self._parts[i][0].code
            if code == P_P2P:
                return i
            if code == P_P2P_CIRCUIT:
                return None
        return None

    @property
    def peer_id(self) -> PeerId | None:
        """The peer this address names: its last /p2p/ component, if no /p2p-circuit follows.

        ``/ip4/…/p2p/R/p2p-circuit/p2p/T`` names T; ``/ip4/…/p2p/R/p2p-circuit`` names no
        peer (R is the relay). Raises :class:`~flarelab.identity.InvalidPeerIdError` if the
        multihash does not hold a valid key.
        """
        cached = self._peer_id
        if cached is _UNSET:
            index = self._peer_index()
            if index is None:
                cached = None
            else:
                from ..identity import PeerId  # identity imports this package

                cached = PeerId.from_bytes(self._parts[index][1])
            object.__setattr__(self, "_peer_id", cached)
        return cached

    def with_peer_id(self, peer_id: PeerId | str | bytes | bytearray) -> Multiaddr:
        """Return this address naming ``peer_id``: replace its /p2p/ component or append one."""
        if isinstance(peer_id, str):
            try:
                multihash = P2P_TRANSCODER.parse(peer_id)
            except ValueError as exc:
                raise MultiaddrError(f"invalid peer id {peer_id!r}: {exc}") from None
        else:
            if isinstance(peer_id, bytes | bytearray):
                multihash = bytes(peer_id)
            else:
                multihash = peer_id.to_bytes()
            try:
                P2P_TRANSCODER.validate(multihash)
            except ValueError as exc:
                raise MultiaddrError(f"invalid peer id: {exc}") from None
        part: Part = (_P2P_INFO, multihash)
        index = self._peer_index()
        if index is None:
            return Multiaddr._from_parts((*self._parts, part))
        if self._parts[index][1] == multihash:
            return self
        return Multiaddr._from_parts((*self._parts[:index], part, *self._parts[index + 1 :]))

    def without_peer_id(self) -> Multiaddr:
        """Return this address without the /p2p/ component that :attr:`peer_id` reads."""
        index = self._peer_index()
        if index is None:
            return self
        parts = self._parts[:index] + self._parts[index + 1 :]
        return Multiaddr._make(codec.encode_parts(parts), parts)

    @property
    def is_relayed(self) -> bool:
        """True for a circuit-relay address (it has a /p2p-circuit component)."""
        return any(info.code == P_P2P_CIRCUIT for info, _value in self._parts)

    # --- hosts and ports -----------------------------------------------------------------

    def _host_index(self) -> int | None:
        """Index of the leading host component (ip4/ip6/dns*), skipping one /ip6zone/."""
        parts = self._parts
        if not parts:
            return None
        first = parts[0][0].code
        if first == P_IP6ZONE:
            if len(parts) > 1 and parts[1][0].code == P_IP6:
                return 1
            return None
        return 0 if first in _HOST_CODES else None

    @property
    def ip_address(self) -> IPAddress | None:
        """The IP address this address starts with (after an optional /ip6zone/), or None.

        The zone is not included (see :meth:`host_port` for a dialable host). For a relayed
        address this is the relay's IP.
        """
        index = self._host_index()
        if index is None:
            return None
        info, value = self._parts[index]
        if info.code == P_IP4:
            return ipaddress.IPv4Address(value)
        if info.code == P_IP6:
            return ipaddress.IPv6Address(value)
        return None

    def host_port(self) -> tuple[str, int]:
        """Return (host, port) for an address that starts ip4|ip6|dns|dns4|dns6 + tcp|udp.

        The host is an IP literal (with ``%zone`` for a zoned IPv6 address) or a DNS name.
        Raises :class:`MultiaddrError` for any other address.
        """
        index = self._host_index()
        parts = self._parts
        if index is None or index + 1 >= len(parts) or parts[index + 1][0].code not in _PORT_CODES:
            raise MultiaddrError(
                f"{self} has no host and port (expected /ip4|ip6|dns|dns4|dns6/…/tcp|udp/…)"
            )
        info, value = parts[index]
        host = codec.format_value(info, value)
        assert host is not None
        if index == 1:
            host = f"{host}%{parts[0][1].decode('utf-8')}"
        return host, int.from_bytes(parts[index + 1][1], "big")

    @property
    def is_thin_waist(self) -> bool:
        """True if the address starts with an IP or DNS host and a TCP or UDP port."""
        index = self._host_index()
        if index is None or index + 1 >= len(self._parts):
            return False
        return self._parts[index + 1][0].code in _PORT_CODES


def _code_of(name: str) -> int:
    info = protocol_by_name(name)
    if info is None:
        raise LocalProtocolError(f"unknown multiaddr protocol {name!r}")
    return info.code


@lru_cache(maxsize=_CACHE_SIZE)
def _from_text(text: str) -> Multiaddr:
    data, parts = codec.parse_text(text)
    return Multiaddr._make(data, parts)


@lru_cache(maxsize=_CACHE_SIZE)
def _from_bytes(data: bytes) -> Multiaddr:
    return Multiaddr._make(data, codec.parse_binary(data))
