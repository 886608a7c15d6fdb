"""Circuit relay v2 messages: codec against protoc, validation, vouchers, fuzzing (tier 1)."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from reference_pb import pb2

from flarelab.errors import LocalProtocolError
from flarelab.identity import Ed25519PrivateKey, Envelope, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.protocols.relay import (
    HOP_PROTOCOL,
    MAX_MESSAGE_SIZE,
    VOUCHER_DOMAIN,
    VOUCHER_PAYLOAD_TYPE,
    Limit,
    RelayProtocolError,
    Status,
    Voucher,
)
from flarelab.protocols.relay.framing import parse_hop, read_frame
from flarelab.protocols.relay.messages import (
    HopConnect,
    HopReserve,
    HopStatus,
    PeerInfo,
    ReservationInfo,
    StopConnect,
    StopStatus,
    decode_hop,
    decode_stop,
    encode_hop,
    encode_stop,
)
from flarelab.wire import StreamReader

ref = pb2("circuit")
KEYS = [Ed25519PrivateKey.from_seed(bytes([i]) * 32) for i in range(3)]
PEERS = [PeerId.from_public_key(k.public_key) for k in KEYS]
RELAY_KEY, RELAY, PEER = KEYS[0], PEERS[0], PEERS[1]
ADDR = Multiaddr(f"/ip4/198.51.100.1/tcp/4001/p2p/{RELAY}")


def test_status_codes_are_the_spec_s() -> None:
    assert {s.name: int(s) for s in Status} == {
        "OK": 100, "RESERVATION_REFUSED": 200, "RESOURCE_LIMIT_EXCEEDED": 201,
        "PERMISSION_DENIED": 202, "CONNECTION_FAILED": 203, "NO_RESERVATION": 204,
        "MALFORMED_MESSAGE": 400, "UNEXPECTED_MESSAGE": 401,
    }
    assert {s.name: int(s) for s in Status} == {
        name: value for name, value in ref.Status.items()
    }


def test_hop_messages_match_protoc_byte_for_byte() -> None:
    voucher = Voucher(RELAY, PEER, 1_900_000_000).seal(RELAY_KEY)
    ours = encode_hop(HopStatus(
        Status.OK, ReservationInfo(1_900_000_000, (ADDR,), voucher), Limit(120, 1 << 17)
    ))
    theirs = ref.HopMessage(
        type=ref.HopMessage.STATUS, status=ref.OK,
        reservation=ref.Reservation(expire=1_900_000_000, addrs=[ADDR.to_bytes()],
                                    voucher=voucher),
        limit=ref.Limit(duration=120, data=1 << 17),
    )
    assert ours == theirs.SerializeToString(deterministic=True)
    reserve = ref.HopMessage(type=ref.HopMessage.RESERVE)
    assert encode_hop(HopReserve()) == reserve.SerializeToString()
    connect = ref.HopMessage(type=ref.HopMessage.CONNECT, peer=ref.Peer(id=PEER.to_bytes()))
    assert encode_hop(HopConnect(PeerInfo(PEER))) == connect.SerializeToString()
    assert decode_hop(connect.SerializeToString()) == HopConnect(PeerInfo(PEER))


def test_stop_messages_match_protoc() -> None:
    theirs = ref.StopMessage(
        type=ref.StopMessage.CONNECT, peer=ref.Peer(id=PEER.to_bytes()),
        limit=ref.Limit(duration=120, data=131072),
    )
    ours = StopConnect(PeerInfo(PEER), Limit(120, 131072))
    assert encode_stop(ours) == theirs.SerializeToString()
    assert decode_stop(theirs.SerializeToString()) == ours
    status = ref.StopMessage(type=ref.StopMessage.STATUS, status=ref.NO_RESERVATION)
    assert decode_stop(status.SerializeToString()) == StopStatus(Status.NO_RESERVATION)


def test_absent_limit_fields_mean_unlimited() -> None:
    msg = ref.HopMessage(type=ref.HopMessage.STATUS, status=ref.OK, limit=ref.Limit())
    decoded = decode_hop(msg.SerializeToString())
    assert isinstance(decoded, HopStatus)
    assert decoded.limit == Limit() and decoded.limit.unlimited
    assert not Limit(120, 0).unlimited


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"", "required field 'type'"),
        (b"\x08\x07", "unknown hop message type 7"),
        (ref.HopMessage(type=ref.HopMessage.CONNECT).SerializeToString(), "names no peer"),
        (ref.HopMessage(type=ref.HopMessage.CONNECT, peer=ref.Peer(id=b"\x00\x03abc"))
         .SerializeToString(), "invalid peer id"),
        (ref.HopMessage(type=ref.HopMessage.STATUS).SerializeToString(), "without a status"),
        (bytes([8, 2, 40, 0]), "unknown status code 0"),  # type STATUS, status 0
        (ref.HopMessage(type=ref.HopMessage.STATUS, status=ref.OK,
                        reservation=ref.Reservation()).SerializeToString(), "expiration"),
        (bytes([8, 1, 0x12, 5, 0x0A]), "malformed hop message"),
        (b"\x08" * (MAX_MESSAGE_SIZE + 1), "exceeds"),
    ],
)
def test_bad_hop_messages_are_refused_as_malformed(message: bytes, match: str) -> None:
    with pytest.raises(RelayProtocolError, match=match) as info:
        decode_hop(message)
    assert info.value.status is Status.MALFORMED_MESSAGE


def test_addresses_malformed_ones_skipped_too_many_refused() -> None:
    peer = ref.Peer(id=PEER.to_bytes(), addrs=[b"\xff\xff", ADDR.to_bytes(), ADDR.to_bytes()])
    msg = decode_hop(ref.HopMessage(type=ref.HopMessage.CONNECT, peer=peer).SerializeToString())
    assert msg == HopConnect(PeerInfo(PEER, (ADDR,)))
    many = ref.Peer(id=PEER.to_bytes(), addrs=[ADDR.to_bytes()] * 65)
    with pytest.raises(RelayProtocolError, match="more than 64 addresses"):
        decode_hop(ref.HopMessage(type=ref.HopMessage.CONNECT, peer=many).SerializeToString())


def test_local_misuse_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Limit(duration=-1)
    with pytest.raises(LocalProtocolError):
        Limit(duration=1 << 32)
    with pytest.raises(LocalProtocolError, match="signed by the relay"):
        Voucher(RELAY, PEER, 5).seal(KEYS[2])
    huge = ReservationInfo(1, tuple(ADDR for _ in range(40)), b"x" * 3000)
    with pytest.raises(LocalProtocolError, match="exceeds"):
        encode_hop(HopStatus(Status.OK, huge))


# ---------------------------------------------------------------------- vouchers
def test_voucher_round_trip_and_wire_format() -> None:
    data = Voucher(RELAY, PEER, 1_900_000_000).seal(RELAY_KEY)
    voucher = Voucher.open(data)
    assert voucher == Voucher(RELAY, PEER, 1_900_000_000)
    envelope = Envelope.open(data, VOUCHER_DOMAIN)
    assert envelope.payload_type == VOUCHER_PAYLOAD_TYPE == b"\x03\x02"
    payload = ref.ReservationVoucher.FromString(envelope.payload)
    assert (payload.relay, payload.peer, payload.expiration) == (
        RELAY.to_bytes(), PEER.to_bytes(), 1_900_000_000
    )
    # canonical: fields in number order, as protoc writes them
    assert envelope.payload == payload.SerializeToString(deterministic=True)


def test_bad_vouchers_are_refused() -> None:
    payload = Voucher(RELAY, PEER, 5).payload()
    wrong_domain = Envelope.seal(RELAY_KEY, "libp2p-peer-record", VOUCHER_PAYLOAD_TYPE, payload)
    with pytest.raises(RelayProtocolError, match="does not verify"):
        Voucher.open(wrong_domain.to_bytes())
    wrong_type = Envelope.seal(RELAY_KEY, VOUCHER_DOMAIN, b"\x03\x01", payload)
    with pytest.raises(RelayProtocolError, match="payload type 0301"):
        Voucher.open(wrong_type.to_bytes())
    forged = Envelope.seal(KEYS[2], VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, payload)
    with pytest.raises(RelayProtocolError, match="not signed by the relay"):
        Voucher.open(forged.to_bytes())
    garbage = Envelope.seal(RELAY_KEY, VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, b"\x0a\x01")
    with pytest.raises(RelayProtocolError, match="malformed voucher"):
        Voucher.open(garbage.to_bytes())
    with pytest.raises(RelayProtocolError, match="invalid voucher"):
        Voucher.open(b"\x01\x02\x03")


# ---------------------------------------------------------------------- fuzzing
peer_ids = st.sampled_from(PEERS)
limits = st.none() | st.builds(Limit, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
addrs = st.lists(st.sampled_from([ADDR, Multiaddr("/ip6/2001:db8::1/udp/1/quic-v1")]),
                 max_size=3, unique=True).map(tuple)
hop_messages = st.one_of(
    st.just(HopReserve()),
    st.builds(HopConnect, st.builds(PeerInfo, peer_ids, addrs)),
    st.builds(
        HopStatus,
        st.sampled_from(list(Status)),
        st.none() | st.builds(ReservationInfo, st.integers(0, 2**64 - 1), addrs,
                              st.none() | st.binary(max_size=200)),
        limits,
    ),
)
stop_messages = st.one_of(
    st.builds(StopConnect, st.builds(PeerInfo, peer_ids, addrs), limits),
    st.builds(StopStatus, st.sampled_from(list(Status))),
)


@given(hop_messages)
def test_hop_round_trips(msg: HopReserve | HopConnect | HopStatus) -> None:
    data = encode_hop(msg)
    assert decode_hop(data) == msg
    assert ref.HopMessage.FromString(data).SerializeToString(deterministic=True) == data


@given(stop_messages)
def test_stop_round_trips(msg: StopConnect | StopStatus) -> None:
    data = encode_stop(msg)
    assert decode_stop(data) == msg
    assert ref.StopMessage.FromString(data).SerializeToString(deterministic=True) == data


@given(st.binary(max_size=300))
def test_fuzz_parsers_raise_only_relay_protocol_errors(data: bytes) -> None:
    for decode, encode in ((decode_hop, encode_hop), (decode_stop, encode_stop)):
        status = None
        try:
            msg = decode(data)
        except RelayProtocolError as err:
            status = err.status
        else:
            assert decode(encode(msg)) == msg  # type: ignore[operator]
        assert status in (None, Status.MALFORMED_MESSAGE)


@given(st.binary(max_size=300))
def test_fuzz_voucher_open_raises_only_relay_protocol_errors(data: bytes) -> None:
    with pytest.raises(RelayProtocolError):
        Voucher.open(data)


class _Chunks(trio.abc.ReceiveStream):
    """A receive stream that yields ``data`` in chunks of ``size`` bytes, then EOF."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        n = min(self.size, max_bytes or self.size)
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk

    async def aclose(self) -> None:
        pass


@given(st.binary(max_size=5000), st.integers(1, 600))
def test_fuzz_stream_framing_raises_only_relay_protocol_errors(data: bytes, size: int) -> None:
    async def main() -> None:
        reader = StreamReader(_Chunks(data, size))
        error: RelayProtocolError | None = None
        try:
            parse_hop(await read_frame(reader, HOP_PROTOCOL, "peer"), peer="peer")
        except RelayProtocolError as err:
            error = err
        if error is not None:  # named: whose message, which protocol, what to answer
            assert (error.peer, error.protocol) == ("peer", HOP_PROTOCOL)
            assert error.status is Status.MALFORMED_MESSAGE

    trio.run(main)
