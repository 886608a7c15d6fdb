"""The NAT kinds the real lab builds, as nftables rulesets for a router's namespace.

Every router has two interfaces, ``wan0`` (on the lab's internet) and ``lan0`` (a bridge
for its LAN), and runs one of these kinds. Each is Linux ``masquerade`` (conntrack picks
the external port per connection) plus a stateful firewall; they differ in what happens to
a packet that arrives from the internet and matches no conntrack entry:

``home_router``
    Port-preserving masquerade (the source port is kept when its tuple is free). New
    inbound packets are dropped at the router's *input* hook, so its own stack never sees
    them: nothing answers and, since a dropped packet's conntrack entry is never confirmed,
    nothing is recorded. This is what home routers do, and hole punching works through it.
``answering_router``
    The same masquerade, but nothing filters the router's input: its own stack answers an
    unsolicited packet (TCP RST, ICMP port unreachable) and conntrack records that flow.
    In a sub-millisecond lab the peer's first packet arrives before our own leaves, the
    router answers it, and masquerade must then move our own packet to another port: the
    punch aims at the wrong port (DESIGN.md, "Real NAT lab").
``symmetric``
    ``masquerade fully-random``: every connection gets a random external port, so the
    address a peer learned from an observer is never the one its punch must reach.
    Unsolicited inbound is dropped at input, as the home router does.

IPv6 is forwarded without translation; every kind then acts as a home router does for
IPv6: a stateful firewall that lets out anything from the LAN and in only what belongs to
a connection the LAN opened (unsolicited inbound is dropped in the forward hook). Neighbour
discovery reaches the router itself on both sides.

:func:`simnet_behavior` names the :mod:`flarelab.simnet` preset that models each kind, so
the RFC 4787 theory (:mod:`flarelab.simnet.theory`) and the simulated network can predict
what the lab measures.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from ..errors import LocalProtocolError
from ..simnet.nat_behavior import PRESETS, NatBehavior

__all__ = [
    "LAN_IFACE",
    "WAN_IFACE",
    "NatKind",
    "nat_kind",
    "ruleset",
    "simnet_behavior",
]

WAN_IFACE: Final = "wan0"
LAN_IFACE: Final = "lan0"


class NatKind(StrEnum):
    """A router the lab can build (the value is the simnet preset's name)."""

    HOME_ROUTER = "home_router"
    ANSWERING_ROUTER = "answering_router"
    SYMMETRIC = "symmetric"

    @property
    def description(self) -> str:
        """One line for people: what the router does with unsolicited inbound packets."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: Final = {
    NatKind.HOME_ROUTER: "port-preserving masquerade, unsolicited inbound dropped at input",
    NatKind.ANSWERING_ROUTER: "port-preserving masquerade, its own stack answers unsolicited "
                              "inbound (RST / ICMP)",
    NatKind.SYMMETRIC: "masquerade fully-random (a random port per connection), unsolicited "
                       "inbound dropped at input",
}


def nat_kind(value: str | NatKind) -> NatKind:
    """Return the kind named ``value`` (``home-router`` works for ``home_router``)."""
    if isinstance(value, NatKind):
        return value
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    try:
        return NatKind(key)
    except ValueError:
        known = ", ".join(kind.value for kind in NatKind)
        raise LocalProtocolError(f"unknown lab NAT kind {value!r}; known: {known}") from None


def simnet_behavior(kind: str | NatKind) -> NatBehavior:
    """Return the simnet preset that models ``kind``."""
    return PRESETS[nat_kind(kind).value]


def ruleset(kind: str | NatKind, *, wan: str = WAN_IFACE, lan: str = LAN_IFACE) -> str:
    """Return the nftables script (for ``nft -f -``) that makes a router of ``kind``.

    The script starts with ``flush ruleset``: a router's namespace holds nothing else.
    """
    kind = nat_kind(kind)
    for name in (wan, lan):
        if not name or not all(c.isalnum() or c in "-_." for c in name) or len(name) > 15:
            raise LocalProtocolError(f"bad interface name {name!r}")
    masquerade = "masquerade fully-random" if kind is NatKind.SYMMETRIC else "masquerade"
    if kind is NatKind.ANSWERING_ROUTER:
        unsolicited = (
            "        # no filter: the router's own stack answers anything unsolicited\n"
            "        # (TCP RST, ICMP port unreachable), and conntrack records that flow\n"
            "        policy accept;\n"
        )
    else:
        unsolicited = (
            "        policy drop;\n"
            "        ct state established,related accept\n"
            '        iifname "lo" accept\n'
            f'        iifname "{lan}" accept\n'
            "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit,"
            " nd-router-advert } accept\n"
            f"        # anything else from {wan} is unsolicited: dropped here, before the\n"
            "        # stack can answer it and before conntrack confirms an entry for it\n"
        )
    return (
        f"# flarelab lab router: {kind.value} ({kind.description})\n"
        "flush ruleset\n"
        "table ip flarelab_nat {\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f'        oifname "{wan}" {masquerade}\n'
        "    }\n"
        "}\n"
        "table inet flarelab_filter {\n"
        "    chain input {\n"
        "        type filter hook input priority filter;\n"
        f"{unsolicited}"
        "    }\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy drop;\n"
        "        ct state established,related accept\n"
        f'        iifname "{lan}" oifname "{wan}" accept\n'
        "        # new inbound (IPv6 to the LAN: no translation, a stateful firewall)\n"
        "    }\n"
        "}\n"
    )
