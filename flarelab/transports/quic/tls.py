"""libp2p TLS (specs: tls/tls.md): the certificate we present and the checks on the peer's.

Pure: no I/O, no trio, and the time is passed in. Each connection gets a fresh self-signed
certificate on a fresh P-256 key; the node's host key signs that key, and the signature and
the host public key travel in the libp2p extension (OID 1.3.6.1.4.1.53594.1.1)::

    SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }

``publicKey`` is the host key as a libp2p ``PublicKey`` protobuf; ``signature`` signs
``b"libp2p-tls-handshake:" + <the certificate's SubjectPublicKeyInfo, DER>``. (The spec's
ASN.1 says BIT STRING; go-, rust- and js-libp2p all write OCTET STRINGs, and so do we.)

The peer's certificate must be alone (no chain), valid now, self-signed, carry exactly one
libp2p extension with a valid signature and no other critical extension we do not know
(as go-libp2p and rust-libp2p check). The peer id comes from the host key in it.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ...errors import HandshakeError, PeerIdMismatchError, RemoteProtocolError
from ...identity import PeerId, PrivateKey, PublicKey, public_key_from_protobuf

__all__ = [
    "ALPN",
    "LIBP2P_EXTENSION_OID",
    "MAX_EXTENSION_SIZE",
    "SIGNATURE_PREFIX",
    "TLS_PROTOCOL_ID",
    "CertificateError",
    "CredentialCache",
    "SignedKey",
    "TlsCredentials",
    "VerifiedPeer",
    "decode_signed_key",
    "encode_signed_key",
    "generate_credentials",
    "verify_peer_certificates",
]

#: the security protocol id libp2p uses for TLS (what traces and identify call it)
TLS_PROTOCOL_ID: Final = "/tls/1.0.0"
#: the ALPN token every libp2p QUIC connection negotiates
ALPN: Final = "libp2p"
LIBP2P_EXTENSION_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX: Final = b"libp2p-tls-handshake:"
#: the largest SignedKey we parse: an RSA-4096 key and signature fit with room to spare
MAX_EXTENSION_SIZE: Final = 4096
#: how far back a fresh certificate's NotBefore lies (clock skew between peers)
CLOCK_SKEW: Final = datetime.timedelta(hours=1)
VALIDITY: Final = datetime.timedelta(days=365 * 100)

_SEQUENCE: Final = 0x30
_OCTET_STRING: Final = 0x04


class CertificateError(HandshakeError):
    """The peer's TLS certificate does not prove a libp2p identity (the peer's fault)."""

    def __init__(self, message: str, *, peer: object = None) -> None:
        super().__init__(message, peer=peer, protocol=TLS_PROTOCOL_ID)


# ------------------------------------------------------------------ SignedKey (DER)


@dataclass(frozen=True, slots=True)
class SignedKey:
    """The libp2p extension's value: the host public key (protobuf) and its signature."""

    public_key: bytes
    signature: bytes


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _der(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _der_length(len(content)) + content


def encode_signed_key(signed: SignedKey) -> bytes:
    """Encode a SignedKey as DER."""
    return _der(
        _SEQUENCE, _der(_OCTET_STRING, signed.public_key) + _der(_OCTET_STRING, signed.signature)
    )


def _read_tlv(data: bytes, pos: int, tag: int, what: str) -> tuple[bytes, int]:
    """Read one DER element with ``tag`` at ``pos``; return (content, next position)."""
    if pos >= len(data):
        raise CertificateError(f"SignedKey ends before its {what}")
    if data[pos] != tag:
        raise CertificateError(f"SignedKey {what}: expected tag 0x{tag:02x}, got 0x{data[pos]:02x}")
    pos += 1
    if pos >= len(data):
        raise CertificateError(f"SignedKey {what} has no length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 2:  # indefinite lengths are not DER; 64 KiB is plenty
            raise CertificateError(f"SignedKey {what} has an unsupported length form")
        if pos + count > len(data):
            raise CertificateError(f"SignedKey {what} length is truncated")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
        if length < 0x80 or length.bit_length() <= 8 * (count - 1):
            raise CertificateError(f"SignedKey {what} length is not minimally encoded")
    end = pos + length
    if end > len(data):
        raise CertificateError(
            f"SignedKey {what} declares {length} bytes but {len(data) - pos} follow"
        )
    return data[pos:end], end


def decode_signed_key(data: bytes) -> SignedKey:
    """Parse the DER of a SignedKey; raise :class:`CertificateError` if it is not exactly one."""
    data = bytes(data)
    if len(data) > MAX_EXTENSION_SIZE:
        raise CertificateError(
            f"libp2p extension of {len(data)} bytes exceeds {MAX_EXTENSION_SIZE} bytes"
        )
    body, end = _read_tlv(data, 0, _SEQUENCE, "SEQUENCE")
    if end != len(data):
        raise CertificateError(f"{len(data) - end} bytes after the SignedKey SEQUENCE")
    public_key, pos = _read_tlv(body, 0, _OCTET_STRING, "publicKey")
    signature, pos = _read_tlv(body, pos, _OCTET_STRING, "signature")
    if pos != len(body):
        raise CertificateError(f"{len(body) - pos} bytes after the SignedKey signature")
    return SignedKey(public_key=public_key, signature=signature)


# ------------------------------------------------------------------ our certificate


@dataclass(frozen=True, slots=True)
class TlsCredentials:
    """A certificate and its private key, for one connection."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate_credentials(host_key: PrivateKey, *, now: datetime.datetime) -> TlsCredentials:
    """Make a fresh P-256 key and a self-signed certificate binding it to ``host_key``."""
    cert_key = ec.generate_private_key(ec.SECP256R1())
    spki = cert_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    extension = encode_signed_key(
        SignedKey(
            public_key=host_key.public_key.to_protobuf(),
            signature=host_key.sign(SIGNATURE_PREFIX + spki),
        )
    )
    # the subject is a random serial number, as go-libp2p writes it; no names, no SNI
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, str(secrets.randbits(62)))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(cert_key.public_key())
        .serial_number(secrets.randbits(62) + 1)
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, extension), critical=False)
        .sign(cert_key, hashes.SHA256())
    )
    return TlsCredentials(certificate=certificate, private_key=cert_key)


class CredentialCache:
    """Fresh credentials for every connection, one made ahead so a dial need not wait.

    :meth:`take` hands out the spare (or makes one at once if there is none) and
    :meth:`refill` makes the next spare; the driver calls it when it is idle. Nothing is
    ever handed out twice.
    """

    #: a spare older than this is thrown away (its NotBefore leaves an hour of skew)
    MAX_SPARE_AGE = datetime.timedelta(minutes=10)

    def __init__(
        self, host_key: PrivateKey, wall_clock: Callable[[], datetime.datetime]
    ) -> None:
        self.host_key = host_key
        self.wall_clock = wall_clock
        self._spare: tuple[datetime.datetime, TlsCredentials] | None = None

    @property
    def has_spare(self) -> bool:
        """Tell whether a spare is ready."""
        return self._spare is not None

    def take(self) -> TlsCredentials:
        """Return credentials no connection has had."""
        now = self.wall_clock()
        spare, self._spare = self._spare, None
        if spare is not None and now - spare[0] < self.MAX_SPARE_AGE:
            return spare[1]
        return generate_credentials(self.host_key, now=now)

    def refill(self) -> None:
        """Make the next spare if there is none."""
        if self._spare is None:
            now = self.wall_clock()
            self._spare = (now, generate_credentials(self.host_key, now=now))


# ------------------------------------------------------------------ the peer's certificate


@dataclass(frozen=True, slots=True)
class VerifiedPeer:
    """Who the peer proved to be."""

    peer_id: PeerId
    public_key: PublicKey


def verify_peer_certificates(
    certificates: Sequence[x509.Certificate],
    *,
    now: datetime.datetime,
    expected_peer: PeerId | None = None,
) -> VerifiedPeer:
    """Check the peer's certificate chain as libp2p TLS asks; return its identity.

    Raises :class:`CertificateError` for a certificate that proves nothing, and
    :class:`~flarelab.errors.PeerIdMismatchError` when it proves another peer than
    ``expected_peer``.
    """
    if len(certificates) != 1:
        raise CertificateError(
            f"expected exactly one certificate, got {len(certificates)}"
            if certificates
            else "the peer sent no certificate"
        )
    cert = certificates[0]
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
        )
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(f"certificate is not validly self-signed: {exc or type(exc)}")
    value = _libp2p_extension(cert)
    signed = decode_signed_key(value)
    try:
        host_key = public_key_from_protobuf(signed.public_key)
    except RemoteProtocolError as exc:
        raise CertificateError(f"libp2p extension holds an invalid host key: {exc.message}")
    try:
        spki = _spki(cert)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"certificate public key is unusable: {exc}")
    if not host_key.verify(SIGNATURE_PREFIX + spki, signed.signature):
        raise CertificateError("libp2p extension signature does not verify")
    peer_id = PeerId.from_public_key(host_key)
    if expected_peer is not None and peer_id != expected_peer:
        raise PeerIdMismatchError(
            f"dialled {expected_peer} but the certificate proves {peer_id}",
            expected=expected_peer,
            actual=peer_id,
            peer=peer_id,
            protocol=TLS_PROTOCOL_ID,
        )
    return VerifiedPeer(peer_id=peer_id, public_key=host_key)


def _libp2p_extension(cert: x509.Certificate) -> bytes:
    """The libp2p extension's raw value; refuse unknown critical extensions."""
    try:
        extensions = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CertificateError(f"certificate extensions are malformed: {exc}")
    found: bytes | None = None
    for ext in extensions:
        if ext.oid == LIBP2P_EXTENSION_OID:
            if not isinstance(ext.value, x509.UnrecognizedExtension):  # pragma: no cover
                raise CertificateError("libp2p extension could not be read")
            found = ext.value.value
        elif ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise CertificateError(f"certificate has an unknown critical extension {ext.oid}")
    if found is None:
        raise CertificateError("certificate has no libp2p public key extension")
    return found
