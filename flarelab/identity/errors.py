"""Errors of the identity layer: malformed keys, peer ids and signed envelopes.

Keys, peer ids and envelopes mostly arrive from peers (a Noise handshake, an identify
message, a DHT record), so these errors are :class:`RemoteProtocolError` subclasses. Keys and
peer ids also come from local input (a key file, a peer id typed into a notebook), so
:class:`InvalidKeyError` and :class:`InvalidPeerIdError` are also :class:`ValueError`.
"""

from __future__ import annotations

from ..errors import RemoteProtocolError

__all__ = [
    "InvalidEnvelopeError",
    "InvalidKeyError",
    "InvalidPeerIdError",
    "InvalidPeerRecordError",
]


class InvalidKeyError(RemoteProtocolError, ValueError):
    """A key encoding is malformed, of an unknown type, too big or not a valid key."""


class InvalidPeerIdError(RemoteProtocolError, ValueError):
    """A peer id (bytes or text) is malformed or names an invalid key."""


class InvalidEnvelopeError(RemoteProtocolError):
    """A signed envelope is malformed, too big, or its signature does not verify."""


class InvalidPeerRecordError(InvalidEnvelopeError):
    """A peer record is malformed or not signed by the peer it names."""
