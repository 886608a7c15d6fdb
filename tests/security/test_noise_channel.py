"""The Noise transport core (SecureChannel): framing, nonces, failures; fuzzed with hypothesis.

Pure tests, no I/O: two channels facing each other with matching keys.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError, RemoteProtocolError
from flarelab.security.noise.channel import MAX_FRAME, MAX_PLAINTEXT, ChannelError, SecureChannel
from flarelab.security.noise.xx import MAX_NONCE, CipherState, NonceExhaustedError

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def _pair(nonce: int = 0) -> tuple[SecureChannel, SecureChannel]:
    a = SecureChannel(CipherState(KEY_A, nonce), CipherState(KEY_B, nonce))
    b = SecureChannel(CipherState(KEY_B, nonce), CipherState(KEY_A, nonce))
    return a, b


def _frames(wire: bytes | bytearray) -> list[int]:
    """Return the ciphertext length of each frame on ``wire``."""
    sizes, pos = [], 0
    while pos < len(wire):
        (size,) = struct.unpack_from(">H", wire, pos)
        sizes.append(size)
        pos += 2 + size
    assert pos == len(wire)
    return sizes


def _drain(channel: SecureChannel) -> bytes:
    out = bytearray()
    while chunk := channel.read():
        out += chunk
    return bytes(out)


def test_wire_format_is_u16_length_then_chacha_with_counter_nonce() -> None:
    a, _ = _pair()
    wire = a.encrypt(b"hello")
    assert wire[:2] == (5 + 16).to_bytes(2, "big")
    aead = ChaCha20Poly1305(KEY_A)
    assert aead.decrypt(bytes(12), bytes(wire[2:]), b"") == b"hello"
    second = a.encrypt(b"again")
    nonce_1 = b"\x00" * 4 + (1).to_bytes(8, "little")
    assert aead.decrypt(nonce_1, bytes(second[2:]), None) == b"again"
    assert a.send_nonce == 2


@pytest.mark.parametrize(
    ("size", "frames"),
    [
        (1, [17]),
        (MAX_PLAINTEXT, [MAX_FRAME]),
        (MAX_PLAINTEXT + 1, [MAX_FRAME, 17]),
        (65536, [MAX_FRAME, 17 + 16]),
        (3 * MAX_PLAINTEXT + 5, [MAX_FRAME] * 3 + [21]),
    ],
)
def test_large_writes_become_full_frames_then_the_rest(size: int, frames: list[int]) -> None:
    a, b = _pair()
    data = bytes(i % 251 for i in range(size))
    wire = a.encrypt(data)
    assert _frames(wire) == frames
    b.receive_data(wire)
    assert _drain(b) == data
    assert b.receive_nonce == len(frames)


def test_empty_write_sends_nothing() -> None:
    a, _ = _pair()
    assert a.encrypt(b"") == b""
    assert a.send_nonce == 0


def test_empty_frames_are_accepted_and_carry_nothing() -> None:
    a, b = _pair()
    aead = ChaCha20Poly1305(KEY_A)
    empty = aead.encrypt(bytes(12), b"", None)
    b.receive_data(len(empty).to_bytes(2, "big") + empty)
    assert b.plaintext_available == 0
    assert b.read() == b""
    a._send_nonce = 1  # the empty frame used nonce 0
    b.receive_data(a.encrypt(b"x"))
    assert b.read() == b"x"


def test_byte_at_a_time_delivery() -> None:
    a, b = _pair()
    wire = a.encrypt(b"one") + a.encrypt(b"two" * 1000)
    got = bytearray()
    for i in range(len(wire)):
        b.receive_data(wire[i : i + 1])
        got += _drain(b)
    assert got == b"one" + b"two" * 1000
    assert b.partial_frame_bytes == 0


def test_read_respects_max_bytes_and_then_hands_out_the_rest() -> None:
    a, b = _pair()
    b.receive_data(a.encrypt(b"abcdefghij"))
    assert b.read(3) == b"abc"
    assert b.read(4) == b"defg"
    assert b.plaintext_available == 3
    # new frames while some plaintext is still unread are appended after it
    b.receive_data(a.encrypt(b"KLM"))
    assert b.read() == b"hijKLM"
    assert b.read() == b""


def test_forged_frame_breaks_the_receive_direction_for_good() -> None:
    a, b = _pair()
    good = a.encrypt(b"fine")
    bad = bytearray(a.encrypt(b"evil"))
    bad[-1] ^= 1
    with pytest.raises(ChannelError, match="nonce 1 failed authentication") as info:
        b.receive_data(good + bad + a.encrypt(b"later"))
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.protocol == "/noise"
    with pytest.raises(ChannelError):
        b.receive_data(a.encrypt(b"more"))
    with pytest.raises(ChannelError):
        b.receive_eof()


def test_replayed_or_reordered_frames_fail() -> None:
    a, b = _pair()
    first, second = a.encrypt(b"1"), a.encrypt(b"2")
    with pytest.raises(ChannelError):
        b.receive_data(second + first)
    a, b = _pair()
    first = a.encrypt(b"1")
    b.receive_data(first)
    with pytest.raises(ChannelError):
        b.receive_data(first)


def test_frame_shorter_than_the_tag_is_refused() -> None:
    _, b = _pair()
    with pytest.raises(ChannelError, match="shorter than its 16-byte tag"):
        b.receive_data(b"\x00\x0f" + b"\x00" * 15)


def test_eof_inside_a_frame_is_the_peers_fault() -> None:
    a, b = _pair()
    wire = a.encrypt(b"cut short")
    b.receive_data(wire[:-3])
    with pytest.raises(ChannelError, match="ended inside a frame"):
        b.receive_eof()
    _, clean = _pair()
    clean.receive_eof()  # nothing pending: a clean end


def test_send_nonce_exhaustion_is_refused_before_encrypting() -> None:
    a, b = _pair(nonce=MAX_NONCE - 1)  # 2**64 - 2: the last usable nonce
    b.receive_data(a.encrypt(b"last one"))
    assert b.read() == b"last one"
    assert a.send_nonce == MAX_NONCE
    with pytest.raises(NonceExhaustedError):
        a.encrypt(b"x")
    assert a.send_nonce == MAX_NONCE
    a2, _ = _pair(nonce=MAX_NONCE - 2)
    with pytest.raises(NonceExhaustedError):
        a2.encrypt(bytes(MAX_PLAINTEXT * 2 + 1))  # three frames; only two nonces left
    assert a2.send_nonce == MAX_NONCE - 2


def test_receive_nonce_exhaustion_is_the_peers_fault() -> None:
    a = SecureChannel(CipherState(KEY_A, MAX_NONCE - 1), CipherState(KEY_B))
    b = SecureChannel(CipherState(KEY_B), CipherState(KEY_A, MAX_NONCE - 1))
    b.receive_data(a.encrypt(b"x"))
    assert b.read() == b"x"
    assert b.receive_nonce == MAX_NONCE
    # a peer that keeps going would need the reserved nonce 2**64 - 1
    sealed = ChaCha20Poly1305(KEY_A).encrypt(b"\x00" * 4 + b"\xff" * 8, b"y", None)
    with pytest.raises(ChannelError, match="nonce space"):
        b.receive_data(len(sealed).to_bytes(2, "big") + sealed)


def test_unkeyed_cipher_states_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        SecureChannel(CipherState(), CipherState(KEY_A))


def test_memoryview_of_other_formats_is_accepted() -> None:
    a, b = _pair()
    data = memoryview(bytearray(b"\x01\x02\x03\x04" * 10)).cast("I")
    b.receive_data(a.encrypt(data))
    assert b.read() == b"\x01\x02\x03\x04" * 10


@given(
    writes=st.lists(st.binary(max_size=3000), max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=5000), max_size=40),
    reads=st.lists(st.integers(min_value=1, max_value=4000), max_size=40),
)
def test_roundtrip_whatever_the_chunking(
    writes: list[bytes], cuts: list[int], reads: list[int]
) -> None:
    a, b = _pair()
    wire = b"".join(bytes(a.encrypt(w)) for w in writes)
    got = bytearray()
    pos = 0
    read_sizes = iter(reads)
    for cut in [*cuts, len(wire)]:
        b.receive_data(wire[pos : pos + cut])
        pos += cut
        got += b.read(next(read_sizes, None))
        if pos >= len(wire):
            break
    got += _drain(b)
    assert got == b"".join(writes)
    b.receive_eof()


@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_garbage_raises_only_channel_errors(data: bytes, step: int) -> None:
    _, b = _pair()
    try:
        for i in range(0, len(data), step):
            b.receive_data(data[i : i + step])
        b.receive_eof()
    except ChannelError:
        return
    # Only input that holds no complete frame can get through without an error.
    assert b.plaintext_available == 0


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0), st.integers(0, 7))
def test_any_flipped_bit_is_detected(data: bytes, where: int, bit: int) -> None:
    a, b = _pair()
    wire = bytearray(a.encrypt(data))
    wire[2 + where % (len(wire) - 2)] ^= 1 << bit
    with pytest.raises(ChannelError):
        b.receive_data(wire)
