from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LimitExceededError, LocalProtocolError, RemoteProtocolError
from flarelab.wire import (
    IncompleteError,
    PrefixedStream,
    StreamReader,
    decode_uvarint,
    encode_uvarint,
    length_prefixed,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
     (16384, b"\x80\x80\x01"), ((1 << 63) - 1, b"\xff" * 8 + b"\x7f")],
)
def test_uvarint_vectors(value: int, encoded: bytes) -> None:
    assert encode_uvarint(value) == encoded
    assert decode_uvarint(encoded) == (value, len(encoded))


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_uvarint_roundtrip(value: int) -> None:
    enc = encode_uvarint(value)
    assert decode_uvarint(enc + b"tail") == (value, len(enc))


@given(st.binary(max_size=16))
def test_uvarint_decoder_never_crashes(data: bytes) -> None:
    try:
        value, pos = decode_uvarint(data)
    except RemoteProtocolError:
        return
    assert encode_uvarint(value) == data[:pos]


def test_uvarint_rejects() -> None:
    with pytest.raises(RemoteProtocolError, match="minimally"):
        decode_uvarint(b"\x80\x00")
    with pytest.raises(RemoteProtocolError, match="longer than 9"):
        decode_uvarint(b"\xff" * 10)
    with pytest.raises(IncompleteError):
        decode_uvarint(b"\x80")
    with pytest.raises(LocalProtocolError):
        encode_uvarint(-1)
    with pytest.raises(LocalProtocolError):
        encode_uvarint(1 << 63)


async def test_reader_length_prefixed_and_leftover() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(length_prefixed(b"hello") + length_prefixed(b"") + b"rest")
    await a.send_eof()
    reader = StreamReader(b)
    assert await reader.read_length_prefixed(10) == b"hello"
    assert await reader.read_length_prefixed(10) == b""
    stream = PrefixedStream(b, reader.take_buffer())
    got = b""
    while chunk := await stream.receive_some(2):
        got += chunk
    assert got == b"rest"


async def test_reader_limits_and_truncation() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(encode_uvarint(1000) + b"x" * 10)
    reader = StreamReader(b)
    with pytest.raises(LimitExceededError, match="1000 bytes"):
        await reader.read_length_prefixed(999)
    a2, b2 = trio.testing.memory_stream_pair()
    await a2.send_all(encode_uvarint(5) + b"abc")
    await a2.send_eof()
    with pytest.raises(IncompleteError, match="3 of 5"):
        await StreamReader(b2).read_length_prefixed(100)
    a3, b3 = trio.testing.memory_stream_pair()
    await a3.send_all(b"\x80")
    await a3.send_eof()
    with pytest.raises(IncompleteError, match="inside a varint"):
        await StreamReader(b3).read_uvarint()


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=7))
def test_reader_fuzz(data: bytes, chunk: int) -> None:
    async def main() -> None:
        a, b = trio.testing.memory_stream_pair()
        await a.send_all(data)
        await a.send_eof()
        reader = StreamReader(b, chunk=chunk)
        out = []
        try:
            while not await reader.at_eof():
                out.append(await reader.read_length_prefixed(32))
        except RemoteProtocolError:
            return
        assert b"".join(length_prefixed(m) for m in out) == data

    trio.run(main)
