"""noise-libp2p: the Noise XX security handshake and the encrypted stream after it.

* :func:`noise_handshake` runs the handshake over a trio stream and returns a
  :class:`NoiseStream` (``remote_peer``, ``early_muxer``, ...).
* The pure cores underneath: :class:`NoiseHandshake` (libp2p's handshake, one side),
  :class:`XXHandshakeState` (the Noise framework's XX pattern), :class:`SecureChannel`
  (transport frames), and the payload codec in :mod:`.payload`.
"""

from __future__ import annotations

from .channel import MAX_FRAME, MAX_PLAINTEXT, ChannelError, SecureChannel
from .handshake import MESSAGE_TYPES, NOISE_PROTOCOL_ID, HandshakeResult, NoiseHandshake
from .payload import HandshakePayload, select_muxer
from .stream import NoiseStream, NoiseTransportError, noise_handshake
from .xx import CipherState, NonceExhaustedError, XXHandshakeState

__all__ = [
    "MAX_FRAME",
    "MAX_PLAINTEXT",
    "MESSAGE_TYPES",
    "NOISE_PROTOCOL_ID",
    "ChannelError",
    "CipherState",
    "HandshakePayload",
    "HandshakeResult",
    "NoiseHandshake",
    "NoiseStream",
    "NoiseTransportError",
    "NonceExhaustedError",
    "SecureChannel",
    "XXHandshakeState",
    "noise_handshake",
    "select_muxer",
]
