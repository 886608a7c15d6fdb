"""The DCUtR codec: byte for byte what protoc makes, strict on what peers send, fuzzed."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from reference_pb import pb2

from flarelab.errors import LimitExceededError, LocalProtocolError, RemoteProtocolError
from flarelab.multiaddr import Multiaddr
from flarelab.protocols.dcutr.messages import (
    DCUTR_PROTOCOL,
    MAX_ADDRS,
    MAX_MESSAGE_SIZE,
    Connect,
    Sync,
    decode_message,
    encode_message,
    read_message,
)
from flarelab.wire import IncompleteError, StreamReader, decode_uvarint, length_prefixed

ref = pb2("holepunch")

ADDRS = [
    Multiaddr("/ip4/203.0.113.7/tcp/4001"),
    Multiaddr("/ip6/2001:db8::7/udp/4001/quic-v1"),
    Multiaddr("/ip4/198.51.100.1/udp/1/quic-v1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"),
]

addr_st = st.builds(
    lambda ip, port, quic: Multiaddr(f"/ip4/{ip}/udp/{port}/quic-v1") if quic
    else Multiaddr.from_ip_port(str(ip), port, "tcp"),
    st.ip_addresses(v=4), st.integers(1, 65535), st.booleans(),
)


def _body(data: bytes) -> bytes:
    length, pos = decode_uvarint(data)
    assert len(data) - pos == length
    return data[pos:]


def test_connect_and_sync_match_protoc_byte_for_byte() -> None:
    theirs = ref.HolePunch(type=ref.HolePunch.CONNECT, ObsAddrs=[a.to_bytes() for a in ADDRS])
    assert _body(encode_message(Connect(tuple(ADDRS)))) == theirs.SerializeToString()
    assert _body(encode_message(Sync())) == ref.HolePunch(
        type=ref.HolePunch.SYNC).SerializeToString()
    assert encode_message(Sync()) == b"\x03\x08\xac\x02"  # type = 300


@given(st.lists(addr_st, max_size=20))
def test_round_trip_and_protoc_agree(addrs: list[Multiaddr]) -> None:
    data = encode_message(Connect(tuple(addrs)))
    decoded = decode_message(_body(data))
    assert decoded == Connect(tuple(dict.fromkeys(addrs)))
    parsed = ref.HolePunch.FromString(_body(data))
    assert parsed.type == ref.HolePunch.CONNECT
    assert [Multiaddr.from_bytes(b) for b in parsed.ObsAddrs] == addrs


def test_invalid_addresses_are_skipped_and_counted() -> None:
    msg = ref.HolePunch(type=ref.HolePunch.CONNECT,
                        ObsAddrs=[b"\xff\xff", ADDRS[0].to_bytes(), b"", ADDRS[0].to_bytes()])
    assert decode_message(msg.SerializeToString()) == Connect((ADDRS[0],), invalid=2)


@pytest.mark.parametrize(("data", "match"), [
    (b"", "required field 'type' is missing"),
    (b"\x08\x65", "unknown DCUtR message type 101"),
    (b"\x08", "truncated varint"),
    (b"\x08\xac\x02\x12\x02\x04\x01", "a SYNC must carry no addresses"),
    (b"\x12\x08", "runs past the end"),
    (b"\x08\x64" + b"\x12\x00" * (MAX_ADDRS + 1), f"{MAX_ADDRS + 1} addresses"),
    (b"\x08\x64" + b"\x12\x00" * 3000, "exceeds the limit of 4096"),
])
def test_malformed_messages_are_the_peers_fault(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        decode_message(data)
    assert info.value.protocol == DCUTR_PROTOCOL


def test_we_never_send_more_than_4_kib() -> None:
    big = tuple(Multiaddr(f"/dns4/{'x' * 200}{i}.example/tcp/1") for i in range(30))
    with pytest.raises(LocalProtocolError, match="exceeds DCUtR's limit"):
        encode_message(Connect(big))


async def _read(data: bytes) -> tuple[object, int]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    await send.send_all(data)
    await send.aclose()
    return await read_message(StreamReader(receive))


async def test_read_message_sizes_and_limits() -> None:
    data = encode_message(Connect(tuple(ADDRS)))
    assert await _read(data) == (Connect(tuple(ADDRS)), len(data))
    with pytest.raises(LimitExceededError, match="4097 bytes exceeds the limit of 4096") as info:
        await _read(length_prefixed(b"\x00" * (MAX_MESSAGE_SIZE + 1)))
    assert info.value.protocol == DCUTR_PROTOCOL
    with pytest.raises(IncompleteError):
        await _read(data[:-1])


@given(st.binary(max_size=200))
def test_fuzz_decode_raises_only_our_errors_and_agrees_with_protoc(data: bytes) -> None:
    try:
        ours = decode_message(data)
    except RemoteProtocolError:
        return
    theirs = ref.HolePunch.FromString(data)  # anything we accept, protoc accepts
    if isinstance(ours, Sync):
        assert theirs.type == ref.HolePunch.SYNC and not theirs.ObsAddrs
    else:
        assert theirs.type == ref.HolePunch.CONNECT
        assert len(ours.addrs) + ours.invalid <= len(theirs.ObsAddrs)
        assert decode_message(_body(encode_message(ours))) == Connect(ours.addrs)


@given(st.binary(max_size=60))
async def test_fuzz_read_message_from_a_stream(data: bytes) -> None:
    try:
        await _read(data)
    except RemoteProtocolError:
        pass
