"""The Noise framework core (XX, 25519, ChaChaPoly, SHA256): vectors, rules, failures.

Pure tests, no I/O: an initiator and a responder state wired together.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from flarelab.errors import HandshakeError, LocalProtocolError
from flarelab.security.noise.xx import (
    MAX_NONCE,
    PROTOCOL_NAME,
    CipherState,
    NonceExhaustedError,
    SymmetricState,
    XXHandshakeState,
    hkdf,
)

VECTORS = json.loads((Path(__file__).parent / "noise_xx_vectors.json").read_text())["vectors"]


def _key(hex_key: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key))


def _pair(seed: int = 0, prologue: bytes = b"") -> tuple[XXHandshakeState, XXHandshakeState]:
    keys = [_key(hashlib.sha256(b"%d-%d" % (seed, i)).hexdigest()) for i in range(4)]
    initiator = XXHandshakeState(
        initiator=True, static_key=keys[0], ephemeral_key=keys[1], prologue=prologue
    )
    responder = XXHandshakeState(
        initiator=False, static_key=keys[2], ephemeral_key=keys[3], prologue=prologue
    )
    return initiator, responder


def _complete(
    initiator: XXHandshakeState, responder: XXHandshakeState, payloads: tuple[bytes, ...] = ()
) -> list[bytes]:
    payloads = payloads or (b"", b"", b"")
    m1 = initiator.write_message(payloads[0])
    assert responder.read_message(m1) == payloads[0]
    m2 = responder.write_message(payloads[1])
    assert initiator.read_message(m2) == payloads[1]
    m3 = initiator.write_message(payloads[2])
    assert responder.read_message(m3) == payloads[2]
    return [m1, m2, m3]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["source"].split()[0] for v in VECTORS])
def test_published_vectors(vector: dict) -> None:
    h = bytes.fromhex
    initiator = XXHandshakeState(
        initiator=True,
        static_key=_key(vector["init_static"]),
        ephemeral_key=_key(vector["init_ephemeral"]),
        prologue=h(vector["init_prologue"]),
    )
    responder = XXHandshakeState(
        initiator=False,
        static_key=_key(vector["resp_static"]),
        ephemeral_key=_key(vector["resp_ephemeral"]),
        prologue=h(vector["resp_prologue"]),
    )
    messages = vector["messages"]
    for index, message in enumerate(messages[:3]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        ciphertext = writer.write_message(h(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"]
        assert reader.read_message(ciphertext) == h(message["payload"])
    assert initiator.complete
    assert responder.complete
    assert initiator.handshake_hash == responder.handshake_hash
    if "handshake_hash" in vector:
        assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    # Transport messages keep alternating sides, starting with the responder.
    for index, message in enumerate(messages[3:]):
        send, recv = (r_send, i_recv) if index % 2 == 0 else (i_send, r_recv)
        ciphertext = send.encrypt_with_ad(b"", h(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"]
        assert recv.decrypt_with_ad(b"", ciphertext) == h(message["payload"])


def test_fixed_keys_are_deterministic_and_fresh_keys_are_not() -> None:
    first = _complete(*_pair(seed=1))
    second = _complete(*_pair(seed=1))
    assert first == second
    assert [len(m) for m in first] == [32, 32 + 48 + 16, 48 + 16]
    fresh_a = _complete(XXHandshakeState(initiator=True), XXHandshakeState(initiator=False))
    fresh_b = _complete(XXHandshakeState(initiator=True), XXHandshakeState(initiator=False))
    assert fresh_a[0] != fresh_b[0]


def test_split_gives_matching_directions_and_the_static_keys_cross() -> None:
    initiator, responder = _pair(seed=2)
    _complete(initiator, responder)
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    assert i_send.key == r_recv.key
    assert i_recv.key == r_send.key
    assert i_send.key != i_recv.key
    assert initiator.remote_static == responder.local_static_public
    assert responder.remote_static == initiator.local_static_public


def test_initial_hash_is_the_protocol_name_itself() -> None:
    assert len(PROTOCOL_NAME) == 32
    state = SymmetricState()
    assert state.h == PROTOCOL_NAME
    assert state.ck == PROTOCOL_NAME
    longer = SymmetricState(b"Noise_XXpsk3_25519_ChaChaPoly_SHA256")
    assert longer.h == hashlib.sha256(b"Noise_XXpsk3_25519_ChaChaPoly_SHA256").digest()


def test_hkdf_matches_the_noise_definition() -> None:
    ck, ikm = b"c" * 32, b"input key material"
    temp = hmac.digest(ck, ikm, "sha256")
    out1 = hmac.digest(temp, b"\x01", "sha256")
    out2 = hmac.digest(temp, out1 + b"\x02", "sha256")
    out3 = hmac.digest(temp, out2 + b"\x03", "sha256")
    assert hkdf(ck, ikm, 2) == (out1, out2)
    assert hkdf(ck, ikm, 3) == (out1, out2, out3)


def test_prologue_mismatch_fails_at_the_first_authenticated_message() -> None:
    initiator, _ = _pair(seed=3, prologue=b"one")
    _, responder = _pair(seed=3, prologue=b"two")
    responder.read_message(initiator.write_message())  # message 1 is not authenticated
    with pytest.raises(HandshakeError, match="message 2 failed authentication") as info:
        initiator.read_message(responder.write_message())
    assert info.value.protocol == "/noise"


@pytest.mark.parametrize("position", [0, 31, 32, 60, 95])
def test_tampered_message_2_is_refused(position: int) -> None:
    initiator, responder = _pair(seed=4)
    responder.read_message(initiator.write_message())
    message = bytearray(responder.write_message(b"payload"))
    message[position] ^= 0x01
    with pytest.raises(HandshakeError):
        initiator.read_message(bytes(message))


def test_tampered_message_3_is_refused() -> None:
    initiator, responder = _pair(seed=5)
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    message = bytearray(initiator.write_message())
    message[-1] ^= 0x80
    with pytest.raises(HandshakeError, match="message 3"):
        responder.read_message(bytes(message))


def test_short_messages_are_refused_before_any_crypto() -> None:
    initiator, responder = _pair(seed=6)
    with pytest.raises(HandshakeError, match="shorter than the minimum 32"):
        responder.read_message(b"\x01" * 31)
    responder.read_message(initiator.write_message())
    with pytest.raises(HandshakeError, match="minimum 96"):
        initiator.read_message(responder.write_message()[:95])


def test_low_order_ephemeral_key_is_refused() -> None:
    _, responder = _pair(seed=7)
    responder.read_message(bytes(32))  # the all-zero point; the DH fails when it is used
    with pytest.raises(HandshakeError, match="invalid X25519 public key"):
        responder.write_message()


def test_calls_out_of_turn_are_local_errors() -> None:
    initiator, responder = _pair(seed=8)
    with pytest.raises(LocalProtocolError):
        responder.write_message()
    with pytest.raises(LocalProtocolError):
        initiator.read_message(b"\x00" * 32)
    with pytest.raises(LocalProtocolError):
        initiator.split()
    _complete(initiator, responder)
    with pytest.raises(LocalProtocolError):
        initiator.write_message()
    with pytest.raises(LocalProtocolError):
        responder.read_message(b"\x00" * 64)


def test_turns_and_indexes() -> None:
    initiator, responder = _pair(seed=9)
    assert initiator.is_my_turn
    assert not responder.is_my_turn
    assert initiator.min_message_size() == 32
    responder.read_message(initiator.write_message())
    assert responder.is_my_turn
    assert responder.min_message_size() == 96
    initiator.read_message(responder.write_message())
    assert initiator.min_message_size() == 64
    assert initiator.message_index == 2
    responder.read_message(initiator.write_message())
    assert not initiator.is_my_turn
    assert not responder.is_my_turn


def test_cipher_state_without_a_key_passes_data_through() -> None:
    state = CipherState()
    assert not state.has_key
    assert state.encrypt_with_ad(b"ad", b"plain") == b"plain"
    assert state.decrypt_with_ad(b"ad", b"plain") == b"plain"
    with pytest.raises(LocalProtocolError):
        CipherState(b"short")


def test_cipher_state_refuses_the_reserved_nonce() -> None:
    sender = CipherState(b"k" * 32, nonce=MAX_NONCE - 1)
    receiver = CipherState(b"k" * 32, nonce=MAX_NONCE - 1)
    last = sender.encrypt_with_ad(b"", b"last")
    assert receiver.decrypt_with_ad(b"", last) == b"last"
    assert sender.nonce == MAX_NONCE
    with pytest.raises(NonceExhaustedError):
        sender.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(NonceExhaustedError):
        receiver.decrypt_with_ad(b"", last)


def test_failed_decrypt_does_not_advance_the_nonce() -> None:
    sender = CipherState(b"k" * 32)
    receiver = CipherState(b"k" * 32)
    good = sender.encrypt_with_ad(b"", b"hello")
    with pytest.raises(InvalidTag):
        receiver.decrypt_with_ad(b"", good[:-1] + bytes([good[-1] ^ 1]))
    assert receiver.nonce == 0
    assert receiver.decrypt_with_ad(b"", good) == b"hello"
