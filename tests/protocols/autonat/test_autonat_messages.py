"""AutoNAT v1 and v2 messages: bytes as protoc makes them, validation, limits, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference_pb import pb2

from flarelab.errors import RemoteProtocolError
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.protocols.autonat.messages import (
    DIAL_DATA_CHUNK,
    V1_MAX_ADDRS,
    V1_PROTOCOL,
    V2_DIAL_REQUEST_PROTOCOL,
    V2_MAX_ADDRS,
    V1DialRequest,
    V1DialResponse,
    V1Status,
    V2DialDataRequest,
    V2DialDataResponse,
    V2DialRequest,
    V2DialResponse,
    V2DialStatus,
    V2ResponseStatus,
    decode_v1_request,
    decode_v1_response,
    decode_v2_dial_back,
    decode_v2_dial_back_response,
    decode_v2_message,
    encode_v1_request,
    encode_v1_response,
    encode_v2_dial_back,
    encode_v2_dial_back_response,
    encode_v2_dial_data_request,
    encode_v2_dial_data_response,
    encode_v2_request,
    encode_v2_response,
)

ref1 = pb2("autonat")
ref2 = pb2("autonatv2")
PEER = PeerId.from_public_key(Ed25519PrivateKey.from_seed(b"\x01" * 32).public_key)
OTHER = PeerId.from_public_key(Ed25519PrivateKey.from_seed(b"\x02" * 32).public_key)
ADDRS = [Multiaddr("/ip4/198.51.100.7/tcp/4001"), Multiaddr("/ip6/2001:db8::1/udp/4001/quic-v1")]

addr_st = st.builds(
    lambda a, b, c, d, port, quic: Multiaddr(
        f"/ip4/{a}.{b}.{c}.{d}/udp/{port}/quic-v1" if quic else f"/ip4/{a}.{b}.{c}.{d}/tcp/{port}"),
    *(st.integers(0, 255) for _ in range(4)), st.integers(0, 65535), st.booleans())


# ---------------------------------------------------------------- v1
def test_v1_request_matches_protoc_and_round_trips() -> None:
    ours = encode_v1_request(PEER, ADDRS)
    theirs = ref1.Message(type=ref1.Message.DIAL, dial=ref1.Message.Dial(
        peer=ref1.Message.PeerInfo(id=PEER.to_bytes(), addrs=[a.to_bytes() for a in ADDRS])))
    assert ours == theirs.SerializeToString(deterministic=True)
    assert decode_v1_request(ours) == V1DialRequest(PEER, tuple(ADDRS))


def test_v1_response_matches_protoc_and_round_trips() -> None:
    ours = encode_v1_response(V1Status.OK, "", ADDRS[0])
    theirs = ref1.Message(type=ref1.Message.DIAL_RESPONSE, dialResponse=ref1.Message.DialResponse(
        status=ref1.Message.OK, addr=ADDRS[0].to_bytes()))
    assert ours == theirs.SerializeToString(deterministic=True)
    assert decode_v1_response(ours) == V1DialResponse(V1Status.OK, "", ADDRS[0])
    refused = decode_v1_response(encode_v1_response(V1Status.E_DIAL_REFUSED, "too many dials"))
    assert (refused.status, refused.text, refused.status_name) == (101, "too many dials",
                                                                   "E_DIAL_REFUSED")


def test_v1_decoding_rules() -> None:
    # proto2 defaults: an absent type reads as DIAL (go relies on it)
    no_type = ref1.Message(dial=ref1.Message.Dial(peer=ref1.Message.PeerInfo(addrs=[])))
    request = decode_v1_request(no_type.SerializeToString())
    assert request == V1DialRequest(None, ())
    # malformed addresses are skipped and counted; beyond the limit they are ignored
    raw = [b"\xff\xff", ADDRS[0].to_bytes()] + [ADDRS[1].to_bytes()] * (V1_MAX_ADDRS + 3)
    many = ref1.Message(dial=ref1.Message.Dial(peer=ref1.Message.PeerInfo(addrs=raw)))
    request = decode_v1_request(many.SerializeToString())
    assert (request.invalid, request.ignored, len(request.addrs)) == (1, 5, V1_MAX_ADDRS - 1)
    # an unknown status is kept, with a name that says so
    odd = ref1.Message(type=ref1.Message.DIAL_RESPONSE,
                       dialResponse=ref1.Message.DialResponse(status=0))
    odd.dialResponse.status = 300
    assert decode_v1_response(odd.SerializeToString()).status_name == "E_INTERNAL_ERROR"


@pytest.mark.parametrize(("data", "match"), [
    (b"\x08\x01", "expected a DIAL message"),  # a DIAL_RESPONSE sent as a request
    (b"\x08\x00", "without peer info"),  # no Dial
    (b"\x08\x00\x12\x00", "without peer info"),  # a Dial without PeerInfo
    (b"\x08\x00\x12\x05\x0a\x03\x0a\x01\x01", "peer id"),  # a one-byte peer id
    (b"\x12\x03\x0a", "malformed"),  # truncated
])
def test_v1_bad_requests(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        decode_v1_request(data)
    assert info.value.protocol == V1_PROTOCOL


def test_v1_an_empty_peer_info_is_a_request_for_nothing() -> None:
    assert decode_v1_request(b"\x08\x00\x12\x02\x0a\x00") == V1DialRequest(None, ())


def test_v1_bad_responses() -> None:
    with pytest.raises(RemoteProtocolError, match="expected a DIAL_RESPONSE"):
        decode_v1_response(encode_v1_request(PEER, ADDRS))
    with pytest.raises(RemoteProtocolError, match="malformed address"):
        decode_v1_response(b"\x08\x01\x1a\x04\x1a\x02\xff\xff")


@given(st.binary(max_size=200))
def test_v1_parsers_raise_only_our_errors(data: bytes) -> None:
    for decode in (decode_v1_request, decode_v1_response):
        try:
            decode(data)
        except RemoteProtocolError:
            pass


@given(st.lists(addr_st, max_size=8), st.booleans())
def test_v1_round_trips(addrs: list[Multiaddr], with_addr: bool) -> None:
    assert decode_v1_request(encode_v1_request(OTHER, addrs)).addrs == tuple(addrs)
    addr = addrs[0] if addrs and with_addr else None
    back = decode_v1_response(encode_v1_response(V1Status.E_DIAL_ERROR, "x" * 300, addr))
    assert back == V1DialResponse(V1Status.E_DIAL_ERROR, "x" * 256, addr)


# ---------------------------------------------------------------- v2
def test_v2_messages_match_protoc() -> None:
    nonce = 0xFEDCBA9876543210
    assert encode_v2_request(ADDRS, nonce) == ref2.Message(dialRequest=ref2.DialRequest(
        addrs=[a.to_bytes() for a in ADDRS], nonce=nonce)).SerializeToString(deterministic=True)
    assert encode_v2_response(V2ResponseStatus.OK, 1, V2DialStatus.E_DIAL_BACK_ERROR) == (
        ref2.Message(dialResponse=ref2.DialResponse(
            status=ref2.DialResponse.OK, addrIdx=1, dialStatus=ref2.E_DIAL_BACK_ERROR,
        )).SerializeToString(deterministic=True))
    assert encode_v2_dial_data_request(2, 40_000) == ref2.Message(
        dialDataRequest=ref2.DialDataRequest(addrIdx=2, numBytes=40_000)).SerializeToString()
    assert encode_v2_dial_data_response(b"\0" * 10) == ref2.Message(
        dialDataResponse=ref2.DialDataResponse(data=b"\0" * 10)).SerializeToString()
    assert encode_v2_dial_back(nonce) == ref2.DialBack(nonce=nonce).SerializeToString()
    # proto3: DialBackResponse{OK} is the empty message
    assert encode_v2_dial_back_response() == b""
    assert decode_v2_dial_back(ref2.DialBack(nonce=7).SerializeToString()) == 7
    assert decode_v2_dial_back_response(b"") == 0


def test_v2_decoding() -> None:
    assert decode_v2_message(encode_v2_request(ADDRS, 5)) == V2DialRequest(tuple(ADDRS), 5, 2)
    # proto3: an all-default response is status E_INTERNAL_ERROR, dial status UNUSED
    empty_response = ref2.Message(dialResponse=ref2.DialResponse()).SerializeToString()
    response = decode_v2_message(empty_response)
    assert response == V2DialResponse(V2ResponseStatus.E_INTERNAL_ERROR, 0, V2DialStatus.UNUSED)
    assert isinstance(response, V2DialResponse)
    assert (response.status_name, response.dial_status_name) == ("E_INTERNAL_ERROR", "UNUSED")
    assert V2DialResponse(7, 0, 9).status_name == "UNKNOWN(7)"
    assert decode_v2_message(encode_v2_dial_data_request(1, 9)) == V2DialDataRequest(1, 9)
    assert decode_v2_message(encode_v2_dial_data_response(b"abc")) == V2DialDataResponse(3)
    # addresses keep their positions: a malformed one is None; only the first 50 are kept
    raw = [b"\xff", ADDRS[0].to_bytes()] + [ADDRS[1].to_bytes()] * 60
    request = decode_v2_message(ref2.Message(
        dialRequest=ref2.DialRequest(addrs=raw, nonce=1)).SerializeToString())
    assert isinstance(request, V2DialRequest)
    assert request.addrs[:2] == (None, ADDRS[0])
    assert (len(request.addrs), request.total) == (V2_MAX_ADDRS, 62)
    with pytest.raises(ValueError, match="4096"):
        encode_v2_dial_data_response(bytes(DIAL_DATA_CHUNK + 1))


def test_v2_oneof_must_carry_exactly_one_message() -> None:
    with pytest.raises(RemoteProtocolError, match="no message") as info:
        decode_v2_message(b"")
    assert info.value.protocol == V2_DIAL_REQUEST_PROTOCOL
    both = encode_v2_request(ADDRS, 1) + encode_v2_dial_data_request(0, 1)
    with pytest.raises(RemoteProtocolError, match="several messages"):
        decode_v2_message(both)


@given(st.binary(max_size=200))
def test_v2_parsers_raise_only_our_errors(data: bytes) -> None:
    for decode in (decode_v2_message, decode_v2_dial_back, decode_v2_dial_back_response):
        try:
            decode(data)
        except RemoteProtocolError:
            pass


@given(st.lists(addr_st, max_size=8), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 2**64 - 1), st.binary(max_size=DIAL_DATA_CHUNK))
def test_v2_round_trips(addrs: list[Multiaddr], nonce: int, idx: int, num: int,
                        data: bytes) -> None:
    assert decode_v2_message(encode_v2_request(addrs, nonce)) == V2DialRequest(
        tuple(addrs), nonce, len(addrs))
    for status in V2ResponseStatus:
        for dial_status in V2DialStatus:
            assert decode_v2_message(encode_v2_response(status, idx, dial_status)) == (
                V2DialResponse(status, idx, dial_status))
    assert decode_v2_message(encode_v2_dial_data_request(idx, num)) == V2DialDataRequest(idx, num)
    assert decode_v2_message(encode_v2_dial_data_response(data)) == V2DialDataResponse(len(data))
    assert decode_v2_dial_back(encode_v2_dial_back(nonce)) == nonce
