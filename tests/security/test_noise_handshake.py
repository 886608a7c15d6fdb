"""libp2p's Noise handshake cores in pairs, without I/O: identities, muxers, every failure.

"Evil" peers are built from the bare Noise core (:class:`XXHandshakeState`) so they can put
anything in their payloads.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from flarelab.errors import HandshakeError, LocalProtocolError, PeerIdMismatchError
from flarelab.identity import (
    EcdsaPrivateKey,
    Ed25519PrivateKey,
    PeerId,
    PrivateKey,
    RsaPrivateKey,
    Secp256k1PrivateKey,
)
from flarelab.security.noise.handshake import MESSAGE_TYPES, NoiseHandshake
from flarelab.security.noise.payload import (
    STATIC_KEY_SIGNATURE_PREFIX,
    HandshakePayload,
    decode_payload,
    encode_payload,
    select_muxer,
    sign_payload,
)
from flarelab.security.noise.xx import XXHandshakeState

ALICE = Ed25519PrivateKey.from_seed(b"\x01" * 32)
BOB = Ed25519PrivateKey.from_seed(b"\x02" * 32)
MALLORY = Ed25519PrivateKey.from_seed(b"\x03" * 32)
ALICE_ID = PeerId.from_public_key(ALICE.public_key)
BOB_ID = PeerId.from_public_key(BOB.public_key)
MALLORY_ID = PeerId.from_public_key(MALLORY.public_key)


def _x(seed: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def run(initiator: NoiseHandshake, responder: NoiseHandshake) -> list[bytes]:
    """Pass messages between the two cores until both are complete; return the messages."""
    transcript = []
    while not (initiator.complete and responder.complete):
        writer, reader = (initiator, responder) if initiator.is_my_turn else (responder, initiator)
        assert writer.is_my_turn
        message = writer.write_message()
        transcript.append(message)
        reader.read_message(message)
    return transcript


def _evil_responder_message_2(msg1: bytes, payload: bytes) -> bytes:
    """Answer ``msg1`` with a correctly encrypted message 2 carrying any payload."""
    xx = XXHandshakeState(initiator=False)
    xx.read_message(msg1)
    return xx.write_message(payload)


def _evil_initiator(responder: NoiseHandshake, payload_for: object) -> bytes:
    """Run messages 1 and 2 honestly against ``responder``; return a message 3 with any payload.

    ``payload_for(static_public)`` returns the payload bytes.
    """
    xx = XXHandshakeState(initiator=True)
    responder.read_message(xx.write_message())
    xx.read_message(responder.write_message())
    return xx.write_message(payload_for(xx.local_static_public))  # type: ignore[operator]


# ---------------------------------------------------------------------- success


@pytest.mark.parametrize(
    ("initiator_type", "responder_type"),
    [
        (Ed25519PrivateKey, Ed25519PrivateKey),
        (Secp256k1PrivateKey, Ed25519PrivateKey),
        (Ed25519PrivateKey, EcdsaPrivateKey),
        (RsaPrivateKey, Secp256k1PrivateKey),
    ],
    ids=["ed25519-ed25519", "secp256k1-ed25519", "ed25519-ecdsa", "rsa-secp256k1"],
)
def test_handshake_between_key_types(
    initiator_type: type[PrivateKey], responder_type: type[PrivateKey]
) -> None:
    i_key, r_key = initiator_type.generate(), responder_type.generate()
    initiator = NoiseHandshake(i_key, is_initiator=True)
    responder = NoiseHandshake(r_key, is_initiator=False)
    messages = run(initiator, responder)
    assert len(messages) == 3
    assert len(messages[0]) == 32
    i_result, r_result = initiator.result(), responder.result()
    assert i_result.remote_peer == PeerId.from_public_key(r_key.public_key)
    assert r_result.remote_peer == PeerId.from_public_key(i_key.public_key)
    assert i_result.remote_public_key == r_key.public_key
    assert i_result.local_peer == r_result.remote_peer
    assert i_result.handshake_hash == r_result.handshake_hash
    assert i_result.send.key == r_result.receive.key
    assert i_result.receive.key == r_result.send.key
    assert i_result.early_muxer is None
    assert r_result.early_muxer is None


def test_fixed_keys_give_a_byte_identical_transcript() -> None:
    def pair() -> tuple[NoiseHandshake, NoiseHandshake]:
        return (
            NoiseHandshake(ALICE, is_initiator=True, static_key=_x(1), ephemeral_key=_x(2)),
            NoiseHandshake(BOB, is_initiator=False, static_key=_x(3), ephemeral_key=_x(4)),
        )

    first, second = run(*pair()), run(*pair())
    assert first == second
    third = run(NoiseHandshake(ALICE, is_initiator=True), NoiseHandshake(BOB, is_initiator=False))
    assert third[0] != first[0]


def test_expected_peer_that_matches_on_both_sides() -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True, expected_peer=BOB_ID)
    responder = NoiseHandshake(BOB, is_initiator=False, expected_peer=ALICE_ID)
    run(initiator, responder)
    assert initiator.remote_peer == BOB_ID
    assert responder.remote_peer == ALICE_ID


def test_message_types_name_the_tokens() -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True)
    responder = NoiseHandshake(BOB, is_initiator=False)
    seen = []
    while not responder.complete:
        writer, reader = (initiator, responder) if initiator.is_my_turn else (responder, initiator)
        seen.append(writer.next_message_type)
        assert reader.next_message_type == writer.next_message_type
        reader.read_message(writer.write_message())
    assert (
        tuple(seen)
        == MESSAGE_TYPES
        == (
            "noise.msg1 e",
            "noise.msg2 e,ee,s,es",
            "noise.msg3 s,se",
        )
    )


# ---------------------------------------------------------------------- early muxer negotiation

YAMUX, MPLEX = "/yamux/1.0.0", "/mplex/6.7.0"


@pytest.mark.parametrize(
    ("initiator_muxers", "responder_muxers", "expected"),
    [
        ((YAMUX, MPLEX), (YAMUX, MPLEX), YAMUX),
        ((YAMUX, MPLEX), (MPLEX, YAMUX), YAMUX),  # our initiator sends only its pick
        ((MPLEX,), (YAMUX, MPLEX), MPLEX),  # the responder offers its whole list
        ((YAMUX,), (), None),
        ((), (YAMUX,), None),
        ((YAMUX,), (MPLEX,), None),
    ],
)
def test_early_muxer_negotiation(
    initiator_muxers: tuple[str, ...], responder_muxers: tuple[str, ...], expected: str | None
) -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True, muxers=initiator_muxers)
    responder = NoiseHandshake(BOB, is_initiator=False, muxers=responder_muxers)
    run(initiator, responder)
    assert initiator.result().early_muxer == expected
    assert responder.result().early_muxer == expected
    # What each side offered: the responder its whole list, the initiator its pick.
    assert initiator.result().remote_muxers == responder_muxers
    assert responder.result().remote_muxers == ((expected,) if expected else ())


def _foreign_run(
    ours: NoiseHandshake, full_list: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Handshake ``ours`` with a foreign peer that offers ``full_list`` whole.

    Return (what the initiator offered, what the responder offered).
    """
    xx = XXHandshakeState(initiator=not ours.is_initiator)
    if ours.is_initiator:
        xx.read_message(ours.write_message())
        ours.read_message(
            xx.write_message(encode_payload(sign_payload(BOB, xx.local_static_public, full_list)))
        )
        offered = decode_payload(xx.read_message(ours.write_message())).stream_muxers
        return offered, full_list
    ours.read_message(xx.write_message())
    offered = decode_payload(xx.read_message(ours.write_message())).stream_muxers
    ours.read_message(
        xx.write_message(encode_payload(sign_payload(ALICE, xx.local_static_public, full_list)))
    )
    return full_list, offered


_lists = st.lists(st.sampled_from(["m1", "m2", "m3", "m4"]), unique=True, max_size=4).map(tuple)


@settings(max_examples=100)
@given(ours=_lists, theirs=_lists, we_initiate=st.booleans())
def test_every_known_rule_agrees_with_what_we_pick(
    ours: tuple[str, ...], theirs: tuple[str, ...], we_initiate: bool
) -> None:
    """A foreign peer that sends its whole list and applies its own rule agrees with us.

    As initiator we send one muxer, so every rule agrees. As responder we follow js-libp2p
    (a js initiator takes the first of *our* list it supports); the spec's rule (the
    initiator's preference, go-libp2p today) agrees whenever the lists share at most one
    muxer or order the shared ones alike -- go's default lists only yamux.
    """
    core = NoiseHandshake(ALICE if we_initiate else BOB, is_initiator=we_initiate, muxers=ours)
    initiator_sent, responder_sent = _foreign_run(core, theirs)
    early = core.result().early_muxer
    shared_in_our_order = [m for m in ours if m in theirs]
    shared_in_their_order = [m for m in theirs if m in ours]
    same_order = shared_in_our_order == shared_in_their_order
    if we_initiate:
        assert len(initiator_sent) <= 1
        assert select_muxer(initiator_sent, responder_sent) == early  # spec, go today
        assert select_muxer(responder_sent, initiator_sent) == early  # older go
        assert select_muxer(initiator_sent, theirs) == early  # js responder
    else:
        assert responder_sent == ours
        assert select_muxer(responder_sent, theirs) == early  # js initiator
        if len(shared_in_our_order) <= 1 or same_order:
            assert select_muxer(initiator_sent, responder_sent) == early  # spec, go today
    if early is not None:
        assert early in ours
        assert early in theirs
    else:
        assert not shared_in_our_order


def test_bad_local_muxer_list_is_refused_up_front() -> None:
    with pytest.raises(LocalProtocolError):
        NoiseHandshake(ALICE, is_initiator=True, muxers="/yamux/1.0.0")


# ---------------------------------------------------------------------- failures


def test_expected_peer_mismatch_stops_the_initiator_before_it_reveals_itself() -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True, expected_peer=BOB_ID)
    impostor = NoiseHandshake(MALLORY, is_initiator=False)
    impostor.read_message(initiator.write_message())
    with pytest.raises(PeerIdMismatchError) as info:
        initiator.read_message(impostor.write_message())
    err = info.value
    assert err.expected == BOB_ID
    assert err.actual == MALLORY_ID
    assert err.peer == MALLORY_ID
    assert err.protocol == "/noise"
    assert str(BOB_ID) in str(err)
    assert str(MALLORY_ID) in str(err)
    with pytest.raises(LocalProtocolError, match="already failed"):
        initiator.write_message()  # message 3 (our identity) is never produced


def test_expected_peer_mismatch_on_the_responder() -> None:
    initiator = NoiseHandshake(MALLORY, is_initiator=True)
    responder = NoiseHandshake(BOB, is_initiator=False, expected_peer=ALICE_ID)
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    with pytest.raises(PeerIdMismatchError) as info:
        responder.read_message(initiator.write_message())
    assert info.value.actual == MALLORY_ID
    assert not responder.complete


def test_message_1_with_a_payload_is_refused() -> None:
    xx = XXHandshakeState(initiator=True)
    responder = NoiseHandshake(BOB, is_initiator=False)
    with pytest.raises(HandshakeError, match="exactly 32 bytes") as info:
        responder.read_message(xx.write_message(b"early"))
    assert info.value.protocol == "/noise"


def test_responder_signature_over_another_static_key() -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True)
    payload = encode_payload(sign_payload(BOB, b"\x00" * 32))
    with pytest.raises(HandshakeError, match="does not verify") as info:
        initiator.read_message(_evil_responder_message_2(initiator.write_message(), payload))
    assert info.value.peer is None  # not authenticated, so not named


def test_responder_with_someone_elses_key() -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True)
    xx = XXHandshakeState(initiator=False)
    xx.read_message(initiator.write_message())
    # Mallory signs her static key but claims Bob's identity key.
    signature = MALLORY.sign(STATIC_KEY_SIGNATURE_PREFIX + xx.local_static_public)
    claim = HandshakePayload(identity_key=BOB.public_key.to_protobuf(), identity_sig=signature)
    with pytest.raises(HandshakeError, match="does not verify"):
        initiator.read_message(xx.write_message(encode_payload(claim)))


def test_replayed_payload_from_another_session_is_refused() -> None:
    # A payload Bob signed in one session cannot vouch for a different static key.
    old = NoiseHandshake(BOB, is_initiator=False)
    first = NoiseHandshake(ALICE, is_initiator=True)
    old.read_message(first.write_message())
    first.read_message(old.write_message())
    stolen = first.remote_payload
    assert stolen is not None
    initiator = NoiseHandshake(ALICE, is_initiator=True, expected_peer=BOB_ID)
    with pytest.raises(HandshakeError, match="does not verify"):
        initiator.read_message(
            _evil_responder_message_2(initiator.write_message(), encode_payload(stolen))
        )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "no identity key"),
        (b"\x0a\x09short", "malformed"),
        (b"not a protobuf at all \xff", "malformed"),
    ],
)
def test_bad_payload_in_message_2(payload: bytes, reason: str) -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True)
    with pytest.raises(HandshakeError, match=reason):
        initiator.read_message(_evil_responder_message_2(initiator.write_message(), payload))


def test_bad_signature_in_message_3() -> None:
    responder = NoiseHandshake(BOB, is_initiator=False)
    message = _evil_initiator(
        responder, lambda static: encode_payload(sign_payload(ALICE, bytes(32)))
    )
    with pytest.raises(HandshakeError, match="does not verify"):
        responder.read_message(message)
    assert responder.remote_peer is None


def test_empty_payload_in_message_3() -> None:
    responder = NoiseHandshake(BOB, is_initiator=False)
    message = _evil_initiator(responder, lambda static: b"")
    with pytest.raises(HandshakeError, match="no identity key"):
        responder.read_message(message)


def test_two_initiators_fail_cleanly() -> None:
    a = NoiseHandshake(ALICE, is_initiator=True)
    b = NoiseHandshake(BOB, is_initiator=True)
    msg_b = b.write_message()
    a.write_message()
    with pytest.raises(HandshakeError, match="message 2 is 32 bytes"):
        a.read_message(msg_b)


def test_message_out_of_turn_is_a_local_error() -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True)
    responder = NoiseHandshake(BOB, is_initiator=False)
    with pytest.raises(LocalProtocolError):
        initiator.read_message(b"\x00" * 32)
    with pytest.raises(LocalProtocolError):
        responder.write_message()
    with pytest.raises(LocalProtocolError, match="not complete"):
        responder.result()


def test_message_3_in_place_of_message_1() -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True)
    responder = NoiseHandshake(BOB, is_initiator=False)
    messages = run(initiator, responder)
    fresh = NoiseHandshake(BOB, is_initiator=False)
    with pytest.raises(HandshakeError, match="exactly 32 bytes"):
        fresh.read_message(messages[2])


# ---------------------------------------------------------------------- fuzz


@given(st.binary(max_size=300))
def test_fuzzed_message_2_raises_only_handshake_errors(message: bytes) -> None:
    initiator = NoiseHandshake(ALICE, is_initiator=True)
    initiator.write_message()
    with pytest.raises(HandshakeError):
        initiator.read_message(message)


@given(st.binary(min_size=32, max_size=32))
def test_fuzzed_message_1_is_accepted_or_refused_cleanly(message: bytes) -> None:
    responder = NoiseHandshake(BOB, is_initiator=False)
    try:
        responder.read_message(message)
        responder.write_message()
    except HandshakeError:
        pass


@given(st.binary(max_size=300))
def test_fuzzed_message_3_raises_only_handshake_errors(message: bytes) -> None:
    responder = NoiseHandshake(BOB, is_initiator=False)
    responder.read_message(NoiseHandshake(ALICE, is_initiator=True).write_message())
    responder.write_message()
    with pytest.raises(HandshakeError):
        responder.read_message(message)
