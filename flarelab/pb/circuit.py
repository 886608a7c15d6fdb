"""circuit.proto: circuit relay v2 hop and stop messages, and the reservation voucher."""

from __future__ import annotations

from ..protobuf import Message, field


class Peer(Message):
    id: bytes = field(1, "bytes", required=True)
    addrs: list[bytes] = field(2, "bytes", repeated=True)


class Reservation(Message):
    expire: int | None = field(1, "uint64")
    addrs: list[bytes] = field(2, "bytes", repeated=True)
    voucher: bytes | None = field(3, "bytes")


class Limit(Message):
    duration: int | None = field(1, "uint32")
    data: int | None = field(2, "uint64")


class HopMessage(Message):
    # Type: RESERVE = 0, CONNECT = 1, STATUS = 2
    type: int = field(1, "enum", required=True)
    peer: Peer | None = field(2, "message", message=Peer)
    reservation: Reservation | None = field(3, "message", message=Reservation)
    limit: Limit | None = field(4, "message", message=Limit)
    status: int | None = field(5, "enum")


class StopMessage(Message):
    # Type: CONNECT = 0, STATUS = 1
    type: int = field(1, "enum", required=True)
    peer: Peer | None = field(2, "message", message=Peer)
    limit: Limit | None = field(3, "message", message=Limit)
    status: int | None = field(4, "enum")


class ReservationVoucher(Message):
    relay: bytes = field(1, "bytes", required=True)
    peer: bytes = field(2, "bytes", required=True)
    expiration: int = field(3, "uint64", required=True)
