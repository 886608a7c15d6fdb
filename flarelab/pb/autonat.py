"""autonat.proto: AutoNAT v1 (the nested messages of ``Message`` are declared at top level)."""

from __future__ import annotations

from ..protobuf import Message as _Message
from ..protobuf import field

# Message.MessageType
DIAL, DIAL_RESPONSE = 0, 1
# Message.ResponseStatus
OK, E_DIAL_ERROR, E_DIAL_REFUSED, E_BAD_REQUEST, E_INTERNAL_ERROR = 0, 100, 101, 200, 300


class PeerInfo(_Message):
    id: bytes | None = field(1, "bytes")
    addrs: list[bytes] = field(2, "bytes", repeated=True)


class Dial(_Message):
    peer: PeerInfo | None = field(1, "message", message=PeerInfo)


class DialResponse(_Message):
    status: int | None = field(1, "enum")
    statusText: str | None = field(2, "string")
    addr: bytes | None = field(3, "bytes")


class Message(_Message):
    type: int | None = field(1, "enum")
    dial: Dial | None = field(2, "message", message=Dial)
    dialResponse: DialResponse | None = field(3, "message", message=DialResponse)

