"""noise.proto: the libp2p Noise handshake payload."""

from __future__ import annotations

from ..protobuf import Message, field


class NoiseExtensions(Message):
    webtransport_certhashes: list[bytes] = field(1, "bytes", repeated=True)
    stream_muxers: list[str] = field(2, "string", repeated=True)


class NoiseHandshakePayload(Message):
    identity_key: bytes | None = field(1, "bytes")
    identity_sig: bytes | None = field(2, "bytes")
    extensions: NoiseExtensions | None = field(4, "message", message=NoiseExtensions)
