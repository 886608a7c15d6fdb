"""Security handshakes that turn a raw connection into an authenticated, encrypted stream.

Noise (``/noise``) is here; TLS (``/tls/1.0.0``) may join it.
"""

from __future__ import annotations

from .noise import NOISE_PROTOCOL_ID, NoiseStream, noise_handshake

__all__ = ["NOISE_PROTOCOL_ID", "NoiseStream", "noise_handshake"]
