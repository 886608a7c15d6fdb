"""crypto.proto: libp2p key encodings."""

from ..protobuf import Field, Message

# KeyType enum values
RSA, ED25519, SECP256K1, ECDSA = 0, 1, 2, 3


class PublicKey(Message):
    Type = Field(1, "enum", required=True)
    Data = Field(2, "bytes", required=True)


class PrivateKey(Message):
    Type = Field(1, "enum", required=True)
    Data = Field(2, "bytes", required=True)
