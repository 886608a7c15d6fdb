"""The address policy: scopes on every range boundary, go/js agreement, overrides, DNS names."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError
from flarelab.multiaddr import (
    DEFAULT_POLICY,
    AddressPolicy,
    AddressScope,
    Multiaddr,
    MultiaddrError,
)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
S = AddressScope
LAB_POLICY = AddressPolicy(treat_as_public=("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))

# The specification (policy.py's docstring), written out again: network -> scope.
V4_TABLE = {
    "0.0.0.0/32": S.UNSPECIFIED,
    "0.0.0.0/8": S.RESERVED,
    "10.0.0.0/8": S.PRIVATE,
    "100.64.0.0/10": S.SHARED,
    "127.0.0.0/8": S.LOOPBACK,
    "169.254.0.0/16": S.LINK_LOCAL,
    "172.16.0.0/12": S.PRIVATE,
    "192.0.0.0/24": S.RESERVED,
    "192.0.2.0/24": S.DOCUMENTATION,
    "192.31.196.0/24": S.RESERVED,
    "192.52.193.0/24": S.RESERVED,
    "192.88.99.0/24": S.RESERVED,
    "192.168.0.0/16": S.PRIVATE,
    "192.175.48.0/24": S.RESERVED,
    "198.18.0.0/15": S.BENCHMARKING,
    "198.51.100.0/24": S.DOCUMENTATION,
    "203.0.113.0/24": S.DOCUMENTATION,
    "224.0.0.0/4": S.MULTICAST,
    "240.0.0.0/4": S.RESERVED,
}
V6_TABLE = {
    "::/128": S.UNSPECIFIED,
    "::1/128": S.LOOPBACK,
    "64:ff9b:1::/48": S.PUBLIC,
    "100::/64": S.RESERVED,
    "2001::/32": S.RESERVED,
    "2001:2::/48": S.BENCHMARKING,
    "2001:20::/28": S.RESERVED,
    "2001:db8::/32": S.DOCUMENTATION,
    "2002::/16": S.RESERVED,
    "3fff::/20": S.DOCUMENTATION,
    "fc00::/7": S.PRIVATE,
    "fe80::/10": S.LINK_LOCAL,
    "ff00::/8": S.MULTICAST,
}
MAPPED = ipaddress.ip_network("::ffff:0:0/96")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def reference_scope(ip: IP) -> AddressScope:
    """Classify by the written-out table, by plain ipaddress membership."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in MAPPED:
            return reference_scope(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in NAT64:
            embedded = reference_scope(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
            return S.PUBLIC if embedded is S.PUBLIC else S.RESERVED
        table, fallback = V6_TABLE, (S.PUBLIC if ip in GLOBAL_UNICAST else S.RESERVED)
    else:
        table, fallback = V4_TABLE, S.PUBLIC
    matches = [
        (net.prefixlen, scope)
        for cidr, scope in table.items()
        if ip in (net := ipaddress.ip_network(cidr))
    ]
    return max(matches, key=lambda m: m[0])[1] if matches else fallback


def boundary_points() -> Iterator[IP]:
    """The first and last address of every range, and their outside neighbours."""
    for cidr in [*V4_TABLE, *V6_TABLE, str(MAPPED), str(NAT64), str(GLOBAL_UNICAST)]:
        net = ipaddress.ip_network(cidr)
        first, last = int(net.network_address), int(net.broadcast_address)
        top = (1 << net.max_prefixlen) - 1
        for value in (first - 1, first, last, last + 1):
            if 0 <= value <= top:
                yield (
                    ipaddress.ip_address(value)
                    if net.version == 4
                    else ipaddress.IPv6Address(value)
                )


BOUNDARIES = sorted(set(boundary_points()), key=lambda ip: (ip.version, int(ip)))


@pytest.mark.parametrize("ip", BOUNDARIES, ids=str)
def test_scope_on_every_range_boundary(ip: IP) -> None:
    assert DEFAULT_POLICY.scope(ip) is reference_scope(ip)


@pytest.mark.parametrize(
    ("ip", "scope"),
    [
        ("0.0.0.0", S.UNSPECIFIED),
        ("0.0.0.1", S.RESERVED),
        ("1.1.1.1", S.PUBLIC),
        ("8.8.8.8", S.PUBLIC),
        ("9.255.255.255", S.PUBLIC),
        ("10.0.0.0", S.PRIVATE),
        ("10.255.255.255", S.PRIVATE),
        ("11.0.0.0", S.PUBLIC),  # the libp2p test-plans "internet"
        ("100.63.255.255", S.PUBLIC),
        ("100.64.0.0", S.SHARED),
        ("100.127.255.255", S.SHARED),
        ("100.128.0.0", S.PUBLIC),
        ("127.0.0.1", S.LOOPBACK),
        ("169.254.1.1", S.LINK_LOCAL),
        ("172.15.255.255", S.PUBLIC),
        ("172.16.0.0", S.PRIVATE),
        ("172.31.255.255", S.PRIVATE),
        ("172.32.0.0", S.PUBLIC),
        ("192.0.0.9", S.RESERVED),
        ("192.0.2.1", S.DOCUMENTATION),
        ("192.88.99.1", S.RESERVED),
        ("192.168.1.1", S.PRIVATE),
        ("198.17.255.255", S.PUBLIC),
        ("198.18.0.0", S.BENCHMARKING),
        ("198.19.255.255", S.BENCHMARKING),
        ("198.20.0.0", S.PUBLIC),
        ("198.51.100.7", S.DOCUMENTATION),
        ("203.0.113.200", S.DOCUMENTATION),
        ("223.255.255.255", S.PUBLIC),
        ("224.0.0.251", S.MULTICAST),
        ("239.255.255.255", S.MULTICAST),
        ("240.0.0.0", S.RESERVED),
        ("255.255.255.255", S.RESERVED),
        ("::", S.UNSPECIFIED),
        ("::1", S.LOOPBACK),
        ("::2", S.RESERVED),
        ("::ffff:127.0.0.1", S.LOOPBACK),
        ("::ffff:10.1.2.3", S.PRIVATE),
        ("::ffff:8.8.8.8", S.PUBLIC),
        ("64:ff9b::808:808", S.PUBLIC),  # NAT64 of 8.8.8.8
        ("64:ff9b::a00:1", S.RESERVED),  # NAT64 of 10.0.0.1: not a valid NAT64 address
        ("64:ff9b:1::1", S.PUBLIC),
        ("100::1", S.RESERVED),
        ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", S.RESERVED),
        ("2000::", S.PUBLIC),
        ("2001::1", S.RESERVED),  # Teredo
        ("2001:1::1", S.PUBLIC),
        ("2001:2::1", S.BENCHMARKING),
        ("2001:20::1", S.RESERVED),
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", S.PUBLIC),
        ("2001:db8::1", S.DOCUMENTATION),
        ("2001:db9::", S.PUBLIC),
        ("2002::1", S.RESERVED),  # 6to4
        ("2606:4700:4700::1111", S.PUBLIC),
        ("3fff::1", S.DOCUMENTATION),
        ("3fff:1000::", S.PUBLIC),
        ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", S.PUBLIC),
        ("4000::", S.RESERVED),
        ("fc00::1", S.PRIVATE),
        ("fdff:ffff::1", S.PRIVATE),
        ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", S.RESERVED),
        ("fe80::1", S.LINK_LOCAL),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", S.LINK_LOCAL),
        ("fec0::1", S.RESERVED),  # deprecated site-local
        ("ff02::1", S.MULTICAST),
    ],
)
def test_scope_examples(ip: str, scope: AddressScope) -> None:
    assert DEFAULT_POLICY.scope(ip) is scope
    assert DEFAULT_POLICY.scope(ipaddress.ip_address(ip)) is scope
    kind = "ip4" if ":" not in ip else "ip6"
    assert DEFAULT_POLICY.scope(Multiaddr(f"/{kind}/{ip}/tcp/1")) is scope
    assert DEFAULT_POLICY.is_public(ip) is (scope is S.PUBLIC)
    assert DEFAULT_POLICY.is_private(ip) is (scope is S.PRIVATE)
    assert DEFAULT_POLICY.is_loopback(ip) is (scope is S.LOOPBACK)


# --- agreement with go (manet.IsPublicAddr) and js (isPrivate) -----------------------------

GO_PRIVATE_AND_UNROUTABLE_V4 = [
    "127.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16",
    "169.254.0.0/16", "0.0.0.0/8", "192.0.0.0/26", "192.0.2.0/24", "192.88.99.0/24",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32",
]  # fmt: skip
GO_UNROUTABLE_V6 = ["ff00::/8", "2001:db8::/32"]
GO_NAT64 = ["64:ff9b:1::/48", "64:ff9b::/96"]
JS_PRIVATE_V4 = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.9/32",
    "192.0.0.10/32", "192.0.0.170/32", "192.0.0.171/32", "192.0.2.0/24", "192.31.196.0/24",
    "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
]  # fmt: skip
# js matches IPv6 text with regular expressions; these are the networks they cover
JS_PRIVATE_V6 = [
    "::/128", "::1/128", "100::/64", "2001::/32", "2001:20::/28", "2001:db8::/32",
    "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
]  # fmt: skip


@functools.cache
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def _in(ip: IP, cidrs: list[str]) -> bool:
    return any(ip.version == net.version and ip in net for net in _networks(tuple(cidrs)))


def go_is_public(ip: IP) -> bool:
    """go-multiaddr net/private.go IsPublicAddr, for a bare IP."""
    if isinstance(ip, ipaddress.IPv4Address):
        return not _in(ip, GO_PRIVATE_AND_UNROUTABLE_V4)
    if ip in MAPPED:  # go's 16-byte networks never contain a mapped address
        return False
    if ip in GLOBAL_UNICAST and not _in(ip, GO_UNROUTABLE_V6):
        return True
    return _in(ip, GO_NAT64)


def js_is_private(ip: IP) -> bool:
    """@libp2p/utils private-ip.ts isPrivateIp, for a bare IP."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _in(ip, JS_PRIVATE_V4)
    if ip in MAPPED:
        return _in(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), JS_PRIVATE_V4)
    return _in(ip, JS_PRIVATE_V6)


def _documented_deviation(ip: IP) -> bool:
    """Where policy.py's docstring says we differ from the go/js union, and why."""
    if isinstance(ip, ipaddress.IPv4Address):
        return False
    if ip in MAPPED:  # the scope of the embedded IPv4 address
        return True
    if ip in NAT64:  # public only if the embedded IPv4 address is
        return True
    return _in(ip, ["2001:2::/48", "3fff::/20"])  # benchmarking and documentation


def _check_against_go_and_js(ip: IP) -> None:
    ours = DEFAULT_POLICY.is_public(ip)
    theirs = go_is_public(ip) and not js_is_private(ip)
    if ours != theirs:
        assert _documented_deviation(ip), f"{ip}: ours={ours} go/js={theirs}"
    if ours and isinstance(ip, ipaddress.IPv6Address) and ip in MAPPED:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        assert go_is_public(embedded)
        assert not js_is_private(embedded)


INTERESTING = [
    *GO_PRIVATE_AND_UNROUTABLE_V4, *JS_PRIVATE_V4, *GO_UNROUTABLE_V6, *GO_NAT64, *JS_PRIVATE_V6,
    *V4_TABLE, *V6_TABLE, "::ffff:0:0/96", "2000::/3", "0.0.0.0/0", "::/0",
]  # fmt: skip


@st.composite
def interesting_ips(draw: st.DrawFn) -> IP:
    net = ipaddress.ip_network(draw(st.sampled_from(INTERESTING)))
    first, last = int(net.network_address), int(net.broadcast_address)
    top = (1 << net.max_prefixlen) - 1
    value = draw(
        st.one_of(
            st.integers(first, last),
            st.sampled_from([max(first - 1, 0), first, last, min(last + 1, top)]),
        )
    )
    return ipaddress.IPv4Address(value) if net.version == 4 else ipaddress.IPv6Address(value)


@given(interesting_ips())
def test_default_policy_is_the_go_js_union(ip: IP) -> None:
    _check_against_go_and_js(ip)


@pytest.mark.parametrize("ip", BOUNDARIES, ids=str)
def test_default_policy_is_the_go_js_union_on_boundaries(ip: IP) -> None:
    _check_against_go_and_js(ip)


@pytest.mark.parametrize("cidr", GO_PRIVATE_AND_UNROUTABLE_V4 + JS_PRIVATE_V4 + JS_PRIVATE_V6)
def test_nothing_go_or_js_refuses_is_public(cidr: str) -> None:
    net = ipaddress.ip_network(cidr)
    assert not DEFAULT_POLICY.is_public(net.network_address)
    assert not DEFAULT_POLICY.is_public(net.broadcast_address)


# --- overrides -------------------------------------------------------------------------


def test_lab_policy_makes_the_documentation_ranges_public() -> None:
    for ip in ("198.51.100.1", "203.0.113.254", "2001:db8::1", "::ffff:198.51.100.9"):
        assert LAB_POLICY.scope(ip) is S.PUBLIC
        assert not DEFAULT_POLICY.is_public(ip)
    assert LAB_POLICY.is_public(Multiaddr("/ip4/198.51.100.7/udp/4001/quic-v1"))
    assert LAB_POLICY.is_public("/ip6/2001:db8::5/tcp/4001")
    assert LAB_POLICY.scope("64:ff9b::c633:6401") is S.PUBLIC  # NAT64 of 198.51.100.1
    # everything else is as before
    assert LAB_POLICY.scope("192.0.2.1") is S.DOCUMENTATION
    assert LAB_POLICY.scope("10.0.0.1") is S.PRIVATE
    assert LAB_POLICY.scope("8.8.8.8") is S.PUBLIC


def test_most_specific_override_wins() -> None:
    policy = AddressPolicy(
        treat_as_private=("10.0.0.0/8", "100.64.0.0/10", "2001:db8::/32"),
        treat_as_public=("10.1.0.0/16", "127.0.0.0/8", "2001:db8:1::/48"),
    )
    assert policy.scope("10.1.2.3") is S.PUBLIC
    assert policy.scope("10.2.0.0") is S.PRIVATE
    assert policy.scope("100.64.0.1") is S.PRIVATE  # was SHARED
    assert policy.scope("127.0.0.1") is S.PUBLIC
    assert policy.scope("2001:db8:1::1") is S.PUBLIC
    assert policy.scope("2001:db8:2::1") is S.PRIVATE
    assert policy.is_private("/ip4/100.100.100.100/tcp/1")


def test_policy_arguments() -> None:
    policy = AddressPolicy(treat_as_public="198.51.100.0/24")  # type: ignore[arg-type]
    assert policy.treat_as_public == ("198.51.100.0/24",)
    listed = AddressPolicy(treat_as_public=["198.51.100.0/24"])  # type: ignore[arg-type]
    assert listed == policy
    assert hash(listed) == hash(policy)
    assert AddressPolicy(treat_as_public=(ipaddress.ip_network("2001:db8::/32"),)) == AddressPolicy(  # type: ignore[arg-type]
        treat_as_public=("2001:db8::/32",)
    )
    assert "198.51.100.0/24" in repr(policy)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.treat_as_public = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"treat_as_public": ("198.51.100.7/24",)}, "has host bits set"),
        ({"treat_as_public": ("not a network",)}, "treat_as_public: 'not a network'"),
        ({"treat_as_private": ("10.0.0.0/33",)}, "treat_as_private"),
        (
            {"treat_as_public": ("10.0.0.0/8",), "treat_as_private": ("10.0.0.0/8",)},
            "both public and private",
        ),
    ],
)
def test_policy_rejects_bad_networks(kwargs: dict[str, tuple[str, ...]], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        AddressPolicy(**kwargs)


# --- multiaddrs and DNS names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        ("/dns4/example.com/tcp/443", S.PUBLIC),
        ("/dns/localhost/tcp/1", S.LOOPBACK),
        ("/dns4/LOCALHOST./tcp/1", S.LOOPBACK),
        ("/dns6/app.localhost/tcp/1", S.LOOPBACK),
        ("/dns/notlocalhost/tcp/1", S.PUBLIC),
        ("/dns4/printer.local/tcp/1", S.PRIVATE),
        ("/dns/router.home.arpa/tcp/1", S.PRIVATE),
        ("/dns/x.test/tcp/1", S.PRIVATE),
        ("/dnsaddr/bootstrap.libp2p.io", S.PUBLIC),
        ("/dnsaddr/x.invalid", S.RESERVED),
        ("/dns/1.0.0.127.in-addr.arpa/tcp/1", S.RESERVED),
        ("/dns/b.a.ip6.arpa/tcp/1", S.RESERVED),
        ("/ip6zone/eth0/ip6/fe80::1/tcp/1", S.LINK_LOCAL),
        ("/ip4/147.75.87.27/tcp/4001/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
         "/p2p-circuit", S.PUBLIC),  # the relay's address
        ("/ip4/10.0.0.1/udp/4001/quic-v1", S.PRIVATE),
    ],
)  # fmt: skip
def test_multiaddr_scope(text: str, scope: AddressScope) -> None:
    assert DEFAULT_POLICY.scope(Multiaddr(text)) is scope
    assert DEFAULT_POLICY.scope(text) is scope


@pytest.mark.parametrize(
    "text",
    ["/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN", "/unix/tmp/x", "/tcp/1/ip4/8.8.8.8"],
)
def test_multiaddr_without_a_host(text: str) -> None:
    addr = Multiaddr(text)
    with pytest.raises(LocalProtocolError, match="does not start with an IP address"):
        DEFAULT_POLICY.scope(addr)
    assert not DEFAULT_POLICY.is_public(addr)
    assert not DEFAULT_POLICY.is_private(addr)
    assert not DEFAULT_POLICY.is_loopback(addr)


def test_bad_inputs() -> None:
    with pytest.raises(MultiaddrError, match="neither an IP address nor a multiaddr"):
        DEFAULT_POLICY.scope("example.com")
    with pytest.raises(MultiaddrError):
        DEFAULT_POLICY.is_public("/ip4/999.1.1.1")
    with pytest.raises(TypeError):
        DEFAULT_POLICY.scope(1234)  # type: ignore[arg-type]
