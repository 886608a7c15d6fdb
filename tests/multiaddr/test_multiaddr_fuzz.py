"""Fuzz both multiaddr parsers: they raise only MultiaddrError, and what parses is stable.

For anything that parses: text -> binary -> text gives the same canonical text, binary ->
text -> binary gives the same bytes, and every accessor works (or raises our errors).
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError, RemoteProtocolError
from flarelab.multiaddr import DEFAULT_POLICY, Multiaddr, MultiaddrError
from flarelab.multiaddr.protocols import PROTOCOLS, VAR, ProtocolInfo
from flarelab.wire import encode_uvarint

NAMES = [p.name for p in PROTOCOLS] + ["ipfs"]
SEEDS = [
    "/ip4/127.0.0.1/udp/1234/quic-v1",
    "/ip6/::ffff:127.0.0.1/tcp/111",
    "/ip6zone/x%y/ip6/fe80::1/tcp/1",
    "/dns4/example.com/tcp/443/wss/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC",
    "/p2p/k51qzi5uqu5dhb6l8spkdx7yxafegfkee5by8h7lmjh2ehc2sgg34z7c15vzqs/p2p-circuit",
    "/ip4/1.2.3.4/udp/1/quic-v1/webtransport/certhash/b2uaraocy6yrdblb4sfptaddgimjmmpy",
    "/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:1234",
    "/garlic32/566niximlxdzpanmn4qouucvua3k7neniwss47li5r6ugoertzuq",
    "/unix/a/b//c",
    "/http-path/a%20b%2Fc",
    "/memory/18446744073709551615",
]

# Values that are valid for some protocol, and near misses.
VALUE_TEXT = st.one_of(
    st.sampled_from(
        [
            "0", "1", "65535", "65536", "01", "1.2.3.4", "::1", "::ffff:1.2.3.4", "fe80::1%eth0",
            "x%y", "example.com", "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC",
            "12D3KooWCryG7Mon9orvQxcS1rYZjotPgpwoJNHHKcLLfE4Hf5mV",
            "bafzbeigvf25ytwc3akrijfecaotc74udrhcxzh2cx3we5qqnw5vgrei4bm",
            "uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g", "zQmbWTwYGcmdyK9CYfNBcfs9nh",
            "timaq4ygg2iegci7:80", "a%2", "%ff", "\u00e9", "\x00", "",
        ]
    ),
    st.text(max_size=40),
    st.from_regex(r"[0-9a-zA-Z.:%~_-]{1,60}", fullmatch=True),
)  # fmt: skip


NAME_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
    min_size=1,
    max_size=30,
)
MULTIHASH = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda d: b"\x12\x20" + d),
    st.binary(max_size=42).map(lambda d: b"\x00" + encode_uvarint(len(d)) + d),
)
PORT_NONZERO = st.integers(1, 0xFFFF).map(lambda p: p.to_bytes(2, "big"))
VALID_VALUES: dict[str, st.SearchStrategy[bytes]] = {
    "dns": NAME_TEXT.map(str.encode),
    "ip6zone": NAME_TEXT.map(str.encode),
    "unix": st.lists(NAME_TEXT, min_size=1, max_size=4).map(lambda p: ("/" + "/".join(p)).encode()),
    "p2p": MULTIHASH,
    "certhash": st.tuples(st.integers(0, 300), st.binary(max_size=64)).map(
        lambda t: encode_uvarint(t[0]) + encode_uvarint(len(t[1])) + t[1]
    ),
    "http-path": st.binary(min_size=1, max_size=20),
    "onion": st.tuples(st.binary(min_size=10, max_size=10), PORT_NONZERO).map(b"".join),
    "onion3": st.tuples(st.binary(min_size=35, max_size=35), PORT_NONZERO).map(b"".join),
    "garlic32": st.binary(min_size=32, max_size=40).filter(lambda b: len(b) not in (33, 34)),
    "garlic64": st.binary(min_size=386, max_size=390),
}


def valid_value(proto: ProtocolInfo) -> st.SearchStrategy[bytes]:
    """A value the protocol accepts (any bytes of the right size for fixed-size values)."""
    kind = "dns" if proto.name in ("dns4", "dns6", "dnsaddr", "sni") else proto.name
    if kind in VALID_VALUES:
        return VALID_VALUES[kind]
    return st.binary(min_size=proto.size, max_size=proto.size)


@st.composite
def structured_text(draw: st.DrawFn) -> str:
    pieces = []
    for _ in range(draw(st.integers(1, 8))):
        proto = draw(st.sampled_from(PROTOCOLS))
        pieces.append(proto.name if proto.name != "p2p" or draw(st.booleans()) else "ipfs")
        if proto.transcoder is not None and draw(st.integers(0, 3)):
            value = draw(valid_value(proto))
            try:
                proto.transcoder.validate(value)
            except ValueError:
                pieces.append(draw(VALUE_TEXT))
            else:
                text = proto.transcoder.format(value)
                pieces.append(text[1:] if proto.path else text)
        elif draw(st.booleans()):
            pieces.append(draw(VALUE_TEXT))
    return "/" + "/".join(pieces) + draw(st.sampled_from(["", "/", "//"]))


@st.composite
def structured_bytes(draw: st.DrawFn) -> bytes:
    out = []
    for _ in range(draw(st.integers(1, 8))):
        proto = draw(st.sampled_from(PROTOCOLS))
        out.append(proto.code_bytes)
        if proto.size == VAR:
            value = draw(st.one_of(valid_value(proto), st.binary(max_size=48)))
            length = draw(st.one_of(st.just(len(value)), st.integers(0, 70)))
            out.append(encode_uvarint(length) + value)
        elif proto.size:
            out.append(draw(valid_value(proto)))
    data = b"".join(out)
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.integers(0, 4)) else data[:cut]


def check_parsed(addr: Multiaddr) -> None:
    """Everything that parsed is stable and every accessor works."""
    text = str(addr)
    data = addr.to_bytes()
    again = Multiaddr(text)
    assert again == addr
    assert str(again) == text
    assert Multiaddr.from_bytes(data) == addr
    assert Multiaddr.from_bytes(again.to_bytes()).to_bytes() == data
    comps = addr.components()
    assert [c.name for c in comps] == list(addr.protocol_names())
    first, rest = addr.split_first()
    assert first.encapsulate(rest) == addr
    init, last = addr.split_last()
    assert init.encapsulate(last) == addr
    assert addr.decapsulate(last) == init
    _ = addr.ip_address, addr.is_relayed
    if addr.is_thin_waist:
        host, port = addr.host_port()
        assert 0 <= port <= 65535
        assert host
    try:
        DEFAULT_POLICY.is_public(addr)
    except LocalProtocolError:  # pragma: no cover - is_public maps "no host" to False
        raise AssertionError("is_public raised") from None
    try:
        _ = addr.peer_id
    except RemoteProtocolError:  # an identity multihash that holds no valid key
        pass
    stripped = addr.without_peer_id()
    assert len(stripped) == len(addr) - (stripped != addr)


@given(st.binary(max_size=200))
@example(b"")
@example(b"\x04\x7f\x00\x00\x01\x91\x02\x04\xd2")
def test_from_bytes_random(data: bytes) -> None:
    try:
        addr = Multiaddr.from_bytes(data)
    except MultiaddrError:
        return
    assert addr.to_bytes() == data
    check_parsed(addr)


@given(structured_bytes())
def test_from_bytes_structured(data: bytes) -> None:
    try:
        addr = Multiaddr.from_bytes(data)
    except MultiaddrError:
        return
    assert addr.to_bytes() == data
    check_parsed(addr)


@given(st.text(max_size=120))
def test_from_string_random(text: str) -> None:
    try:
        addr = Multiaddr(text)
    except MultiaddrError:
        return
    check_parsed(addr)


@given(st.one_of(structured_text(), st.sampled_from(SEEDS)))
def test_from_string_structured(text: str) -> None:
    try:
        addr = Multiaddr(text)
    except MultiaddrError:
        return
    check_parsed(addr)


@given(st.sampled_from(SEEDS), st.integers(0, 200), st.integers(0, 255))
def test_mutated_seed_bytes(seed: str, position: int, byte: int) -> None:
    data = bytearray(Multiaddr(seed).to_bytes())
    data[position % len(data)] = byte
    try:
        addr = Multiaddr.from_bytes(bytes(data))
    except MultiaddrError:
        return
    check_parsed(addr)
