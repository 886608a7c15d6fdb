"""identify.proto: identify 1.0.0 and identify push."""

from ..protobuf import Field, Message


class Identify(Message):
    publicKey = Field(1, "bytes")
    listenAddrs = Field(2, "bytes", repeated=True)
    protocols = Field(3, "string", repeated=True)
    observedAddr = Field(4, "bytes")
    protocolVersion = Field(5, "string")
    agentVersion = Field(6, "string")
    signedPeerRecord = Field(8, "bytes")
