"""The transport phase of a Noise session as a pure object: plaintext in, frames out.

After the handshake each side holds two CipherStates; :class:`SecureChannel` uses them on
libp2p's wire format, ``u16be(len) || ciphertext`` with at most 65535 bytes of ciphertext
(65519 of plaintext plus the 16-byte Poly1305 tag), nonce = 4 zero bytes || u64le counter,
empty associated data.

It is the hot path of every TCP connection, so it is written for throughput:

* one ``ChaCha20Poly1305`` object per direction, encrypting and decrypting *into*
  preallocated buffers (``encrypt_into``/``decrypt_into``), never concatenating;
* :meth:`SecureChannel.encrypt` turns a large write into several full frames in one buffer;
* :meth:`SecureChannel.receive_data` decrypts every complete frame straight from the bytes
  it is given, into one buffer; a frame split across reads is completed with just the
  bytes it lacks, so at most one frame is ever buffered (no large buffer grown and
  trimmed on every read, which costs page faults);
* :meth:`SecureChannel.read` hands out the decrypted buffer itself when the caller takes it
  all, and slices with an offset (no ``del buf[:n]`` per read) otherwise.

No I/O, no trio. A forged or corrupt frame raises :class:`ChannelError` and the receive
direction stays failed.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ...errors import LocalProtocolError, RemoteProtocolError
from .xx import MAX_NONCE, TAGLEN, CipherState, NonceExhaustedError

__all__ = [
    "FRAME_HEADER",
    "MAX_FRAME",
    "MAX_PLAINTEXT",
    "ChannelError",
    "SecureChannel",
]

#: Bytes of the big-endian length prefix on every frame.
FRAME_HEADER: Final = 2
#: The largest Noise message: 65535 bytes of ciphertext (tag included).
MAX_FRAME: Final = 65535
#: The most plaintext one frame carries.
MAX_PLAINTEXT: Final = MAX_FRAME - TAGLEN

_NONCE = struct.Struct("<4xQ")
_U16 = struct.Struct(">H")
_NOISE = "/noise"


class ChannelError(RemoteProtocolError):
    """The peer sent a frame that does not decrypt, is malformed, or ends the stream early."""


def _frame_size(buf: bytearray | memoryview, pos: int) -> int:
    """Return the ciphertext size in the frame header at ``pos``; refuse impossible ones."""
    sealed = (buf[pos] << 8) | buf[pos + 1]
    if sealed < TAGLEN:
        raise ChannelError(
            f"frame of {sealed} bytes is shorter than its {TAGLEN}-byte tag", protocol=_NOISE
        )
    return sealed


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class SecureChannel:
    """Encrypt outgoing bytes into frames; decrypt incoming frames into plaintext."""

    __slots__ = (
        "_failed",
        "_partial",
        "_plain",
        "_plain_pos",
        "_recv_aead",
        "_recv_nonce",
        "_send_aead",
        "_send_nonce",
    )

    def __init__(self, send: CipherState, receive: CipherState) -> None:
        if send.key is None or receive.key is None:
            raise LocalProtocolError("a secure channel needs keyed CipherStates", protocol=_NOISE)
        self._send_aead = ChaCha20Poly1305(send.key)
        self._send_nonce = send.nonce
        self._recv_aead = ChaCha20Poly1305(receive.key)
        self._recv_nonce = receive.nonce
        self._partial = bytearray()  # ciphertext of a frame not yet complete
        self._plain = bytearray()  # decrypted, not yet read
        self._plain_pos = 0
        self._failed: ChannelError | None = None

    # ------------------------------------------------------------------ inspection
    @property
    def send_nonce(self) -> int:
        """The nonce the next outgoing frame will use."""
        return self._send_nonce

    @property
    def receive_nonce(self) -> int:
        """The nonce the next incoming frame must have been sealed with."""
        return self._recv_nonce

    @property
    def plaintext_available(self) -> int:
        """How many decrypted bytes :meth:`read` can return right now."""
        return len(self._plain) - self._plain_pos

    @property
    def partial_frame_bytes(self) -> int:
        """How many bytes of an incomplete incoming frame are buffered."""
        return len(self._partial)

    # ------------------------------------------------------------------ sending
    def encrypt(self, data: bytes | bytearray | memoryview) -> bytearray:
        """Return ``data`` as wire frames (full 65519-byte frames, then the rest).

        ``b""`` gives ``b""`` (no empty frame). Raises :class:`NonceExhaustedError` before
        encrypting anything if the frames would need the reserved nonce 2**64 - 1.
        """
        with _byte_view(data) as view:
            return self._encrypt(view)

    def _encrypt(self, view: memoryview) -> bytearray:
        total = len(view)
        if total == 0:
            return bytearray()
        frames = -(-total // MAX_PLAINTEXT)
        nonce = self._send_nonce
        if nonce + frames > MAX_NONCE:
            raise NonceExhaustedError(
                "send nonce space exhausted: the session must be closed", protocol=_NOISE
            )
        out = bytearray(total + frames * (FRAME_HEADER + TAGLEN))
        encrypt_into = self._send_aead.encrypt_into
        pack_nonce = _NONCE.pack
        pack_len = _U16.pack_into
        with memoryview(out) as dst:
            src_pos = 0
            dst_pos = 0
            while src_pos < total:
                chunk = min(MAX_PLAINTEXT, total - src_pos)
                sealed = chunk + TAGLEN
                pack_len(dst, dst_pos, sealed)
                dst_pos += FRAME_HEADER
                encrypt_into(
                    pack_nonce(nonce),
                    view[src_pos : src_pos + chunk],
                    None,
                    dst[dst_pos : dst_pos + sealed],
                )
                nonce += 1
                src_pos += chunk
                dst_pos += sealed
        self._send_nonce = nonce
        return out

    # ------------------------------------------------------------------ receiving
    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the wire and decrypt every frame they complete."""
        if self._failed is not None:
            raise self._failed
        if not data:
            return
        try:
            with _byte_view(data) as view:
                self._receive(view)
        except ChannelError as err:
            self._failed = err
            self._partial = bytearray()
            raise

    def _receive(self, view: memoryview) -> None:
        # Complete a pending frame with just the bytes it lacks, so the buffer of partial
        # frames never holds more than one frame (growing and trimming a large bytearray
        # costs page faults on every read); then decrypt straight from ``view``.
        partial = self._partial
        pos = 0
        if partial:
            if len(partial) < FRAME_HEADER:
                pos = FRAME_HEADER - len(partial)
                partial += view[:pos]
                if len(partial) < FRAME_HEADER:
                    return
            need = FRAME_HEADER + _frame_size(partial, 0) - len(partial)
            partial += view[pos : pos + need]
            pos += need
            if pos > len(view):
                return  # still incomplete
        frames: list[memoryview] = []
        end = len(view)
        while pos + FRAME_HEADER <= end:
            sealed = _frame_size(view, pos)
            if pos + FRAME_HEADER + sealed > end:
                break
            pos += FRAME_HEADER
            frames.append(view[pos : pos + sealed])
            pos += sealed
        if partial:
            with memoryview(partial) as head:
                frames.insert(0, head[FRAME_HEADER:])
                self._decrypt(frames)
                frames.clear()
            partial.clear()
        elif frames:
            self._decrypt(frames)
        if pos < end:
            partial += view[pos:]

    def receive_eof(self) -> None:
        """Note that the wire ended; :class:`ChannelError` if it ended inside a frame."""
        if self._failed is not None:
            raise self._failed
        if self._partial:
            self._failed = ChannelError(
                f"stream ended inside a frame ({len(self._partial)} bytes of it arrived)",
                protocol=_NOISE,
            )
            self._partial = bytearray()
            raise self._failed

    def _decrypt(self, frames: list[memoryview]) -> None:
        """Decrypt ``frames`` (ciphertexts, in order) into the plaintext buffer."""
        nonce = self._recv_nonce
        if nonce + len(frames) > MAX_NONCE:
            raise ChannelError("peer exhausted the nonce space", protocol=_NOISE)
        plain_total = sum(map(len, frames)) - TAGLEN * len(frames)
        if self._plain_pos >= len(self._plain):
            # The usual case: everything earlier was read, so decrypt into a fresh buffer
            # that read() can hand out whole.
            self._plain = bytearray(plain_total)
            self._plain_pos = 0
            dst_pos = 0
        else:
            if self._plain_pos:
                del self._plain[: self._plain_pos]
                self._plain_pos = 0
            dst_pos = len(self._plain)
            self._plain += bytes(plain_total)
        decrypt_into = self._recv_aead.decrypt_into
        pack_nonce = _NONCE.pack
        failed = False
        with memoryview(self._plain) as dst:
            try:
                for sealed in frames:
                    plain = len(sealed) - TAGLEN
                    decrypt_into(pack_nonce(nonce), sealed, None, dst[dst_pos : dst_pos + plain])
                    nonce += 1
                    dst_pos += plain
            except InvalidTag:
                failed = True
        self._recv_nonce = nonce
        if failed:
            del self._plain[dst_pos:]  # drop the space reserved for frames never decrypted
            raise ChannelError(
                f"frame with nonce {nonce} failed authentication (forged or corrupt)",
                protocol=_NOISE,
            )

    def read(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return up to ``max_bytes`` decrypted bytes (all of them if None); ``b""`` if none."""
        available = len(self._plain) - self._plain_pos
        if available <= 0:
            return b""
        if self._plain_pos == 0 and (max_bytes is None or max_bytes >= available):
            out = self._plain
            self._plain = bytearray()
            return out
        n = available if max_bytes is None else min(max_bytes, available)
        pos = self._plain_pos
        with memoryview(self._plain) as view:
            chunk = bytes(view[pos : pos + n])
        pos += n
        if pos >= len(self._plain):
            self._plain = bytearray()
            pos = 0
        self._plain_pos = pos
        return chunk
