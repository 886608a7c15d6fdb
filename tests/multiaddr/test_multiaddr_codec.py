"""Multiaddr text and binary codec: vectors from go-multiaddr and rust-multiaddr, limits, errors.

Vectors are copied from go-multiaddr ``multiaddr_test.go`` (TestConstructSucceeds,
TestConstructFails, TestStringToBytes, TestRoundTrip, TestZone, ...) and rust-multiaddr
``tests/lib.rs`` (construct_success, construct_fail), so we accept, reject and encode what the
peers we talk to do.
"""

from __future__ import annotations

import pytest

from flarelab.errors import RemoteProtocolError
from flarelab.multiaddr import MAX_COMPONENTS, MAX_MULTIADDR_BYTES, Multiaddr, MultiaddrError
from flarelab.wire import encode_uvarint

GARLIC64 = (
    "jT~IyXaoauTni6N4517EG8mrFUKpy0IlgZh-EY9csMAk82Odatmzr~YTZy8Hv7u~wvkg75EFNOyqb~nAPg-k"
    "hyp2TS~ObUz8WlqYAM2VlEzJ7wJB91P-cUlKF18zSzVoJFmsrcQHZCirSbWoOknS6iNmsGRh5KVZsBEfp1Dg"
    "3gwTipTRIx7Vl5Vy~1OSKQVjYiGZS9q8RL0MF~7xFiKxZDLbPxk0AK9TzGGqm~wMTI2HS0Gm4Ycy8LYPVmLv"
    "GonIBYndg2bJC7WLuF6tVjVquiokSVDKFwq70BCUU5AU-EvdOD5KEOAM7mPfw-gJUG4tm1TtvcobrObqoRnm"
    "hXPTBTN5H7qDD12AvlwFGnfAlBXjuP4xOUAISL5SRLiulrsMSiT4GcugSI80mF6sdB0zWRgL1yyvoVWeTBn1"
    "TqjO27alr95DGTluuSqrNAxgpQzCKEWAyzrQkBfo2avGAmmz2NaHaAvYbOg0QSJz1PLjv2jdPW~ofiQmrGWM"
    "1cd~1cCqAAAA"
)
GARLIC64_HEX = (
    "be0383038d3fc8c976a86ae4e78ba378e75ec41bc9ab1542a9cb422581987e118f5cb0c024f3639d6ad9b3af"
    "f613672f07bfbbbfc2f920ef910534ecaa6ff9c03e0fa4872a764d2fce6d4cfc5a5a9800cd95944cc9ef0241"
    "f753fe71494a175f334b35682459acadc4076428ab49b5a83a49d2ea2366b06461e4a559b0111fa750e0de0c"
    "138a94d1231ed5979572ff53922905636221994bdabc44bd0c17fef11622b16432db3f193400af53cc61aa9b"
    "fc0c4c8d874b41a6e18732f0b60f5662ef1a89c80589dd8366c90bb58bb85ead56356aba2a244950ca170abb"
    "d01094539014f84bdd383e4a10e00cee63dfc3e809506e2d9b54edbdca1bace6eaa119e68573d30533791fba"
    "830f5d80be5c051a77c09415e3b8fe3139400848be5244b8ae96bb0c4a24f819cba0488f34985eac741d3359"
    "180bd72cafa1559e4c19f54ea8cedbb6a5afde4319396eb92aab340c60a50cc2284580cb3ad09017e8d9abc6"
    "0269b3d8d687680bd86ce834412273d4f2e3bf68dd3d6fe87e2426ac658cd5c77fd5c0aa000000"
)

ONION3 = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd"
GARLIC32 = "566niximlxdzpanmn4qouucvua3k7neniwss47li5r6ugoertzuq"
QM = "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"
ED = "12D3KooWCryG7Mon9orvQxcS1rYZjotPgpwoJNHHKcLLfE4Hf5mV"
CERTHASH = "uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g"

# go-multiaddr TestConstructSucceeds
GO_GOOD = [
    "/ip4/1.2.3.4",
    "/ip4/0.0.0.0",
    "/ip4/192.0.2.0/ipcidr/24",
    "/ip6/::1",
    "/ip6/2601:9:4f81:9700:803e:ca65:66e8:c21",
    "/ip6/2601:9:4f81:9700:803e:ca65:66e8:c21/udp/1234/quic",
    "/ip6/2601:9:4f81:9700:803e:ca65:66e8:c21/udp/1234/quic-v1",
    "/ip6/2001:db8::/ipcidr/32",
    "/ip6zone/x/ip6/fe80::1",
    "/ip6zone/x%y/ip6/fe80::1",
    "/ip6zone/x%y/ip6/::",
    "/ip6zone/x/ip6/fe80::1/udp/1234/quic",
    "/ip6zone/x/ip6/fe80::1/udp/1234/quic-v1",
    "/onion/timaq4ygg2iegci7:1234",
    "/onion/timaq4ygg2iegci7:80/http",
    f"/onion3/{ONION3}:1234",
    f"/onion3/{ONION3}:80/http",
    f"/garlic64/{GARLIC64}",
    f"/garlic64/{GARLIC64}/http",
    f"/garlic64/{GARLIC64}/udp/8080",
    f"/garlic64/{GARLIC64}/tcp/8080",
    f"/garlic32/{GARLIC32}",
    f"/garlic32/{GARLIC32}zwas",
    f"/garlic32/{GARLIC32}zwassw",
    f"/garlic32/{GARLIC32}/http",
    f"/garlic32/{GARLIC32}/tcp/8080",
    f"/garlic32/{GARLIC32}/udp/8080",
    "/udp/0",
    "/tcp/0",
    "/sctp/0",
    "/udp/1234",
    "/tcp/1234",
    "/sctp/1234",
    "/udp/65535",
    "/tcp/65535",
    f"/ipfs/{QM}",
    "/ipfs/k2k4r8oqamigqdo6o7hsbfwd45y70oyynp98usk7zmyfrzpqxh1pohl7",
    f"/p2p/{QM}",
    "/p2p/k2k4r8oqamigqdo6o7hsbfwd45y70oyynp98usk7zmyfrzpqxh1pohl7",
    "/p2p/bafzbeigvf25ytwc3akrijfecaotc74udrhcxzh2cx3we5qqnw5vgrei4bm",
    f"/p2p/{ED}",
    "/p2p/k51qzi5uqu5dhb6l8spkdx7yxafegfkee5by8h7lmjh2ehc2sgg34z7c15vzqs",
    "/p2p/bafzaajaiaejcalj543iwv2d7pkjt7ykvefrkfu7qjfi6sduakhso4lay6abn2d5u",
    "/udp/1234/sctp/1234",
    "/udp/1234/udt",
    "/udp/1234/utp",
    "/tcp/1234/http",
    "/tcp/1234/tls/http",
    "/tcp/1234/https",
    f"/ipfs/{QM}/tcp/1234",
    f"/p2p/{QM}/tcp/1234",
    "/ip4/127.0.0.1/udp/1234",
    "/ip4/127.0.0.1/udp/0",
    "/ip4/127.0.0.1/tcp/1234",
    "/ip4/127.0.0.1/tcp/1234/",
    "/ip4/127.0.0.1/udp/1234/quic",
    "/ip4/127.0.0.1/udp/1234/quic-v1",
    "/ip4/127.0.0.1/udp/1234/quic-v1/webtransport",
    "/ip4/127.0.0.1/udp/1234/quic-v1/webtransport/certhash/b2uaraocy6yrdblb4sfptaddgimjmmpy",
    "/ip4/127.0.0.1/udp/1234/quic-v1/webtransport/certhash/b2uaraocy6yrdblb4sfptaddgimjmmpy"
    "/certhash/zQmbWTwYGcmdyK9CYfNBcfs9nhZs17a6FQ4Y8oea278xx41",
    f"/ip4/127.0.0.1/ipfs/{QM}",
    f"/ip4/127.0.0.1/ipfs/{QM}/tcp/1234",
    f"/ip4/127.0.0.1/p2p/{QM}",
    f"/ip4/127.0.0.1/p2p/{QM}/tcp/1234",
    "/unix/a/b/c/d/e",
    "/unix/stdio",
    "/ip4/1.2.3.4/tcp/80/unix/a/b/c/d/e/f",
    f"/ip4/127.0.0.1/ipfs/{QM}/tcp/1234/unix/stdio",
    f"/ip4/127.0.0.1/p2p/{QM}/tcp/1234/unix/stdio",
    "/ip4/127.0.0.1/tcp/9090/http/p2p-webrtc-direct",
    "/ip4/127.0.0.1/tcp/127/ws",
    "/ip4/127.0.0.1/tcp/127/tls",
    "/ip4/127.0.0.1/tcp/127/tls/ws",
    "/ip4/127.0.0.1/tcp/127/noise",
    "/ip4/127.0.0.1/tcp/127/wss",
    "/ip4/127.0.0.1/tcp/127/webrtc-direct",
    "/ip4/127.0.0.1/tcp/127/webrtc",
    "/http-path/tmp%2Fbar",
    "/http-path/tmp%2Fbar%2Fbaz",
    "/http-path/foo",
    f"/ip4/127.0.0.1/tcp/0/p2p/{ED}/http-path/foo",
    "/ip4/127.0.0.1/tcp/443/tls/sni/example.com/http/http-path/foo",
    "/memory/4",
]

# go-multiaddr TestConstructFails (the garlic64 cases shortened to their distinct faults)
GO_BAD = [
    "/ip4",
    "/ip4/::1",
    "/ip4/fdpsofodsajfdoisa",
    "/ip4/::/ipcidr/256",
    "/ip6/::/ipcidr/1026",
    "/ip6",
    "/ip6zone",
    "/ip6zone/",
    "/ip6zone//ip6/fe80::1",
    "/udp",
    "/tcp",
    "/sctp",
    "/udp/65536",
    "/tcp/65536",
    "/quic/65536",
    "/quic-v1/65536",
    "/onion/9imaq4ygg2iegci7:80",
    "/onion/aaimaq4ygg2iegci7:80",
    "/onion/timaq4ygg2iegci7:0",
    "/onion/timaq4ygg2iegci7:-1",
    "/onion/timaq4ygg2iegci7",
    "/onion/timaq4ygg2iegci@:666",
    f"/onion3/9{ONION3[1:]}:80",
    f"/onion3/{ONION3}7:80",
    f"/onion3/{ONION3}:0",
    f"/onion3/{ONION3}:-1",
    f"/onion3/{ONION3}",
    f"/onion3/{ONION3[:-1]}@:666",
    f"/garlic64/{GARLIC64}7:80",
    f"/garlic64/{GARLIC64}:0",
    f"/garlic64/{GARLIC64}:-1",
    f"/garlic64/{GARLIC64}@:666",
    "/garlic64/jT~",
    f"/garlic32/{GARLIC32[:-1]}",
    f"/garlic32/{GARLIC32[:-1]}77",
    f"/garlic32/{GARLIC32[:-1]}:80",
    f"/garlic32/{GARLIC32}:-1",
    f"/garlic32/{GARLIC32[:-1]}@",
    "/udp/1234/sctp",
    "/udp/1234/udt/1234",
    "/udp/1234/utp/1234",
    "/ip4/127.0.0.1/udp/jfodsajfidosajfoidsa",
    "/ip4/127.0.0.1/udp",
    "/ip4/127.0.0.1/tcp/jfodsajfidosajfoidsa",
    "/ip4/127.0.0.1/tcp",
    "/ip4/127.0.0.1/quic/1234",
    "/ip4/127.0.0.1/quic-v1/1234",
    "/ip4/127.0.0.1/udp/1234/quic-v1/webtransport/certhash",
    "/ip4/127.0.0.1/udp/1234/quic-v1/webtransport/certhash/b2uaraocy6yrdblb4sfptaddgimjmmp",
    "/ip4/127.0.0.1/ipfs",
    "/ip4/127.0.0.1/ipfs/tcp",
    "/ip4/127.0.0.1/p2p",
    "/ip4/127.0.0.1/p2p/tcp",
    "/unix",
    "/ip4/1.2.3.4/tcp/80/unix",
    "/ip4/1.2.3.4/tcp/-1",
    "/ip4/127.0.0.1/tcp/9090/http/p2p-webcrt-direct",
    f"/memory/{1 << 63}1",
    "/",
    "",
    "/p2p/QmxoHT6iViN5xAjoz1VZ553cL31U9F94ht3QvWR1FrEbZY",  # sha2-256 digest > 32 bytes
    # go TestInvalidP2PAddrString
    "/p2p/k2k4r8oqamigqdo6o7hsbfwd45y70oyynp98usk7zmyfrzpqxh1pohl-",
    "/p2p/?unknownmultibase",
    "/p2p/k2jmtxwoe2phm1hbqp0e7nufqf6umvuu2e9qd7ana7h411a0haqj6i2z",  # not libp2p-key
    # go TestHTTPPath: a '%' must start an escape
    "/http-path/thisIsMissingAfullByte%f",
    # rust construct_fail (beyond the go ones)
    "/ip6/fe80::9700:803e:ca65:66e8:c21/ip6zone",
    "/p2p-circuit/50",
    "/ip4/127.0.0.1/udp/1234/webrtc-direct/certhash",
    "/tcp/1234/http/http-path/a/b",
    "/unknown/1.2.3.4",
]

# (text, binary hex): go TestStringToBytes / TestBytesToString, TestZone, and rust
# construct_success, where the text is already canonical.
VECTORS = [
    ("/ip4/127.0.0.1/udp/1234", "047f000001910204d2"),
    ("/ip4/127.0.0.1/tcp/4321", "047f0000010610e1"),
    ("/ip4/127.0.0.1/udp/1234/ip4/127.0.0.1/tcp/4321", "047f000001910204d2047f0000010610e1"),
    ("/onion/aaimaq4ygg2iegci:80", "bc030010c0439831b48218480050"),
    (
        f"/onion3/{ONION3}:1234",
        "bd03adadec040be047f9658668b11a504f3155001f231a37f54c4476c07fb4cc139ed7e30304d2",
    ),
    (f"/garlic64/{GARLIC64}", GARLIC64_HEX),
    (
        f"/garlic32/{GARLIC32}",
        "bf0320efbcd45d0c5dc79781ac6f20ea5055a036afb48d45a52e7d68ec7d4338919e69",
    ),
    ("/ip6zone/eth0/ip6/::1", "2a04657468302900000000000000000000000000000001"),
    ("/ip4/1.2.3.4", "0401020304"),
    ("/ip4/0.0.0.0", "0400000000"),
    ("/ip6/::1", "2900000000000000000000000000000001"),
    ("/ip6/2601:9:4f81:9700:803e:ca65:66e8:c21", "29260100094f819700803eca6566e80c21"),
    (
        "/ip6/fe80::9700:803e:ca65:66e8:c21/ip6zone/wlan0",
        "29fe80000000009700803eca6566e80c212a05776c616e30",
    ),
    ("/udp/0", "91020000"),
    ("/tcp/0", "060000"),
    ("/sctp/0", "84010000"),
    ("/udp/1234", "910204d2"),
    ("/tcp/1234", "0604d2"),
    ("/sctp/1234", "840104d2"),
    ("/udp/65535", "9102ffff"),
    ("/tcp/65535", "06ffff"),
    (f"/p2p/{QM}", "a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b"),
    ("/udp/1234/sctp/1234", "910204d2840104d2"),
    ("/udp/1234/udt", "910204d2ad02"),
    ("/udp/1234/utp", "910204d2ae02"),
    ("/tcp/1234/http", "0604d2e003"),
    ("/tcp/1234/tls/http", "0604d2c003e003"),
    ("/tcp/1234/http/http-path/user", "0604d2e003e1030475736572"),
    ("/tcp/1234/http/http-path/api%2Fv0%2Flogin", "0604d2e003e1030c6170692f76302f6c6f67696e"),
    ("/tcp/1234/http/http-path/a%2520space", "0604d2e003e10309612532307370616365"),
    ("/tcp/1234/https", "0604d2bb03"),
    (
        f"/p2p/{QM}/tcp/1234",
        "a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b0604d2",
    ),
    ("/ip4/127.0.0.1/udp/0", "047f00000191020000"),
    ("/ip4/127.0.0.1/tcp/1234", "047f0000010604d2"),
    (
        f"/ip4/127.0.0.1/p2p/{QM}/tcp/1234",
        "047f000001a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b"
        "0604d2",
    ),
    (
        f"/ip6/2001:8a0:7ac5:4201:3ac9:86ff:fe31:7095/tcp/8000/ws/p2p/{QM}",
        "29200108a07ac542013ac986fffe317095061f40dd03a503221220d52ebb89d85b02a284948203a62ff283"
        "89c57c9f42beec4ec20db76a68911c0b",
    ),
    (
        f"/p2p-webrtc-star/ip4/127.0.0.1/tcp/9090/ws/p2p/{QM}",
        "9302047f000001062382dd03a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20d"
        "b76a68911c0b",
    ),
    (
        f"/ip6/2001:8a0:7ac5:4201:3ac9:86ff:fe31:7095/tcp/8000/wss/p2p/{QM}",
        "29200108a07ac542013ac986fffe317095061f40de03a503221220d52ebb89d85b02a284948203a62ff283"
        "89c57c9f42beec4ec20db76a68911c0b",
    ),
    (
        f"/ip4/127.0.0.1/tcp/9090/p2p-circuit/p2p/{QM}",
        "047f000001062382a202a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a"
        "68911c0b",
    ),
    (
        "/dnsaddr/sjc-1.bootstrap.libp2p.io",
        "3819736a632d312e626f6f7473747261702e6c69627032702e696f",
    ),
    (
        "/dnsaddr/sjc-1.bootstrap.libp2p.io/tcp/1234/p2p/"
        "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
        "3819736a632d312e626f6f7473747261702e6c69627032702e696f0604d2a50322122006b3608aa00027"
        "4049eb28ad8e793a26ff6fab281a7d3bd77cd18eb745dfaabb",
    ),
    ("/ip4/127.0.0.1/tcp/127/ws", "047f00000106007fdd03"),
    ("/ip4/127.0.0.1/tcp/127/tls", "047f00000106007fc003"),
    ("/ip4/127.0.0.1/tcp/127/tls/ws", "047f00000106007fc003dd03"),
    ("/ip4/127.0.0.1/tcp/127/noise", "047f00000106007fc603"),
    ("/ip4/127.0.0.1/udp/1234/webrtc-direct", "047f000001910204d29802"),
    (
        f"/ip4/127.0.0.1/udp/1234/webrtc-direct/certhash/{CERTHASH}",
        "047f000001910204d29802d203221220c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a396071"
        "4caef0c4f2",
    ),
    ("/ip4/127.0.0.1/udp/1234/quic/webtransport", "047f000001910204d2cc03d103"),
    (
        f"/ip4/127.0.0.1/udp/1234/webtransport/certhash/{CERTHASH}",
        "047f000001910204d2d103d203221220c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a396071"
        "4caef0c4f2",
    ),
    ("/memory/4", "89060000000000000004"),  # go and rust: a fixed 8-byte value
]

# go-multiaddr TestRoundTrip: these print exactly as written
GO_ROUND_TRIP = [
    "/unix/a/b/c/d",
    "/ip6/::ffff:127.0.0.1/tcp/111",
    "/ip4/127.0.0.1/tcp/123",
    "/ip4/127.0.0.1/tcp/123/tls",
    "/ip4/127.0.0.1/udp/123",
    "/ip4/127.0.0.1/udp/123/ip6/::",
    f"/ip4/127.0.0.1/udp/1234/quic-v1/webtransport/certhash/{CERTHASH}",
    "/p2p/QmbHVEEepCi7rn7VL7Exxpd2Ci9NNB6ifvqwhsrbRMgQFP",
    "/p2p/QmbHVEEepCi7rn7VL7Exxpd2Ci9NNB6ifvqwhsrbRMgQFP/unix/a/b/c",
    "/http-path/tmp%2Fbar",
]


@pytest.mark.parametrize("text", GO_GOOD)
def test_go_good_addresses_parse_and_round_trip(text: str) -> None:
    addr = Multiaddr(text)
    again = Multiaddr(str(addr))
    assert again == addr
    assert str(again) == str(addr)
    assert Multiaddr.from_bytes(addr.to_bytes()) == addr


@pytest.mark.parametrize("text", GO_BAD)
def test_go_and_rust_bad_addresses_are_rejected(text: str) -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr(text)


@pytest.mark.parametrize(("text", "hexed"), VECTORS)
def test_text_binary_vectors(text: str, hexed: str) -> None:
    addr = Multiaddr(text)
    assert addr.to_bytes().hex() == hexed
    decoded = Multiaddr.from_bytes(bytes.fromhex(hexed))
    assert str(decoded) == text
    assert decoded == addr


@pytest.mark.parametrize("text", GO_ROUND_TRIP)
def test_go_round_trip_prints_exactly(text: str) -> None:
    assert str(Multiaddr(text)) == text


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        (f"/ipfs/{QM}", f"/p2p/{QM}"),
        ("/ip4/127.0.0.1/tcp/1234/", "/ip4/127.0.0.1/tcp/1234"),
        ("/ip4/127.0.0.1/tcp/1234///", "/ip4/127.0.0.1/tcp/1234"),
        ("/ip6/0:0:0:0:0:0:0:1", "/ip6/::1"),
        ("/ip6/2001:DB8:0:0:0:0:0:1", "/ip6/2001:db8::1"),
        ("/ip6/::FFFF:7f00:1", "/ip6/::ffff:127.0.0.1"),
        ("/ip6/64:ff9b::1.2.3.4", "/ip6/64:ff9b::102:304"),
        ("/tcp/0080", "/tcp/80"),
        ("/p2p/k2k4r8oqamigqdo6o7hsbfwd45y70oyynp98usk7zmyfrzpqxh1pohl7", f"/p2p/{QM}"),
        ("/p2p/bafzbeigvf25ytwc3akrijfecaotc74udrhcxzh2cx3we5qqnw5vgrei4bm", f"/p2p/{QM}"),
        ("/p2p/k51qzi5uqu5dhb6l8spkdx7yxafegfkee5by8h7lmjh2ehc2sgg34z7c15vzqs", f"/p2p/{ED}"),
        ("/p2p/bafzaajaiaejcalj543iwv2d7pkjt7ykvefrkfu7qjfi6sduakhso4lay6abn2d5u", f"/p2p/{ED}"),
        ("/p2p/BAFZBEIGVF25YTWC3AKRIJFECAOTC74UDRHCXZH2CX3WE5QQNW5VGREI4BM", f"/p2p/{QM}"),
        # certhash: any multibase on input, base64url on output (go, rust, js)
        ("/certhash/b2uaraocy6yrdblb4sfptaddgimjmmpy", "/certhash/u1QEQOFj2IjCsPJFfMAxmQxLGPw"),
        (
            "/certhash/f1220c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2",
            f"/certhash/{CERTHASH}",
        ),
        ("/certhash/zQmbWTwYGcmdyK9CYfNBcfs9nhZs17a6FQ4Y8oea278xx41", f"/certhash/{CERTHASH}"),
        ("/onion/AAIMAQ4YGG2IEGCI:80", "/onion/aaimaq4ygg2iegci:80"),
        ("/http-path/a%20b", "/http-path/a%20b"),
        ("/http-path/a b", "/http-path/a%20b"),
        ("/http-path/%7e", "/http-path/~"),
        ("/unix//tmp/x.sock", "/unix//tmp/x.sock"),
    ],
)
def test_canonical_text(given: str, canonical: str) -> None:
    addr = Multiaddr(given)
    assert str(addr) == canonical
    assert Multiaddr(canonical) == addr


def test_unix_path_takes_the_rest_of_the_text() -> None:
    addr = Multiaddr("/ip4/1.2.3.4/tcp/80/unix/a/b/c/d/e/f")
    assert addr.value_for("unix") == "/a/b/c/d/e/f"
    assert addr.protocol_names() == ("ip4", "tcp", "unix")


def test_bad_p2p_binary_from_go() -> None:
    # go TestInvalidP2PAddrBytes: the multihash claims more digest than there is
    data = bytes.fromhex(
        "a503221221c05877cbae039d70a5e600ea02c6f9f2942439285c9e344e26f8d280c850fad6"
    )
    with pytest.raises(MultiaddrError, match="at byte 3"):
        Multiaddr.from_bytes(data)


def test_go_dns_bytes_survive_a_text_round_trip() -> None:
    # go TestDNS: arbitrary bytes in a DNS name print and parse back identically
    addr = Multiaddr.from_bytes(b"7*000000000000000000000000000000000000000000")
    assert addr == Multiaddr(str(addr))
    assert str(addr) == "/dns6/000000000000000000000000000000000000000000"  # '7' is code 55


def test_error_is_a_value_error_and_a_remote_protocol_error() -> None:
    with pytest.raises(MultiaddrError) as info:
        Multiaddr("/ip4/1.2.3.4/tcp/x")
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, RemoteProtocolError)
    assert "component 2 (/tcp)" in str(err)
    assert "'x'" in str(err)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ip4/1.2.3.4", "must begin with '/'"),
        ("/", "empty"),
        ("", "must begin with '/'"),
        ("/ip4/1.2.3.4//tcp/1", "component 2 has an empty protocol name"),
        ("/ip4/1.2.3.4/tcpx/1", "component 2 has unknown protocol 'tcpx'"),
        ("/ip4/1.2.3.4/tcp", "component 2 (/tcp) has no value"),
        ("/ip4/1.2.3.4/tcp/65536", "out of range"),
        ("/ip4/1.2.3.4/tcp/+1", "not a decimal port"),
        ("/ip4/1.2.3.4/tcp/ 1", "not a decimal port"),
        ("/ip4/1.2.3.4/tcp/1_0", "not a decimal port"),
        ("/ip4/1.2.3.4/tcp/\u0661", "not a decimal port"),  # an Arabic-Indic digit one
        ("/ip4/01.2.3.4", "not an IPv4 address"),
        ("/ip6/fe80::1%eth0", "/ip6zone/"),
        ("/ip6/1.2.3.4", "not an IPv6 address"),
        ("/dns4/a\nb", "control character"),
        ("/dns4/" + "a" * 256, "longer than 255"),
        ("/unix/a\x00b", "control character"),
        ("/p2p/Qm", "truncated"),
        ("/p2p/z0OIl", "invalid character"),
        ("/certhash/x123", "unsupported multibase prefix"),
        ("/certhash/uEg", "malformed multihash"),
        ("/certhash/bMIXEDcase", "mixed-case"),
        ("/ip4/1.2.3.4" + "/tcp/1" * 40, f"more than {MAX_COMPONENTS} components"),
        ("/dns/" + "/".join(["a" * 250] * 5), "unknown protocol"),
        ("/" + "x" * 5000, "longer than 4096"),
    ],
)
def test_text_errors_say_what_and_where(text: str, fragment: str) -> None:
    with pytest.raises(MultiaddrError, match=None) as info:
        Multiaddr(text)
    assert fragment in str(info.value)


def test_long_text_is_shortened_in_the_message() -> None:
    with pytest.raises(MultiaddrError) as info:
        Multiaddr("/dns4/" + "a" * 300)
    assert len(str(info.value)) < 400


def _component(code: int, value: bytes = b"", *, var: bool = False) -> bytes:
    return encode_uvarint(code) + (encode_uvarint(len(value)) if var else b"") + value


@pytest.mark.parametrize(
    ("data", "offset", "fragment"),
    [
        (b"", 0, "empty"),
        (b"\x04\x7f\x00\x00", 1, "needs 4 bytes but 3 remain"),
        (b"\x06\x04", 1, "needs 2 bytes but 1 remain"),
        (b"\x05", 0, "unknown protocol code 5"),
        (b"\x04\x01\x02\x03\x04\xff\xff\x03", 5, "unknown protocol code 65535"),
        (b"\x80", 0, "protocol code: truncated varint"),
        (b"\x84\x00", 0, "protocol code: varint is not minimally encoded"),
        (b"\xff" * 10, 0, "protocol code: varint longer than 9 bytes"),
        (b"\x35\x00", 0, "/dns has an empty value"),
        (b"\x35\x85", 1, "/dns value length: truncated varint"),
        (b"\x35\x05abc", 2, "/dns value needs 5 bytes but 3 remain"),
        (b"\x35\x03a/b", 2, "invalid /dns value: name 'a/b' contains '/'"),
        (b"\x35\x02\xff\xfe", 2, "invalid /dns value: name is not UTF-8"),
        (_component(400, b"/x", var=True) + b"\x06\x00\x01", 5, "nothing may follow a /unix"),
        (_component(400, b"x", var=True), 3, "a unix path must start with '/'"),
        (_component(400, b"/x/", var=True), 3, "must not end with '/'"),
        (_component(444, bytes(10) + b"\x00\x00"), 2, "onion port must not be 0"),
        (_component(421, b"\x13\x20" + bytes(32), var=True), 3, "neither identity nor sha2-256"),
        (_component(421, b"\x12\x10" + bytes(16), var=True), 3, "not 32"),
        (_component(421, b"\x00\x2b" + bytes(43), var=True), 3, "longer than 42"),
        (_component(421, b"\x12\x20" + bytes(33), var=True), 3, "1 bytes after"),
        (_component(466, b"\x12\x41" + bytes(65), var=True), 3, "exceeds 64"),
        (_component(481, b"\x00", var=True)[:-2] + b"\x00", 0, "/http-path has an empty value"),
    ],
)
def test_binary_errors_say_what_and_where(data: bytes, offset: int, fragment: str) -> None:
    with pytest.raises(MultiaddrError) as info:
        Multiaddr.from_bytes(data)
    assert fragment in str(info.value)
    assert info.value.offset == offset
    if data:
        assert f"at byte {offset}" in str(info.value)


def test_component_limit() -> None:
    one = bytes.fromhex("060001")  # /tcp/1
    assert len(Multiaddr.from_bytes(one * MAX_COMPONENTS)) == MAX_COMPONENTS
    with pytest.raises(MultiaddrError, match=f"more than {MAX_COMPONENTS} components"):
        Multiaddr.from_bytes(one * (MAX_COMPONENTS + 1))
    assert len(Multiaddr("/tcp/1" * MAX_COMPONENTS)) == MAX_COMPONENTS


def test_size_limit() -> None:
    # one /unix path component of exactly the maximum size, then one byte more
    def unix(total: int) -> bytes:
        header = 4  # code (2 bytes) + length (2 bytes)
        return _component(400, b"/" + b"a" * (total - header - 1), var=True)

    assert len(unix(MAX_MULTIADDR_BYTES)) == MAX_MULTIADDR_BYTES
    addr = Multiaddr.from_bytes(unix(MAX_MULTIADDR_BYTES))
    assert Multiaddr(str(addr)) == addr
    with pytest.raises(MultiaddrError, match="longer than 1024"):
        Multiaddr.from_bytes(unix(MAX_MULTIADDR_BYTES + 1))
    with pytest.raises(MultiaddrError, match="longer than 1024"):
        Multiaddr("/unix/" + "a" * (MAX_MULTIADDR_BYTES - 4))


def test_memory_is_a_fixed_eight_byte_value() -> None:
    assert Multiaddr(f"/memory/{(1 << 64) - 1}").to_bytes() == bytes.fromhex("8906") + b"\xff" * 8
    with pytest.raises(MultiaddrError):
        Multiaddr(f"/memory/{1 << 64}")


def test_ip6zone_values_may_hold_percent_but_not_slash() -> None:
    assert str(Multiaddr("/ip6zone/x%y/ip6/::")) == "/ip6zone/x%y/ip6/::"
    with pytest.raises(MultiaddrError, match="contains '/'"):
        Multiaddr.from_bytes(bytes.fromhex("2a03") + b"a/b")
