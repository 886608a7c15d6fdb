"""Wire codecs shared by every protocol: unsigned varints and length-prefixed messages.

libp2p frames most messages as ``uvarint(len) || bytes`` (multiformats unsigned-varint:
little-endian base-128, at most 9 bytes, minimal encoding). This module has

* pure codecs: :func:`encode_uvarint`, :func:`decode_uvarint`, :func:`length_prefixed`;
* :class:`StreamReader`, a buffered reader over a trio receive stream that reads varints,
  exact byte counts and length-prefixed messages, with a hard size limit on every read;
* :class:`PrefixedStream`, a stream that first replays bytes a reader buffered too early
  (multistream-select can read past its last message), then delegates to the real stream.
"""

from __future__ import annotations

import trio

from .errors import LimitExceededError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_UVARINT_BYTES",
    "IncompleteError",
    "PrefixedStream",
    "StreamReader",
    "decode_uvarint",
    "encode_uvarint",
    "length_prefixed",
    "read_length_prefixed",
    "with_leftover",
    "write_length_prefixed",
]

#: The multiformats unsigned-varint spec caps varints at 9 bytes (63 bits of value).
MAX_UVARINT_BYTES = 9
_MAX_UVARINT = (1 << 63) - 1


class IncompleteError(RemoteProtocolError):
    """The stream ended in the middle of a varint or message."""


def encode_uvarint(value: int) -> bytes:
    """Encode a non-negative integer as a minimal unsigned varint."""
    if value < 0 or value > _MAX_UVARINT:
        raise LocalProtocolError(f"uvarint out of range: {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a varint at ``data[pos:]``; return ``(value, position after it)``.

    Raises :class:`IncompleteError` if the data ends inside the varint and
    :class:`RemoteProtocolError` if it is longer than 9 bytes or not minimally encoded.
    """
    value = 0
    shift = 0
    end = len(data)
    for i in range(MAX_UVARINT_BYTES):
        if pos + i >= end:
            raise IncompleteError("truncated varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i > 0:
                raise RemoteProtocolError("varint is not minimally encoded")
            return value, pos + i + 1
        shift += 7
    raise RemoteProtocolError(f"varint longer than {MAX_UVARINT_BYTES} bytes")


def length_prefixed(payload: bytes | bytearray | memoryview) -> bytes:
    """Return ``uvarint(len(payload)) || payload``."""
    return encode_uvarint(len(payload)) + bytes(payload)


class StreamReader:
    """A buffered reader over a :class:`trio.abc.ReceiveStream`.

    Every read that trusts a length from the peer takes a ``max_size``; exceeding it raises
    :class:`LimitExceededError` before any of the oversized body is buffered.
    """

    __slots__ = ("_buf", "_chunk", "stream")

    def __init__(self, stream: trio.abc.ReceiveStream, *, chunk: int = 65536) -> None:
        self.stream = stream
        self._buf = bytearray()
        self._chunk = chunk

    @property
    def buffered(self) -> int:
        """How many bytes are buffered and not yet consumed."""
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Hand over (and forget) whatever was read from the stream but not consumed."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(self._chunk)
        if not data:
            return False
        self._buf += data
        return True

    async def read_exactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; :class:`IncompleteError` if the stream ends first."""
        while len(self._buf) < n:
            if not await self._fill():
                raise IncompleteError(f"stream ended after {len(self._buf)} of {n} bytes")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def read_uvarint(self) -> int:
        """Read one unsigned varint."""
        while True:
            try:
                value, pos = decode_uvarint(self._buf)
            except IncompleteError:
                if len(self._buf) >= MAX_UVARINT_BYTES:
                    raise
                if not await self._fill():
                    if self._buf:
                        raise IncompleteError("stream ended inside a varint") from None
                    raise IncompleteError("stream ended before a varint") from None
                continue
            del self._buf[:pos]
            return value

    async def read_length_prefixed(self, max_size: int) -> bytes:
        """Read ``uvarint(len) || bytes``; refuse lengths over ``max_size``."""
        length = await self.read_uvarint()
        if length > max_size:
            raise LimitExceededError(f"message of {length} bytes exceeds the limit of {max_size}")
        return await self.read_exactly(length)

    async def at_eof(self) -> bool:
        """True if nothing is buffered and the stream has ended (reads once if needed)."""
        if self._buf:
            return False
        return not await self._fill()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return buffered bytes first, then read from the stream (``b""`` at EOF)."""
        if self._buf:
            if max_bytes is None or max_bytes >= len(self._buf):
                return self.take_buffer()
            data = bytes(self._buf[:max_bytes])
            del self._buf[:max_bytes]
            return data
        return bytes(await self.stream.receive_some(max_bytes))


async def read_length_prefixed(stream: trio.abc.ReceiveStream, max_size: int) -> bytes:
    """Read one length-prefixed message from an unbuffered stream that carries just that.

    Use this only when the stream carries no data after the message, or when over-reading
    is impossible; otherwise keep a :class:`StreamReader`.
    """
    return await StreamReader(stream).read_length_prefixed(max_size)


async def write_length_prefixed(stream: trio.abc.SendStream, payload: bytes) -> None:
    """Write ``uvarint(len) || payload`` in one send."""
    await stream.send_all(length_prefixed(payload))


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A stream that yields ``prefix`` first, then whatever ``stream`` yields.

    Everything else (sending, closing) goes straight to the wrapped stream. Attribute
    lookups that this class does not answer are forwarded too, so a wrapped secure or
    muxed stream keeps its ``remote_peer`` and friends.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = bytearray(prefix)

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            if max_bytes is None or max_bytes >= len(self._prefix):
                data = bytes(self._prefix)
                self._prefix.clear()
                return data
            data = bytes(self._prefix[:max_bytes])
            del self._prefix[:max_bytes]
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is None:
            raise LocalProtocolError("the wrapped stream cannot half-close")
        await send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


def with_leftover(stream: trio.abc.Stream, leftover: bytes) -> trio.abc.Stream:
    """Return ``stream`` itself, or a :class:`PrefixedStream` if ``leftover`` is non-empty."""
    return PrefixedStream(stream, leftover) if leftover else stream
