"""peer_record.proto: RFC 0003 peer records."""

from ..protobuf import Field, Message


class AddressInfo(Message):
    proto3 = True
    multiaddr = Field(1, "bytes")


class PeerRecord(Message):
    proto3 = True
    peer_id = Field(1, "bytes")
    seq = Field(2, "uint64")
    addresses = Field(3, "message", message=AddressInfo, repeated=True)
