"""Which of our addresses to offer in CONNECT, and which of the peer's to dial or punch.

Hole punching works only on addresses that

* are public (``node.config.address_policy``: the netns lab and simnet widen it to their
  documentation ranges), since a private or reserved address names a host behind someone
  else's NAT, not the mapping our packets must hit;
* name a host and port directly: ``/ip4|ip6/<ip>/tcp/<port>`` or ``.../udp/<port>/quic-v1``
  (never a relay address, never a DNS name: the NAT mapping is for one IP);
* share a *punch key* -- IP version and transport -- with an address of the other side: a
  TCP simultaneous open needs both sides to dial TCP at the same moment, a QUIC punch
  needs B's datagrams and A's dial on the same path. Each side dials or punches only the
  peer's addresses whose key matches one it offered itself, so both pick the same set.

Our own addresses are the listen addresses, the observed addresses that identify
confirmed (enough distinct observers, see :class:`~flarelab.node.observed.ObservedAddrManager`)
and the node's extra addresses; with ``trust_unconfirmed`` also observations not yet
confirmed (rust-libp2p sends those; a lone observer could make our peer dial anywhere).

Every function returns an :class:`AddressChoice`: the addresses, and for each one left out
the reason, so a trace can say why nothing was tried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ...multiaddr import AddressPolicy, Multiaddr, MultiaddrError

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...node import Node

__all__ = [
    "MAX_DIAL_ADDRS",
    "MAX_OFFERED_ADDRS",
    "AddressChoice",
    "PunchKey",
    "describe_key",
    "nat_hint",
    "our_addresses",
    "punch_key",
    "reversal_addresses",
    "their_addresses",
]

#: addresses of ours a CONNECT offers at most
MAX_OFFERED_ADDRS: Final = 16
#: addresses of the peer's we dial or punch at most (a peer must not make us spray packets)
MAX_DIAL_ADDRS: Final = 8

#: (IP version, transport): (4, "tcp"), (6, "quic-v1")
PunchKey = tuple[int, str]


def punch_key(addr: Multiaddr) -> PunchKey | None:
    """The punch key of ``/ip4|ip6/<ip>/tcp/<port>`` or ``.../udp/<port>/quic-v1`` (a
    trailing ``/p2p/<id>`` allowed), else None."""
    names = addr.protocol_names()
    if names and names[-1] == "p2p":
        names = names[:-1]
    if not names or names[0] not in ("ip4", "ip6"):
        return None
    version = 4 if names[0] == "ip4" else 6
    if names[1:] == ("tcp",):
        return version, "tcp"
    if names[1:] == ("udp", "quic-v1"):
        return version, "quic-v1"
    return None


def describe_key(key: PunchKey) -> str:
    """``quic-v1 over IPv4``."""
    return f"{key[1]} over IPv{key[0]}"


@dataclass(frozen=True, slots=True)
class AddressChoice:
    """Chosen addresses, and the ones left out with the reason for each."""

    addrs: tuple[Multiaddr, ...]
    refused: tuple[tuple[Multiaddr, str], ...] = ()
    #: why nothing was chosen (empty when something was)
    reason: str = ""

    @property
    def keys(self) -> frozenset[PunchKey]:
        return frozenset(k for a in self.addrs if (k := punch_key(a)) is not None)

    def __bool__(self) -> bool:
        return bool(self.addrs)


def _summary(who: str, total: int, refused: Sequence[tuple[Multiaddr, str]],
             limit: int = 3) -> str:
    if total == 0:
        return f"{who} no address at all"
    shown = "; ".join(f"{addr} {why}" for addr, why in refused[:limit])
    more = f"; and {len(refused) - limit} more" if len(refused) > limit else ""
    words = "address" if total == 1 else "addresses"
    return f"{who} {total} {words}, none usable: {shown}{more}"


def _candidate(addr: Multiaddr, policy: AddressPolicy) -> str | None:
    """Why ``addr`` cannot be punched to at all (None: it can)."""
    if addr.is_relayed:
        return "is a relay address"
    if punch_key(addr) is None:
        return "is not an IP address with a TCP or QUIC port"
    if not policy.is_public(addr):
        return "is not public"
    return None


def our_addresses(node: Node, now: float, *, trust_unconfirmed: bool = False,
                  limit: int = MAX_OFFERED_ADDRS) -> AddressChoice:
    """The addresses of ours to offer in CONNECT, best first.

    Public listen addresses first (a public host or an IPv6 firewall without translation),
    then confirmed observations, then extra addresses; only keys we listen on.
    """
    policy = node.config.address_policy
    listen = node.listen_addrs()
    listening = {k for a in listen if (k := punch_key(a)) is not None}
    candidates: list[Multiaddr] = list(listen)
    candidates += node.observed_addrs.confirmed(now)
    if trust_unconfirmed:
        seen = sorted(node.observed_addrs.all(now), key=lambda o: -len(o.observers))
        candidates += [o.addr for o in seen]
    for extra in node.extra_addrs.values():
        candidates += extra
    chosen: list[Multiaddr] = []
    refused: list[tuple[Multiaddr, str]] = []
    for addr in dict.fromkeys(a.without_peer_id() for a in candidates):
        why = _candidate(addr, policy)
        if why is None and punch_key(addr) not in listening:
            why = "uses a transport we do not listen on"
        if why is None and len(chosen) >= limit:
            why = f"is beyond the first {limit}"
        if why is None:
            chosen.append(addr)
        else:
            refused.append((addr, why))
    if chosen:
        return AddressChoice(tuple(chosen), tuple(refused))
    if not refused:
        reason = "we have no address to offer (not listening?)"
    elif any(why == "is not public" for _, why in refused):
        reason = ("we have no public address to offer: our listen addresses are private and "
                  "no observed address of ours is confirmed yet")
    else:
        reason = _summary("we have", len(refused), refused)
    return AddressChoice((), tuple(refused), reason)


def _strip_peer(addr: Multiaddr, peer: PeerId | None) -> tuple[Multiaddr | None, str]:
    try:
        named = addr.peer_id
    except (MultiaddrError, ValueError):
        return None, "names an invalid peer id"
    if named is not None and peer is not None and named != peer:
        return None, f"names another peer ({named.short()})"
    return addr.without_peer_id(), ""


def their_addresses(
    offered: Iterable[Multiaddr],
    *,
    peer: PeerId | None,
    policy: AddressPolicy,
    ours: Iterable[PunchKey],
    can_dial: Callable[[Multiaddr], bool],
    who: str = "the peer",
    limit: int = MAX_DIAL_ADDRS,
) -> AddressChoice:
    """The peer's CONNECT addresses we may dial or punch, in the order offered."""
    keys = frozenset(ours)
    offered = list(offered)
    chosen: list[Multiaddr] = []
    refused: list[tuple[Multiaddr, str]] = []
    for raw in offered:
        addr, why = _strip_peer(raw, peer)
        if addr is None:
            refused.append((raw, why))
            continue
        reason = _candidate(addr, policy)
        key = punch_key(addr)
        if reason is None and key not in keys:
            assert key is not None
            reason = f"uses {describe_key(key)}, which we did not offer"
        if reason is None and not can_dial(addr):
            reason = "cannot be dialled by any of our transports"
        if reason is None and addr in chosen:
            continue
        if reason is None and len(chosen) >= limit:
            reason = f"is beyond the first {limit}"
        if reason is None:
            chosen.append(addr)
        else:
            refused.append((raw, reason))
    if chosen:
        return AddressChoice(tuple(chosen), tuple(refused))
    return AddressChoice((), tuple(refused), _summary(f"{who} offered", len(offered), refused))


def reversal_addresses(
    advertised: Iterable[Multiaddr],
    *,
    peer: PeerId | None,
    policy: AddressPolicy,
    can_dial: Callable[[Multiaddr], bool],
    limit: int = MAX_DIAL_ADDRS,
) -> AddressChoice:
    """The peer's advertised public, direct addresses for a connection reversal."""
    chosen: list[Multiaddr] = []
    refused: list[tuple[Multiaddr, str]] = []
    for raw in advertised:
        addr, why = _strip_peer(raw, peer)
        if addr is None:
            refused.append((raw, why))
            continue
        if addr.is_relayed:
            reason: str | None = "is a relay address"
        elif not addr.is_thin_waist:
            reason = "is not a direct address"
        elif not policy.is_public(addr):
            reason = "is not public"
        elif not can_dial(addr):
            reason = "cannot be dialled by any of our transports"
        else:
            reason = None
        if reason is None and addr not in chosen and len(chosen) < limit:
            chosen.append(addr)
        elif reason is not None:
            refused.append((raw, reason))
    return AddressChoice(tuple(chosen), tuple(refused),
                         "" if chosen else "the peer advertises no public direct address")


def _ports(addrs: Iterable[Multiaddr]) -> dict[PunchKey, set[int]]:
    out: dict[PunchKey, set[int]] = {}
    for addr in addrs:
        key = punch_key(addr)
        if key is not None:
            out.setdefault(key, set()).add(addr.host_port()[1])
    return out


def _moved(offered: Iterable[Multiaddr], listen: Iterable[Multiaddr]) -> str | None:
    """"4001 to 38211" if no offered address kept a listen port of its kind, else None."""
    listening = _ports(listen)
    moves = []
    for key, ports in _ports(offered).items():
        own = listening.get(key)
        if not own or ports & own:
            return None  # kept its port (or nothing to compare with)
        moves.append(f"{min(own)} to {min(ports)}")
    return moves[0] if moves else None


def nat_hint(ours: Iterable[Multiaddr], our_listen: Iterable[Multiaddr],
             theirs: Iterable[Multiaddr], their_listen: Iterable[Multiaddr],
             who: str = "the peer") -> str:
    """A note for a failed punch when a NAT did not keep the listen port, else "".

    A NAT that keeps the port (or at least one mapping per port) lets the peer predict
    where to send; one that picks a new port for every destination (a symmetric NAT) makes
    the observed address useless to anyone but the observer.
    """
    notes = []
    mine = _moved(ours, our_listen)
    if mine is not None:
        notes.append(f"our NAT mapped port {mine}")
    other = _moved(theirs, their_listen)
    if other is not None:
        notes.append(f"{who}'s NAT mapped port {other}")
    if not notes:
        return ""
    return (" and ".join(notes) + "; a NAT that gives every destination a new port "
            "(a symmetric NAT) defeats hole punching")
