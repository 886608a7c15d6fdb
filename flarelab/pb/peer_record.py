"""peer_record.proto: RFC 0003 peer records."""

from ..protobuf import Message, field


class AddressInfo(Message):
    proto3 = True
    multiaddr: bytes = field(1, "bytes")


class PeerRecord(Message):
    proto3 = True
    peer_id: bytes = field(1, "bytes")
    seq: int = field(2, "uint64")
    addresses: list[AddressInfo] = field(3, "message", message=AddressInfo, repeated=True)
