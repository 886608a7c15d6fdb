"""Which addresses DCUtR offers and which it dials: public, direct, a shared punch key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import DEFAULT_POLICY, AddressPolicy, Multiaddr
from flarelab.node.config import NodeConfig
from flarelab.node.observed import ObservedAddrManager
from flarelab.protocols.dcutr.addresses import (
    nat_hint,
    our_addresses,
    punch_key,
    reversal_addresses,
    their_addresses,
)

LAB = AddressPolicy(treat_as_public=("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
M = Multiaddr


def _peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)


PEER, OTHER = _peer(), _peer()


@dataclass
class FakeNode:
    """What our_addresses reads from a node."""

    listen: list[Multiaddr]
    config: NodeConfig = field(default_factory=lambda: NodeConfig(address_policy=LAB))
    observed_addrs: ObservedAddrManager = field(
        default_factory=lambda: ObservedAddrManager(threshold=2, group_by="peer"))
    extra_addrs: dict[str, list[Multiaddr]] = field(default_factory=dict)

    def listen_addrs(self) -> list[Multiaddr]:
        return list(self.listen)


def test_punch_keys() -> None:
    assert punch_key(M("/ip4/1.2.3.4/tcp/1")) == (4, "tcp")
    assert punch_key(M(f"/ip6/2001:db8::1/udp/1/quic-v1/p2p/{PEER}")) == (6, "quic-v1")
    for addr in ("/dns4/x.example/tcp/1", "/ip4/1.2.3.4/udp/1", "/ip4/1.2.3.4/tcp/1/ws",
                 "/ip4/1.2.3.4/udp/1/quic-v1/webtransport",
                 f"/ip4/1.2.3.4/tcp/1/p2p/{PEER}/p2p-circuit"):
        assert punch_key(M(addr)) is None, addr


def test_our_addresses_public_observed_and_extra() -> None:
    node: Any = FakeNode([M("/ip4/192.168.1.2/tcp/4001"), M("/ip4/192.168.1.2/udp/4001/quic-v1")])
    # nothing confirmed yet: nothing to offer, and the reason says so
    choice = our_addresses(node, 0.0)
    assert not choice and "no observed address of ours is confirmed yet" in choice.reason
    observed = M("/ip4/203.0.113.9/tcp/4001")
    node.observed_addrs.record(observed, PEER, None, 0.0)
    assert our_addresses(node, 0.0).addrs == ()
    assert our_addresses(node, 0.0, trust_unconfirmed=True).addrs == (observed,)
    node.observed_addrs.record(observed, OTHER, None, 0.0)  # a second observer confirms
    node.extra_addrs["relay"] = [
        M(f"/ip4/198.51.100.1/tcp/4001/p2p/{PEER}/p2p-circuit"),  # relayed: never
        M("/ip4/198.51.100.77/udp/9/quic-v1"),
        M("/ip6/2001:db8::5/tcp/4001"),  # we do not listen on IPv6
    ]
    choice = our_addresses(node, 0.0)
    assert choice.addrs == (observed, M("/ip4/198.51.100.77/udp/9/quic-v1"))
    refused = dict(choice.refused)
    assert refused[M("/ip4/192.168.1.2/tcp/4001")] == "is not public"
    assert refused[M("/ip6/2001:db8::5/tcp/4001")] == "uses a transport we do not listen on"
    assert refused[M(f"/ip4/198.51.100.1/tcp/4001/p2p/{PEER}/p2p-circuit")] == \
        "is a relay address"
    assert our_addresses(node, 0.0, limit=1).addrs == (observed,)


def test_a_public_listener_offers_itself() -> None:
    node: Any = FakeNode([M("/ip4/198.51.100.3/tcp/4001")])
    assert our_addresses(node, 0.0).addrs == (M("/ip4/198.51.100.3/tcp/4001"),)
    node.config = NodeConfig(address_policy=DEFAULT_POLICY)  # go's and js's view
    assert our_addresses(node, 0.0).addrs == ()


def _theirs(offered: list[str], ours: set[tuple[int, str]], **kw: Any) -> Any:
    return their_addresses([M(a) for a in offered], peer=PEER, policy=LAB, ours=ours,
                           can_dial=lambda a: True, who="A", **kw)


def test_their_addresses_share_our_keys() -> None:
    offered = [
        "/ip4/203.0.113.1/tcp/4001",
        f"/ip4/203.0.113.1/udp/4001/quic-v1/p2p/{PEER}",  # our peer's id: stripped
        f"/ip4/203.0.113.2/tcp/1/p2p/{OTHER}",  # someone else's: refused
        "/ip4/10.0.0.1/tcp/4001",
        "/ip6/2001:db8::1/tcp/4001",
        "/ip4/203.0.113.1/tcp/4001",  # a repeat
    ]
    choice = _theirs(offered, {(4, "tcp"), (4, "quic-v1")})
    assert choice.addrs == (M("/ip4/203.0.113.1/tcp/4001"),
                            M("/ip4/203.0.113.1/udp/4001/quic-v1"))
    why = dict(choice.refused)
    assert why[M("/ip4/10.0.0.1/tcp/4001")] == "is not public"
    assert why[M("/ip6/2001:db8::1/tcp/4001")] == "uses tcp over IPv6, which we did not offer"
    assert why[M(f"/ip4/203.0.113.2/tcp/1/p2p/{OTHER}")].startswith("names another peer")
    # only TCP offered by us: A's QUIC address is of no use
    assert _theirs(offered, {(4, "tcp")}).addrs == (M("/ip4/203.0.113.1/tcp/4001"),)
    # a cap on how many we dial
    many = [f"/ip4/203.0.113.{i}/tcp/4001" for i in range(1, 20)]
    assert len(_theirs(many, {(4, "tcp")}).addrs) == 8


def test_nothing_usable_says_why() -> None:
    choice = _theirs(["/ip4/192.168.1.2/tcp/4001", "/ip4/203.0.113.1/udp/4001/quic-v1"],
                     {(4, "tcp")})
    assert not choice
    assert choice.reason == (
        "A offered 2 addresses, none usable: /ip4/192.168.1.2/tcp/4001 is not public; "
        "/ip4/203.0.113.1/udp/4001/quic-v1 uses quic-v1 over IPv4, which we did not offer")
    assert _theirs([], {(4, "tcp")}).reason == "A offered no address at all"
    undialable = their_addresses([M("/ip4/203.0.113.1/tcp/1")], peer=PEER, policy=LAB,
                                 ours={(4, "tcp")}, can_dial=lambda a: False)
    assert "cannot be dialled" in undialable.reason


def test_reversal_addresses() -> None:
    advertised = [M("/ip4/192.168.1.2/tcp/4001"), M("/ip4/198.51.100.4/tcp/4001"),
                  M("/dns4/a.example/tcp/4001"),
                  M(f"/ip4/198.51.100.1/tcp/4001/p2p/{OTHER}/p2p-circuit/p2p/{PEER}")]
    choice = reversal_addresses(advertised, peer=PEER, policy=LAB, can_dial=lambda a: True)
    assert choice.addrs == (M("/ip4/198.51.100.4/tcp/4001"), M("/dns4/a.example/tcp/4001"))
    nothing = reversal_addresses(advertised[:1], peer=PEER, policy=LAB, can_dial=lambda a: True)
    assert nothing.reason == "the peer advertises no public direct address"


def test_nat_hint_for_ports_that_moved() -> None:
    listen = [M("/ip4/192.168.1.2/tcp/4001")]
    kept = [M("/ip4/203.0.113.2/tcp/4001")]
    moved = [M("/ip4/203.0.113.2/tcp/38211")]
    assert nat_hint(kept, listen, kept, listen, "A") == ""
    assert nat_hint(moved, listen, kept, listen, "A") == (
        "our NAT mapped port 4001 to 38211; a NAT that gives every destination a new port "
        "(a symmetric NAT) defeats hole punching")
    assert nat_hint(moved, listen, moved, listen, "A").startswith(
        "our NAT mapped port 4001 to 38211 and A's NAT mapped port 4001 to 38211")
    assert nat_hint(moved, [], kept, [], "A") == ""  # nothing to compare with
