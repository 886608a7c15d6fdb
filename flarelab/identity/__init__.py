"""Identity: keys, peer ids, signed envelopes and peer records.

* :mod:`.keys` -- the four libp2p key types (Ed25519, secp256k1, ECDSA, RSA), their
  protobuf encodings, signing, verification and key files;
* :mod:`.peer_id` -- :class:`PeerId`, the multihash of a public key, in base58 and CID text;
* :mod:`.envelope` -- RFC 0002 signed envelopes (domain-separated signatures);
* :mod:`.peer_record` -- RFC 0003 peer records: a peer's addresses, signed by the peer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .envelope import MAX_ENVELOPE_SIZE, Envelope
from .errors import (
    InvalidEnvelopeError,
    InvalidKeyError,
    InvalidPeerIdError,
    InvalidPeerRecordError,
)
from .keys import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key,
    private_key_from_protobuf,
    public_key_from_protobuf,
    save_private_key,
)
from .peer_id import PeerId
from .peer_record import (
    LEGACY_PEER_RECORD_DOMAIN,
    LEGACY_PEER_RECORD_PAYLOAD_TYPE,
    MAX_PEER_RECORD_ADDRS,
    PEER_RECORD_DOMAIN,
    PEER_RECORD_PAYLOAD_TYPE,
    PeerRecord,
    new_seq,
)

__all__ = [
    "LEGACY_PEER_RECORD_DOMAIN",
    "LEGACY_PEER_RECORD_PAYLOAD_TYPE",
    "MAX_ENVELOPE_SIZE",
    "MAX_PEER_RECORD_ADDRS",
    "PEER_RECORD_DOMAIN",
    "PEER_RECORD_PAYLOAD_TYPE",
    "EcdsaPrivateKey",
    "EcdsaPublicKey",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "Envelope",
    "InvalidEnvelopeError",
    "InvalidKeyError",
    "InvalidPeerIdError",
    "InvalidPeerRecordError",
    "KeyType",
    "PeerId",
    "PeerRecord",
    "PrivateKey",
    "PublicKey",
    "RsaPrivateKey",
    "RsaPublicKey",
    "Secp256k1PrivateKey",
    "Secp256k1PublicKey",
    "generate_private_key",
    "load_private_key",
    "new_seq",
    "private_key_from_protobuf",
    "public_key_from_protobuf",
    "save_private_key",
]

if TYPE_CHECKING:
    from .ecdsa import EcdsaPrivateKey, EcdsaPublicKey, Secp256k1PrivateKey, Secp256k1PublicKey
    from .rsa import RsaPrivateKey, RsaPublicKey


def __getattr__(name: str) -> Any:
    # the ECDSA and RSA key classes load on first use (see flarelab.identity.keys)
    from . import keys

    return getattr(keys, name)
