"""envelope.proto: RFC 0002 signed envelopes."""

from ..protobuf import Message, field


class Envelope(Message):
    proto3 = True
    #: a crypto.PublicKey message, kept as its raw bytes so that the strict key parser in
    #: flarelab.identity (which insists on the canonical encoding) sees exactly what came
    public_key: bytes = field(1, "bytes")
    payload_type: bytes = field(2, "bytes")
    payload: bytes = field(3, "bytes")
    signature: bytes = field(5, "bytes")
