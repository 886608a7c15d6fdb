"""envelope.proto: RFC 0002 signed envelopes."""

from ..protobuf import Field, Message


class Envelope(Message):
    proto3 = True
    #: a crypto.PublicKey message, kept as its raw bytes so that the strict key parser in
    #: flarelab.identity (which insists on the canonical encoding) sees exactly what came
    public_key = Field(1, "bytes")
    payload_type = Field(2, "bytes")
    payload = Field(3, "bytes")
    signature = Field(5, "bytes")
