"""identify.proto: identify 1.0.0 and identify push."""

from __future__ import annotations

from ..protobuf import Message, field


class Identify(Message):
    publicKey: bytes | None = field(1, "bytes")
    listenAddrs: list[bytes] = field(2, "bytes", repeated=True)
    protocols: list[str] = field(3, "string", repeated=True)
    observedAddr: bytes | None = field(4, "bytes")
    protocolVersion: str | None = field(5, "string")
    agentVersion: str | None = field(6, "string")
    signedPeerRecord: bytes | None = field(8, "bytes")
