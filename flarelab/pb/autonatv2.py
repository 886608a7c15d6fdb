"""autonatv2.proto: AutoNAT v2 (proto3; the ``oneof msg`` of ``Message`` is four optional
message fields, and a codec refuses a message with more than one of them set)."""

from __future__ import annotations

from ..protobuf import Message as _Message
from ..protobuf import field

# DialStatus
UNUSED, E_DIAL_ERROR, E_DIAL_BACK_ERROR, DIAL_OK = 0, 100, 101, 200
# DialResponse.ResponseStatus
E_INTERNAL_ERROR, E_REQUEST_REJECTED, E_DIAL_REFUSED, RESPONSE_OK = 0, 100, 101, 200
# DialBackResponse.DialBackStatus
DIAL_BACK_OK = 0


class DialRequest(_Message):
    proto3 = True
    addrs: list[bytes] = field(1, "bytes", repeated=True)
    nonce: int = field(2, "fixed64")


class DialDataRequest(_Message):
    proto3 = True
    addrIdx: int = field(1, "uint32")
    numBytes: int = field(2, "uint64")


class DialResponse(_Message):
    proto3 = True
    status: int = field(1, "enum")
    addrIdx: int = field(2, "uint32")
    dialStatus: int = field(3, "enum")


class DialDataResponse(_Message):
    proto3 = True
    data: bytes = field(1, "bytes")


class Message(_Message):
    proto3 = True
    dialRequest: DialRequest | None = field(1, "message", message=DialRequest)
    dialResponse: DialResponse | None = field(2, "message", message=DialResponse)
    dialDataRequest: DialDataRequest | None = field(3, "message", message=DialDataRequest)
    dialDataResponse: DialDataResponse | None = field(4, "message", message=DialDataResponse)


class DialBack(_Message):
    proto3 = True
    nonce: int = field(1, "fixed64")


class DialBackResponse(_Message):
    proto3 = True
    status: int = field(1, "enum")
