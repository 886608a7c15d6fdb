"""libp2p's Noise handshake for one side, as a pure object (no I/O, no trio, no tracing).

:class:`NoiseHandshake` drives :class:`~flarelab.security.noise.xx.XXHandshakeState` with
libp2p's rules (specs: noise/README.md, connections/inlined-muxer-negotiation.md)::

    initiator                                   responder
      msg1  e                         ->                         (exactly 32 bytes)
                                      <-   msg2  e, ee, s, es + responder payload
      msg3  s, se + initiator payload ->

* Message 1 must be exactly the 32-byte ephemeral key: go, rust and js send no payload,
  rust refuses one, and so do we.
* Each payload proves the sender's identity key signed its static X25519 key; the initiator
  checks the responder's before it reveals its own identity in message 3.
* ``expected_peer`` (either side) must match the authenticated key:
  :class:`~flarelab.errors.PeerIdMismatchError` otherwise.
* Early muxer negotiation (connections/inlined-muxer-negotiation.md): implementations
  disagree on whose preference wins when both send full lists -- the spec and current
  go-libp2p take the initiator's, js-libp2p takes the first entry of the *remote* list it
  supports (so a js initiator follows the responder's preference) -- and two full lists in
  different orders can leave the two ends on different muxers. So: as responder we offer
  our full list and pick the first of *our* list that the initiator listed (what a js
  initiator computes; with go, whose default lists only yamux, the rules agree); as
  initiator we send only the muxer we picked from the responder's list (the spec allows
  this), so every responder rule lands on it, or nothing if we share none (then the muxer is
  negotiated with multistream-select after the handshake). A js peer that shares none of
  our muxers is not refused here: it fails on its side, as js does.

Use it in turns: while not :attr:`complete`, :meth:`write_message` if :attr:`is_my_turn`,
else :meth:`read_message` with the next message (without its 2-byte length prefix).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ...errors import HandshakeError, LocalProtocolError, PeerIdMismatchError
from ...identity import PeerId, PrivateKey, PublicKey
from .payload import (
    HandshakePayload,
    decode_payload,
    encode_payload,
    select_muxer,
    sign_payload,
    validate_muxers,
    verify_payload,
)
from .xx import DHLEN, CipherState, XXHandshakeState

__all__ = [
    "MESSAGE_TYPES",
    "NOISE_PROTOCOL_ID",
    "HandshakeResult",
    "NoiseHandshake",
]

#: The multistream-select protocol id of noise-libp2p.
NOISE_PROTOCOL_ID: Final = "/noise"
#: The ``message.type`` of each handshake message in traces, by index.
MESSAGE_TYPES: Final = ("noise.msg1 e", "noise.msg2 e,ee,s,es", "noise.msg3 s,se")


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What a completed handshake established."""

    local_peer: PeerId
    remote_peer: PeerId
    remote_public_key: PublicKey
    remote_static: bytes  # the peer's static X25519 public key
    remote_muxers: tuple[str, ...]  # the muxers the peer listed, in its order
    early_muxer: str | None  # the muxer both sides agreed on, if both sent lists
    handshake_hash: bytes  # the Noise transcript hash: unique to this session
    send: CipherState
    receive: CipherState


class NoiseHandshake:
    """One side of libp2p's Noise XX handshake, without I/O."""

    __slots__ = (
        "_failed",
        "_local_key",
        "_muxers",
        "_muxers_sent",
        "_result",
        "_xx",
        "expected_peer",
        "is_initiator",
        "local_peer",
        "remote_muxers",
        "remote_payload",
        "remote_peer",
        "remote_public_key",
    )

    def __init__(
        self,
        local_key: PrivateKey,
        *,
        is_initiator: bool,
        expected_peer: PeerId | None = None,
        muxers: Sequence[str] = (),
        static_key: X25519PrivateKey | None = None,
        ephemeral_key: X25519PrivateKey | None = None,
    ) -> None:
        self._local_key = local_key
        self.is_initiator = is_initiator
        self.expected_peer = expected_peer
        self.local_peer = PeerId.from_public_key(local_key.public_key)
        self._muxers = validate_muxers(muxers)
        self._muxers_sent: tuple[str, ...] = ()
        # A fresh static key per handshake unless one is given (as go-libp2p does).
        self._xx = XXHandshakeState(
            initiator=is_initiator, static_key=static_key, ephemeral_key=ephemeral_key
        )
        self.remote_peer: PeerId | None = None
        self.remote_public_key: PublicKey | None = None
        self.remote_payload: HandshakePayload | None = None
        self.remote_muxers: tuple[str, ...] = ()
        self._result: HandshakeResult | None = None
        self._failed = False

    # ------------------------------------------------------------------ state
    @property
    def complete(self) -> bool:
        """True once all three messages are through and the peer is authenticated."""
        return self._result is not None

    @property
    def is_my_turn(self) -> bool:
        """True if the next step is :meth:`write_message`."""
        return self._xx.is_my_turn

    @property
    def message_index(self) -> int:
        """Messages handled so far (0..3); the next one is ``message_index + 1``."""
        return self._xx.message_index

    @property
    def next_message_type(self) -> str:
        """The trace name of the next message (``"noise.msg2 e,ee,s,es"``, ...)."""
        return MESSAGE_TYPES[min(self._xx.message_index, 2)]

    # ------------------------------------------------------------------ messages
    def _check_usable(self) -> None:
        if self._failed:
            raise LocalProtocolError(
                "the Noise handshake already failed", protocol=NOISE_PROTOCOL_ID
            )

    def write_message(self) -> bytes:
        """Return our next handshake message (unframed)."""
        self._check_usable()
        index = self._xx.message_index
        if index == 0:
            payload = b""
        else:
            self._muxers_sent = self._muxers_to_offer()
            signed = sign_payload(self._local_key, self._xx.local_static_public, self._muxers_sent)
            payload = encode_payload(signed)
        message = self._xx.write_message(payload)
        self._finish_if_complete()
        return message

    def read_message(self, message: bytes) -> None:
        """Process the peer's next handshake message (unframed).

        Raises :class:`~flarelab.errors.HandshakeError` (or its subclass
        :class:`~flarelab.errors.PeerIdMismatchError`) if the message is not acceptable;
        the handshake is then dead.
        """
        self._check_usable()
        index = self._xx.message_index
        if self._xx.is_my_turn:
            raise LocalProtocolError(
                f"cannot read handshake message {index + 1}: it is ours to write",
                protocol=NOISE_PROTOCOL_ID,
            )
        try:
            if index == 0 and len(message) != DHLEN:
                raise HandshakeError(
                    f"handshake message 1 must be exactly {DHLEN} bytes (an ephemeral key "
                    f"and no payload), got {len(message)}",
                    protocol=NOISE_PROTOCOL_ID,
                )
            payload = self._xx.read_message(message)
            if index > 0:
                self._authenticate(payload)
        except HandshakeError:
            self._failed = True
            raise
        self._finish_if_complete()

    def _muxers_to_offer(self) -> tuple[str, ...]:
        """Return the muxer list for our payload (see the module docstring)."""
        if not self.is_initiator:
            return self._muxers
        chosen = select_muxer(self._muxers, self.remote_muxers)
        return (chosen,) if chosen is not None else ()

    def _authenticate(self, raw_payload: bytes) -> None:
        payload = decode_payload(raw_payload)
        assert self._xx.remote_static is not None
        public_key = verify_payload(payload, self._xx.remote_static)
        peer = PeerId.from_public_key(public_key)
        expected = self.expected_peer
        if expected is not None and not expected.matches(public_key):
            raise PeerIdMismatchError(
                f"expected peer {expected}, but the peer authenticated as {peer}",
                expected=expected,
                actual=peer,
                peer=peer,
                protocol=NOISE_PROTOCOL_ID,
            )
        self.remote_payload = payload
        self.remote_public_key = public_key
        self.remote_peer = peer
        self.remote_muxers = payload.stream_muxers

    def _finish_if_complete(self) -> None:
        if not self._xx.complete:
            return
        assert self.remote_peer is not None
        assert self.remote_public_key is not None
        assert self._xx.remote_static is not None
        # initiator: our single pick, if the responder listed it; responder: the first of
        # our list that the initiator listed (js-libp2p's rule, see the module docstring)
        early = select_muxer(self._muxers_sent, self.remote_muxers)
        send, receive = self._xx.split()
        self._result = HandshakeResult(
            local_peer=self.local_peer,
            remote_peer=self.remote_peer,
            remote_public_key=self.remote_public_key,
            remote_static=self._xx.remote_static,
            remote_muxers=self.remote_muxers,
            early_muxer=early,
            handshake_hash=self._xx.handshake_hash,
            send=send,
            receive=receive,
        )

    def result(self) -> HandshakeResult:
        """Return what the handshake established; only once :attr:`complete`."""
        if self._result is None:
            raise LocalProtocolError(
                "the Noise handshake is not complete", protocol=NOISE_PROTOCOL_ID
            )
        return self._result
