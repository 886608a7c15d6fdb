"""crypto.proto: libp2p key encodings."""

from ..protobuf import Message, field

# KeyType enum values
RSA, ED25519, SECP256K1, ECDSA = 0, 1, 2, 3


class PublicKey(Message):
    Type: int = field(1, "enum", required=True)
    Data: bytes = field(2, "bytes", required=True)


class PrivateKey(Message):
    Type: int = field(1, "enum", required=True)
    Data: bytes = field(2, "bytes", required=True)
