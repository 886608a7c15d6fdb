"""The Multiaddr value type: construction, identity, composition, peer ids, hosts and ports."""

from __future__ import annotations

import copy
import ipaddress
import pickle

import pytest

from flarelab.errors import LocalProtocolError
from flarelab.multiaddr import Component, Multiaddr, MultiaddrError

QM = "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"
QM_RELAY = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
ED = "12D3KooWCryG7Mon9orvQxcS1rYZjotPgpwoJNHHKcLLfE4Hf5mV"
ED_CID = "bafzaajaiaejcalj543iwv2d7pkjt7ykvefrkfu7qjfi6sduakhso4lay6abn2d5u"


# --- construction and identity ---------------------------------------------------------


def test_constructs_from_text_bytes_and_multiaddr() -> None:
    text = "/ip4/127.0.0.1/udp/1234"
    data = bytes.fromhex("047f000001910204d2")
    addr = Multiaddr(text)
    assert Multiaddr(data) == addr
    assert Multiaddr(bytearray(data)) == addr
    assert Multiaddr(memoryview(data)) == addr
    assert Multiaddr(addr) is addr
    assert Multiaddr.from_string(text) == addr
    assert Multiaddr.from_bytes(data) == addr
    assert addr.to_bytes() == data
    assert bytes(addr) == data


@pytest.mark.parametrize("value", [42, None, ["/ip4/1.2.3.4"]])
def test_rejects_other_types(value: object) -> None:
    with pytest.raises(TypeError):
        Multiaddr(value)  # type: ignore[arg-type]


def test_from_string_and_from_bytes_check_their_type() -> None:
    with pytest.raises(TypeError):
        Multiaddr.from_string(b"/ip4/1.2.3.4")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Multiaddr.from_bytes("/ip4/1.2.3.4")  # type: ignore[arg-type]


def test_repr_and_str() -> None:
    addr = Multiaddr(f"/ipfs/{QM}")
    assert str(addr) == f"/p2p/{QM}"
    assert repr(addr) == f"Multiaddr('/p2p/{QM}')"


def test_equal_and_hashed_by_binary_form() -> None:
    a = Multiaddr("/ip4/127.0.0.1/tcp/1234")
    b = Multiaddr("/ip4/127.0.0.1/tcp/1234/")
    c = Multiaddr("/ip4/127.0.0.1/udp/1234")
    assert a == b
    assert a != c
    assert len({a, b, c}) == 2
    assert a != "/ip4/127.0.0.1/tcp/1234"  # a Multiaddr never equals its text


def test_immutable() -> None:
    addr = Multiaddr("/ip4/1.2.3.4")
    with pytest.raises(AttributeError):
        addr._bytes = b""  # type: ignore[misc]
    with pytest.raises(AttributeError):
        addr.anything = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del addr._parts
    assert str(addr) == "/ip4/1.2.3.4"


def test_pickle_and_copy() -> None:
    addr = Multiaddr(f"/ip6/::1/udp/4001/quic-v1/p2p/{ED}")
    assert pickle.loads(pickle.dumps(addr)) == addr
    assert copy.copy(addr) is addr
    assert copy.deepcopy(addr) is addr


def test_parsing_is_cached_and_text_is_computed_once() -> None:
    text = "/ip4/10.1.2.3/tcp/4001"
    assert Multiaddr(text) is Multiaddr(text)
    data = Multiaddr(text).to_bytes()
    assert Multiaddr.from_bytes(data) is Multiaddr.from_bytes(data)
    addr = Multiaddr.from_bytes(bytes.fromhex("047f0000010604d2"))
    assert str(addr) is str(addr)
    assert addr.components() is addr.components()


# --- components ------------------------------------------------------------------------


def test_components_and_names() -> None:
    addr = Multiaddr(f"/ip4/1.2.3.4/udp/4001/quic-v1/p2p/{QM}")
    assert addr.components() == (
        Component("ip4", 4, "1.2.3.4"),
        Component("udp", 273, "4001"),
        Component("quic-v1", 461, None),
        Component("p2p", 421, QM),
    )
    assert list(addr) == list(addr.components())
    assert len(addr) == 4
    assert addr.protocol_names() == ("ip4", "udp", "quic-v1", "p2p")


def test_value_for_returns_the_first_occurrence() -> None:
    addr = Multiaddr(f"/ip4/127.0.0.1/utp/tcp/5555/udp/1234/tls/utp/ipfs/{QM}")
    assert addr.value_for("ip4") == "127.0.0.1"
    assert addr.value_for("tcp") == "5555"
    assert addr.value_for("udp") == "1234"
    assert addr.value_for("p2p") == QM
    assert addr.value_for("ipfs") == QM  # the alias names the same protocol
    assert addr.value_for("utp") is None  # present, without a value
    assert addr.has_protocol("utp")
    assert addr.value_for("ip6") is None
    assert not addr.has_protocol("ip6")
    assert Multiaddr("/ip4/0.0.0.0/ip4/1.1.1.1").value_for("ip4") == "0.0.0.0"


def test_value_for_an_unknown_protocol_is_a_local_error() -> None:
    addr = Multiaddr("/ip4/1.2.3.4")
    with pytest.raises(LocalProtocolError, match="tpc"):
        addr.value_for("tpc")
    with pytest.raises(LocalProtocolError):
        addr.has_protocol("tpc")


# --- encapsulate / decapsulate / split -------------------------------------------------


def test_encapsulate() -> None:
    base = Multiaddr("/ip4/127.0.0.1/udp/1234")
    joined = base.encapsulate("/udp/5678")
    assert str(joined) == "/ip4/127.0.0.1/udp/1234/udp/5678"
    assert joined.decapsulate("/udp/5678") == base
    assert joined.decapsulate(Multiaddr("/ip4/127.0.0.1")) == Multiaddr._make(b"", ())
    assert base.encapsulate(Multiaddr("/tcp/1").decapsulate("/tcp/1")) is base


# go-multiaddr TestDecapsulate, plus the spec's example (addressing/README.md)
@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("/ip4/1.2.3.4/tcp/1234", "/ip4/1.2.3.4", ""),
        ("/ip4/1.2.3.4", "/ip4/1.2.3.4/tcp/1234", "/ip4/1.2.3.4"),
        ("/ip4/1.2.3.5/tcp/1234", "/ip4/5.3.2.1", "/ip4/1.2.3.5/tcp/1234"),
        ("/ip4/1.2.3.5/udp/1234/quic-v1", "/udp/1234", "/ip4/1.2.3.5"),
        ("/ip4/1.2.3.6/udp/1234/quic-v1", "/udp/1234/quic-v1", "/ip4/1.2.3.6"),
        ("/ip4/1.2.3.7/tcp/1234", "/ws", "/ip4/1.2.3.7/tcp/1234"),
        ("/dnsaddr/wss.com/tcp/4001", "/ws", "/dnsaddr/wss.com/tcp/4001"),
        ("/dnsaddr/wss.com/tcp/4001/ws", "/wss", "/dnsaddr/wss.com/tcp/4001/ws"),
        ("/dnsaddr/wss.com/ws", "/wss", "/dnsaddr/wss.com/ws"),
        ("/dnsaddr/wss.com/ws", "/dnsaddr/wss.com", ""),
        ("/dnsaddr/wss.com/tcp/4001/wss", "/wss", "/dnsaddr/wss.com/tcp/4001"),
        ("/ip4/198.51.100.1/tcp/1234/ws", "/tcp/1234/ws", "/ip4/198.51.100.1"),
        ("/ip4/198.51.100.1/tcp/1234/ws", "/tcp/1234", "/ip4/198.51.100.1"),
        # the *last* occurrence goes, with everything after it
        ("/ip4/1.1.1.1/tcp/1/ip4/2.2.2.2/tcp/1/ws", "/tcp/1", "/ip4/1.1.1.1/tcp/1/ip4/2.2.2.2"),
        (
            "/ip4/1.1.1.1/tcp/1/p2p-circuit/p2p-circuit",
            "/p2p-circuit",
            "/ip4/1.1.1.1/tcp/1/p2p-circuit",
        ),
    ],
)
def test_decapsulate(left: str, right: str, expected: str) -> None:
    result = Multiaddr(left).decapsulate(right)
    assert str(result) == expected
    assert len(result) == (0 if not expected else len(Multiaddr(expected)))


@pytest.mark.parametrize(
    "text", ["/ip4/1.2.3.4", "/ip4/1.2.3.4/tcp/1/ws", f"/ip4/1.2.3.4/tcp/1/p2p/{QM}/p2p-circuit"]
)
def test_split_first_and_last_round_trip(text: str) -> None:
    addr = Multiaddr(text)
    first, rest = addr.split_first()
    assert len(first) == 1
    assert first.encapsulate(rest) == addr
    init, last = addr.split_last()
    assert len(last) == 1
    assert init.encapsulate(last) == addr
    assert addr.decapsulate(last) == init


def test_empty_multiaddr() -> None:
    empty = Multiaddr("/ip4/1.2.3.4").decapsulate("/ip4/1.2.3.4")
    assert len(empty) == 0
    assert not empty
    assert str(empty) == ""
    assert empty.to_bytes() == b""
    assert empty.encapsulate("/tcp/1") == Multiaddr("/tcp/1")
    assert empty.peer_id is None
    assert empty.ip_address is None
    assert not empty.is_thin_waist
    with pytest.raises(LocalProtocolError):
        empty.split_first()
    with pytest.raises(LocalProtocolError):
        empty.split_last()


def test_encapsulate_keeps_limits_and_the_path_rule() -> None:
    with pytest.raises(MultiaddrError, match="nothing may follow a /unix"):
        Multiaddr("/unix/tmp/p2p.sock").encapsulate("/tcp/1")
    assert str(Multiaddr("/ip4/1.2.3.4").encapsulate("/unix/x")) == "/ip4/1.2.3.4/unix/x"
    with pytest.raises(MultiaddrError, match="components"):
        Multiaddr("/tcp/1" * 20).encapsulate("/tcp/1" * 13)
    big = Multiaddr("/dns/" + "a" * 250)
    with pytest.raises(MultiaddrError, match="bytes long"):
        big.encapsulate(big).encapsulate(big).encapsulate(big).encapsulate(big)


# --- peer ids --------------------------------------------------------------------------


def test_peer_id() -> None:
    identity = pytest.importorskip("flarelab.identity")
    addr = Multiaddr(f"/ip4/1.2.3.4/tcp/4001/p2p/{ED}")
    assert addr.peer_id == identity.PeerId.from_string(ED)
    assert addr.peer_id is addr.peer_id  # computed once
    assert Multiaddr(f"/p2p/{ED_CID}").peer_id == identity.PeerId.from_string(ED)
    assert Multiaddr(f"/p2p/{QM}").peer_id == identity.PeerId.from_string(QM)
    assert Multiaddr("/ip4/1.2.3.4/tcp/4001").peer_id is None


def test_peer_id_of_relayed_addresses() -> None:
    pytest.importorskip("flarelab.identity")
    relay = f"/ip4/1.2.3.4/tcp/4001/p2p/{QM_RELAY}"
    via_relay = Multiaddr(f"{relay}/p2p-circuit/p2p/{QM}")
    assert str(via_relay.peer_id) == QM
    assert via_relay.is_relayed
    # a relay address without a destination names no peer (the relay is not the peer)
    assert Multiaddr(f"{relay}/p2p-circuit").peer_id is None
    assert not Multiaddr(relay).is_relayed


def test_peer_id_with_an_invalid_inline_key_raises_on_access() -> None:
    identity = pytest.importorskip("flarelab.identity")
    # a structurally valid identity multihash whose payload is not a key protobuf
    addr = Multiaddr.from_bytes(bytes.fromhex("a50304000201ff"))
    with pytest.raises(identity.InvalidPeerIdError):
        _ = addr.peer_id


def test_with_and_without_peer_id() -> None:
    base = Multiaddr("/ip4/1.2.3.4/tcp/4001")
    with_qm = base.with_peer_id(QM)
    assert str(with_qm) == f"/ip4/1.2.3.4/tcp/4001/p2p/{QM}"
    assert str(with_qm.with_peer_id(ED_CID)) == f"/ip4/1.2.3.4/tcp/4001/p2p/{ED}"
    assert with_qm.with_peer_id(QM) is with_qm
    assert with_qm.without_peer_id() == base
    assert base.without_peer_id() is base
    multihash = Multiaddr(f"/p2p/{ED}").to_bytes()[3:]
    assert str(base.with_peer_id(multihash)) == f"/ip4/1.2.3.4/tcp/4001/p2p/{ED}"
    assert base.with_peer_id(bytearray(multihash)) == base.with_peer_id(multihash)
    assert str(Multiaddr(f"/p2p/{ED}").without_peer_id()) == ""


def test_with_peer_id_takes_a_peer_id_object() -> None:
    identity = pytest.importorskip("flarelab.identity")
    peer = identity.PeerId.from_string(ED)
    addr = Multiaddr("/ip4/1.2.3.4/udp/4001/quic-v1").with_peer_id(peer)
    assert addr.peer_id == peer


def test_with_peer_id_on_relayed_addresses() -> None:
    relay = f"/ip4/1.2.3.4/tcp/4001/p2p/{QM_RELAY}/p2p-circuit"
    assert str(Multiaddr(relay).with_peer_id(QM)) == f"{relay}/p2p/{QM}"
    assert str(Multiaddr(f"{relay}/p2p/{QM}").with_peer_id(ED)) == f"{relay}/p2p/{ED}"
    assert str(Multiaddr(f"{relay}/p2p/{QM}").without_peer_id()) == relay
    assert Multiaddr(relay).without_peer_id() == Multiaddr(relay)


@pytest.mark.parametrize("bad", ["Qm", "not-a-peer-id", b"\x12\x20", b""])
def test_with_peer_id_rejects_invalid_ids(bad: str | bytes) -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr("/ip4/1.2.3.4/tcp/1").with_peer_id(bad)


# --- hosts and ports -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ip"),
    [
        ("/ip4/1.2.3.4/tcp/1", ipaddress.IPv4Address("1.2.3.4")),
        ("/ip6/2001:db8::1/udp/1/quic-v1", ipaddress.IPv6Address("2001:db8::1")),
        ("/ip6zone/eth0/ip6/fe80::1/tcp/1", ipaddress.IPv6Address("fe80::1")),
        (f"/ip4/5.6.7.8/tcp/1/p2p/{QM}/p2p-circuit/p2p/{ED}", ipaddress.IPv4Address("5.6.7.8")),
        ("/dns4/example.com/tcp/1", None),
        (f"/p2p/{QM}", None),
        ("/tcp/1/ip4/1.2.3.4", None),  # only a leading IP counts
        ("/ip6zone/eth0/tcp/1", None),
    ],
)
def test_ip_address(text: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> None:
    assert Multiaddr(text).ip_address == ip


@pytest.mark.parametrize(
    ("text", "host_port"),
    [
        ("/ip4/1.2.3.4/tcp/4001", ("1.2.3.4", 4001)),
        ("/ip4/1.2.3.4/udp/4001/quic-v1", ("1.2.3.4", 4001)),
        ("/ip6/::1/tcp/0", ("::1", 0)),
        ("/ip6zone/eth0/ip6/fe80::1/udp/9", ("fe80::1%eth0", 9)),
        ("/dns/example.com/tcp/443/wss", ("example.com", 443)),
        ("/dns4/example.com/tcp/1", ("example.com", 1)),
        ("/dns6/example.com/udp/2", ("example.com", 2)),
        (f"/ip4/1.2.3.4/tcp/1/p2p/{QM}", ("1.2.3.4", 1)),
    ],
)
def test_host_port(text: str, host_port: tuple[str, int]) -> None:
    addr = Multiaddr(text)
    assert addr.host_port() == host_port
    assert addr.is_thin_waist


@pytest.mark.parametrize(
    "text",
    [
        "/ip4/1.2.3.4",
        "/ip4/1.2.3.4/sctp/1",
        "/tcp/1",
        "/dnsaddr/bootstrap.libp2p.io/tcp/1",  # dnsaddr names a TXT record, not a host
        f"/p2p/{QM}/tcp/1",
        "/unix/tmp/x",
        "/ip6zone/eth0/tcp/1",
        "/memory/4",
    ],
)
def test_host_port_not_applicable(text: str) -> None:
    addr = Multiaddr(text)
    assert not addr.is_thin_waist
    with pytest.raises(MultiaddrError, match="no host and port"):
        addr.host_port()


@pytest.mark.parametrize(
    ("ip", "port", "transport", "expected"),
    [
        ("1.2.3.4", 4001, "tcp", "/ip4/1.2.3.4/tcp/4001"),
        ("1.2.3.4", 0, "udp", "/ip4/1.2.3.4/udp/0"),
        ("::1", 65535, "tcp", "/ip6/::1/tcp/65535"),
        ("::ffff:198.51.100.7", 5, "tcp", "/ip4/198.51.100.7/tcp/5"),  # dual-stack sockets
        ("fe80::1%eth0", 7, "udp", "/ip6zone/eth0/ip6/fe80::1/udp/7"),
        (ipaddress.IPv4Address("10.0.0.1"), 1, "tcp", "/ip4/10.0.0.1/tcp/1"),
        (ipaddress.IPv6Address("2001:db8::2"), 1, "udp", "/ip6/2001:db8::2/udp/1"),
    ],
)
def test_from_ip_port(
    ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    transport: str,
    expected: str,
) -> None:
    addr = Multiaddr.from_ip_port(ip, port, transport)
    assert str(addr) == expected
    assert addr == Multiaddr(expected)
    assert addr.host_port()[1] == port
    assert addr.has_protocol(transport)


def test_from_ip_port_errors() -> None:
    with pytest.raises(LocalProtocolError, match="'quic'"):
        Multiaddr.from_ip_port("1.2.3.4", 1, "quic")
    with pytest.raises(LocalProtocolError):
        Multiaddr.from_ip_port("1.2.3.4", 1, "ip4")
    for port in (-1, 65536, True, 1.5):
        with pytest.raises(MultiaddrError, match="port"):
            Multiaddr.from_ip_port("1.2.3.4", port, "tcp")  # type: ignore[arg-type]
    with pytest.raises(MultiaddrError, match="not an IP address"):
        Multiaddr.from_ip_port("example.com", 1, "tcp")
    with pytest.raises(TypeError):
        Multiaddr.from_ip_port(1234, 1, "tcp")  # type: ignore[arg-type]
