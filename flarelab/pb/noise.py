"""noise.proto: the libp2p Noise handshake payload."""

from ..protobuf import Field, Message


class NoiseExtensions(Message):
    webtransport_certhashes = Field(1, "bytes", repeated=True)
    stream_muxers = Field(2, "string", repeated=True)


class NoiseHandshakePayload(Message):
    identity_key = Field(1, "bytes")
    identity_sig = Field(2, "bytes")
    extensions = Field(4, "message", message=NoiseExtensions)
