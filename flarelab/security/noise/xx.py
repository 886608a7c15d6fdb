"""Noise_XX_25519_ChaChaPoly_SHA256, as the Noise Protocol Framework (rev 34) defines it.

A pure core: bytes in, bytes out, no I/O. It has the spec's three objects --

* :class:`CipherState` -- a ChaCha20-Poly1305 key and a 64-bit nonce counter;
* :class:`SymmetricState` -- the chaining key ``ck`` and handshake hash ``h``;
* :class:`XXHandshakeState` -- the XX message pattern::

      -> e
      <- e, ee, s, es
      -> s, se

and knows nothing of libp2p (payloads, identities, framing): that is
:mod:`flarelab.security.noise.handshake`. Keys may be injected (test vectors); by default
the ephemeral key is fresh for every handshake.

Every failure caused by the peer's bytes raises :class:`~flarelab.errors.HandshakeError`;
calling a method out of turn raises :class:`~flarelab.errors.LocalProtocolError`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ...errors import HandshakeError, LocalProtocolError

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_NONCE",
    "PROTOCOL_NAME",
    "TAGLEN",
    "CipherState",
    "NonceExhaustedError",
    "SymmetricState",
    "XXHandshakeState",
    "hkdf",
    "x25519_public_bytes",
]

#: The one Noise protocol libp2p speaks; exactly 32 bytes, so it *is* the initial ``h``.
PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
DHLEN: Final = 32
HASHLEN: Final = 32
TAGLEN: Final = 16
#: Nonce 2**64 - 1 is reserved by the spec; a CipherState that reaches it is spent.
MAX_NONCE: Final = (1 << 64) - 1

_NONCE = struct.Struct("<4xQ")  # 32 bits of zeros, then the counter as 64-bit little-endian
_NOISE = "/noise"

# The XX pattern: who sends each message, and its tokens.
_XX_MESSAGES: Final = (
    (True, ("e",)),
    (False, ("e", "ee", "s", "es")),
    (True, ("s", "se")),
)


class NonceExhaustedError(LocalProtocolError):
    """A CipherState used its last nonce (2**64 - 2); the session must end."""


def hkdf(chaining_key: bytes, input_key_material: bytes, num_outputs: int) -> tuple[bytes, ...]:
    """Return the Noise HKDF's 2 or 3 outputs (HMAC-SHA256 extract-then-expand)."""
    temp_key = hmac.digest(chaining_key, input_key_material, "sha256")
    out1 = hmac.digest(temp_key, b"\x01", "sha256")
    out2 = hmac.digest(temp_key, out1 + b"\x02", "sha256")
    if num_outputs == 2:
        return out1, out2
    out3 = hmac.digest(temp_key, out2 + b"\x03", "sha256")
    return out1, out2, out3


def x25519_public_bytes(private: X25519PrivateKey) -> bytes:
    """Return the 32-byte RFC 7748 encoding of ``private``'s public key."""
    return private.public_key().public_bytes_raw()


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # cryptography refuses low-order points (an all-zero shared secret); so do we.
        raise HandshakeError("peer sent an invalid X25519 public key", protocol=_NOISE) from None


class CipherState:
    """A key ``k`` (or none yet) and the nonce ``n`` that counts messages under it."""

    __slots__ = ("_aead", "key", "nonce")

    def __init__(self, key: bytes | None = None, nonce: int = 0) -> None:
        self.key: bytes | None = None
        self._aead: ChaCha20Poly1305 | None = None
        if key is not None:
            self.initialize_key(key)
        self.nonce = nonce

    def initialize_key(self, key: bytes) -> None:
        """Start using ``key`` with nonce 0."""
        if len(key) != 32:
            raise LocalProtocolError(f"a ChaChaPoly key is 32 bytes, not {len(key)}")
        self.key = bytes(key)
        self._aead = ChaCha20Poly1305(self.key)
        self.nonce = 0

    @property
    def has_key(self) -> bool:
        """True once a key is set (before that, payloads travel in the clear)."""
        return self._aead is not None

    def _next_nonce(self) -> bytes:
        n = self.nonce
        if n >= MAX_NONCE:
            raise NonceExhaustedError("nonce space exhausted: the session must be closed")
        self.nonce = n + 1
        return _NONCE.pack(n)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` with associated data ``ad`` (identity if no key yet)."""
        if self._aead is None:
            return bytes(plaintext)
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and authenticate ``ciphertext``; :class:`InvalidTag` if it was forged.

        The nonce advances only on success, as the spec requires.
        """
        if self._aead is None:
            return bytes(ciphertext)
        if self.nonce >= MAX_NONCE:
            raise NonceExhaustedError("nonce space exhausted: the session must be closed")
        plaintext = self._aead.decrypt(_NONCE.pack(self.nonce), ciphertext, ad)
        self.nonce += 1
        return plaintext


class SymmetricState:
    """The chaining key, the handshake hash and the CipherState of a handshake."""

    __slots__ = ("cipher", "ck", "h")

    def __init__(self, protocol_name: bytes = PROTOCOL_NAME) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = hashlib.sha256(protocol_name).digest()
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        """Fold a DH output into the chaining key and start a new cipher key."""
        self.ck, temp_k = hkdf(self.ck, input_key_material, 2)
        self.cipher.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """Fold ``data`` into the handshake hash."""
        self.h = hashlib.sha256(self.h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to the transcript, and hash the ciphertext."""
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """Decrypt ``ciphertext`` bound to the transcript; :class:`InvalidTag` if forged."""
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Derive the two transport CipherStates (initiator->responder, responder->initiator)."""
        k1, k2 = hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


class XXHandshakeState:
    """The XX handshake for one side: write and read the three messages in turn.

    ``static_key`` is our long-lived X25519 key (a fresh one if omitted); ``ephemeral_key``
    may be fixed for test vectors only. After the third message, :attr:`complete` is true
    and :meth:`split` yields ``(send, receive)`` CipherStates for this side.
    """

    __slots__ = (
        "_e",
        "_e_pub",
        "_index",
        "_s",
        "_s_pub",
        "_split",
        "_ss",
        "initiator",
        "remote_ephemeral",
        "remote_static",
    )

    def __init__(
        self,
        *,
        initiator: bool,
        static_key: X25519PrivateKey | None = None,
        ephemeral_key: X25519PrivateKey | None = None,
        prologue: bytes = b"",
    ) -> None:
        self.initiator = initiator
        self._s = static_key if static_key is not None else X25519PrivateKey.generate()
        self._s_pub = x25519_public_bytes(self._s)
        self._e = ephemeral_key
        self._e_pub = b"" if ephemeral_key is None else x25519_public_bytes(ephemeral_key)
        self.remote_ephemeral: bytes | None = None
        self.remote_static: bytes | None = None
        self._ss = SymmetricState(PROTOCOL_NAME)
        self._ss.mix_hash(prologue)
        self._index = 0
        self._split: tuple[CipherState, CipherState] | None = None

    # ------------------------------------------------------------------ inspection
    @property
    def local_static_public(self) -> bytes:
        """Our static X25519 public key (what the libp2p payload signs)."""
        return self._s_pub

    @property
    def message_index(self) -> int:
        """How many handshake messages were written or read so far (0..3)."""
        return self._index

    @property
    def complete(self) -> bool:
        """True after the third message."""
        return self._split is not None

    @property
    def is_my_turn(self) -> bool:
        """True if the next step is :meth:`write_message`, false if :meth:`read_message`."""
        return self._index < 3 and _XX_MESSAGES[self._index][0] == self.initiator

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash ``h`` (a unique channel-binding value once complete)."""
        return self._ss.h

    def min_message_size(self) -> int:
        """The smallest valid size of the next message with an empty payload."""
        _, tokens = _XX_MESSAGES[self._index]
        size = TAGLEN if self._index > 0 else 0  # the payload is encrypted after message 1
        for token in tokens:
            if token == "e":
                size += DHLEN
            elif token == "s":
                size += DHLEN + TAGLEN
        return size

    # ------------------------------------------------------------------ messages
    def _mix_dh(self, token: str) -> None:
        assert self._e is not None
        if token == "ee":
            assert self.remote_ephemeral is not None
            self._ss.mix_key(_dh(self._e, self.remote_ephemeral))
        elif token == "es":  # initiator's e with responder's s
            if self.initiator:
                assert self.remote_static is not None
                self._ss.mix_key(_dh(self._e, self.remote_static))
            else:
                assert self.remote_ephemeral is not None
                self._ss.mix_key(_dh(self._s, self.remote_ephemeral))
        elif token == "se":  # initiator's s with responder's e
            if self.initiator:
                assert self.remote_ephemeral is not None
                self._ss.mix_key(_dh(self._s, self.remote_ephemeral))
            else:
                assert self.remote_static is not None
                self._ss.mix_key(_dh(self._e, self.remote_static))

    def write_message(self, payload: bytes = b"") -> bytes:
        """Return the next handshake message, carrying ``payload`` (encrypted if keyed)."""
        if not self.is_my_turn:
            raise LocalProtocolError(
                f"cannot write handshake message {self._index + 1}: not our turn", protocol=_NOISE
            )
        _, tokens = _XX_MESSAGES[self._index]
        out = bytearray()
        for token in tokens:
            if token == "e":
                if self._e is None:
                    self._e = X25519PrivateKey.generate()
                    self._e_pub = x25519_public_bytes(self._e)
                out += self._e_pub
                self._ss.mix_hash(self._e_pub)
            elif token == "s":
                out += self._ss.encrypt_and_hash(self._s_pub)
            else:
                self._mix_dh(token)
        out += self._ss.encrypt_and_hash(payload)
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's next handshake message and return its decrypted payload."""
        if self._index >= 3 or self.is_my_turn:
            raise LocalProtocolError(
                f"cannot read handshake message {self._index + 1}: not the peer's turn",
                protocol=_NOISE,
            )
        number = self._index + 1
        if len(message) < self.min_message_size():
            raise HandshakeError(
                f"handshake message {number} is {len(message)} bytes, "
                f"shorter than the minimum {self.min_message_size()}",
                protocol=_NOISE,
            )
        _, tokens = _XX_MESSAGES[self._index]
        view = memoryview(message)
        pos = 0
        try:
            for token in tokens:
                if token == "e":
                    self.remote_ephemeral = bytes(view[pos : pos + DHLEN])
                    pos += DHLEN
                    self._ss.mix_hash(self.remote_ephemeral)
                elif token == "s":
                    size = DHLEN + TAGLEN if self._ss.cipher.has_key else DHLEN
                    self.remote_static = self._ss.decrypt_and_hash(bytes(view[pos : pos + size]))
                    pos += size
                else:
                    self._mix_dh(token)
            payload = self._ss.decrypt_and_hash(bytes(view[pos:]))
        except InvalidTag:
            raise HandshakeError(
                f"handshake message {number} failed authentication (wrong keys or tampered)",
                protocol=_NOISE,
            ) from None
        self._advance()
        return payload

    def _advance(self) -> None:
        self._index += 1
        if self._index == 3:
            self._split = self._ss.split()

    def split(self) -> tuple[CipherState, CipherState]:
        """Return ``(send, receive)`` transport CipherStates for this side."""
        if self._split is None:
            raise LocalProtocolError("the handshake is not complete", protocol=_NOISE)
        c1, c2 = self._split
        return (c1, c2) if self.initiator else (c2, c1)
