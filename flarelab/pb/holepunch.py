"""holepunch.proto: the DCUtR messages (CONNECT and SYNC)."""

from __future__ import annotations

from ..protobuf import Message, field

# HolePunch.Type enum values
CONNECT, SYNC = 100, 300


class HolePunch(Message):
    type: int = field(1, "enum", required=True)
    ObsAddrs: list[bytes] = field(2, "bytes", repeated=True)
