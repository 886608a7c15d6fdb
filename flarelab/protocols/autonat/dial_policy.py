"""Which addresses an AutoNAT server dials, and which a client asks about (pure functions).

A server must not become a weapon: it dials only what the rules allow and says why it
refused the rest (the reasons end up in the response text and the trace).

v1 (spec: MUST NOT dial an address not based on the requester's observed IP): an address is
dialled only if its IP *is* the observed IP, it is a plain IP address with a TCP or UDP
port (no DNS name, no relay), the address policy counts it public and one of our transports
can dial it. go- and rust-libp2p instead rewrite other IPs to the observed one; we refuse
them, so a server never tests an address the client did not name. Our client therefore
names its observed addresses itself.

v2: the server picks the first address it may dial (public, plain IP, a transport for it);
the address may have another IP than the observed one, but then the client must first pay
with dial data (amplification protection).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import AddressPolicy, Multiaddr

__all__ = [
    "V1Selection",
    "V2Choice",
    "observed_refusal",
    "probe_candidates",
    "same_ip",
    "select_v1",
    "select_v2",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NOT_IP: Final = "not an IP address with a TCP or UDP port"
RELAYED: Final = "a relayed address"
OTHER_PEER: Final = "names another peer"
OTHER_IP: Final = "not on the observed IP"
NOT_PUBLIC: Final = "not a public address"
NO_TRANSPORT: Final = "no transport here dials it"
DUPLICATE: Final = "a duplicate"
UNPARSABLE: Final = "malformed"

CanDial = Callable[["Multiaddr"], bool]


def _canonical(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def same_ip(a: Multiaddr, b: Multiaddr) -> bool:
    """True if both addresses start with the same IP address."""
    ip_a, ip_b = a.ip_address, b.ip_address
    return ip_a is not None and ip_b is not None and _canonical(ip_a) == _canonical(ip_b)


def _shape_refusal(addr: Multiaddr, requester: PeerId | None) -> str | None:
    """Why ``addr`` is no address to dial at all, or None."""
    if addr.is_relayed:
        return RELAYED
    if addr.ip_address is None or not addr.is_thin_waist:
        return NOT_IP
    peer = addr.peer_id
    if peer is not None and requester is not None and peer != requester:
        return OTHER_PEER
    return None


def observed_refusal(observed: Multiaddr | None, policy: AddressPolicy) -> str | None:
    """Why a server cannot test a requester it observes at ``observed``, or None.

    Without a public observed IP (a relayed connection, a peer on our LAN) there is nothing
    a dial-back could prove.
    """
    if observed is None or observed.is_relayed:
        return "the request came over a relayed connection"
    if observed.ip_address is None:
        return "the requester has no observed IP address"
    if not policy.is_public(observed):
        return f"the requester's observed address {observed} is not public"
    return None


@dataclass(frozen=True, slots=True)
class V1Selection:
    """The addresses a v1 server will dial, and the others with the reason for each."""

    candidates: tuple[Multiaddr, ...]
    refused: tuple[tuple[Multiaddr, str], ...]

    def reason(self) -> str:
        """Why nothing (or not everything) is dialled, in words, for the response text."""
        if not self.refused:
            return ""
        counts: dict[str, int] = {}
        for _, why in self.refused:
            counts[why] = counts.get(why, 0) + 1
        return "; ".join(f"{n} {'address' if n == 1 else 'addresses'} {why}"
                         for why, n in counts.items())


def select_v1(
    requested: Iterable[Multiaddr],
    *,
    observed: Multiaddr,
    requester: PeerId | None,
    policy: AddressPolicy,
    can_dial: CanDial,
    max_addrs: int = 16,
) -> V1Selection:
    """Pick the requested addresses a v1 server may dial (at most ``max_addrs``)."""
    candidates: list[Multiaddr] = []
    refused: list[tuple[Multiaddr, str]] = []
    for addr in requested:
        why = _shape_refusal(addr, requester)
        if why is None:
            plain = addr.without_peer_id()
            if not same_ip(plain, observed):
                why = OTHER_IP
            elif not policy.is_public(plain):
                why = NOT_PUBLIC
            elif not can_dial(plain):
                why = NO_TRANSPORT
            elif plain in candidates:
                continue
            elif len(candidates) < max_addrs:
                candidates.append(plain)
                continue
            else:
                continue  # enough to try; go stops at 16 too
        refused.append((addr, why))
    return V1Selection(tuple(candidates), tuple(refused))


@dataclass(frozen=True, slots=True)
class V2Choice:
    """The one address a v2 server dials (``index`` into the request), or none."""

    index: int | None
    addr: Multiaddr | None
    needs_dial_data: bool
    refused: tuple[tuple[int, str], ...]

    def reason(self) -> str:
        """Why each address before the chosen one (or every address) was refused."""
        return "; ".join(f"#{i} {why}" for i, why in self.refused)


def select_v2(
    addrs: Sequence[Multiaddr | None],
    *,
    observed: Multiaddr | None,
    requester: PeerId | None,
    policy: AddressPolicy,
    can_dial: CanDial,
) -> V2Choice:
    """Pick the first address of a v2 request the server may dial."""
    refused: list[tuple[int, str]] = []
    for index, addr in enumerate(addrs):
        if addr is None:
            refused.append((index, UNPARSABLE))
            continue
        why = _shape_refusal(addr, requester)
        plain = addr.without_peer_id()
        if why is None and not policy.is_public(plain):
            why = NOT_PUBLIC
        if why is None and not can_dial(plain):
            why = NO_TRANSPORT
        if why is not None:
            refused.append((index, why))
            continue
        needs_data = observed is None or not same_ip(plain, observed)
        return V2Choice(index, plain, needs_data, tuple(refused))
    return V2Choice(None, None, False, tuple(refused))


def probe_candidates(
    addrs: Iterable[Multiaddr], policy: AddressPolicy, *, limit: int = 16
) -> list[Multiaddr]:
    """The addresses of ours worth asking a server about: public, plain IP, not relayed;
    without ``/p2p``, deduplicated, in the given order, at most ``limit``."""
    out: list[Multiaddr] = []
    for addr in addrs:
        if _shape_refusal(addr, None) is not None:
            continue
        plain = addr.without_peer_id()
        if plain in out or not policy.is_public(plain):
            continue
        out.append(plain)
        if len(out) >= limit:
            break
    return out
