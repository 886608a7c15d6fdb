"""libp2p TLS certificates: ours round-trip, the spec's test vectors parse, bad ones fail.

Pure: no sockets, no trio. The vectors are the four of libp2p/specs tls/tls.md.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import HandshakeError, PeerIdMismatchError
from flarelab.identity import (
    EcdsaPrivateKey,
    Ed25519PrivateKey,
    PeerId,
    PrivateKey,
    RsaPrivateKey,
    Secp256k1PrivateKey,
)
from flarelab.transports.quic.tls import (
    LIBP2P_EXTENSION_OID,
    MAX_EXTENSION_SIZE,
    SIGNATURE_PREFIX,
    TLS_PROTOCOL_ID,
    CertificateError,
    SignedKey,
    decode_signed_key,
    encode_signed_key,
    generate_credentials,
    verify_peer_certificates,
)

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)

# libp2p/specs tls/tls.md, "Test vectors" (valid 1975-01-01 to 4096-01-01)
SPEC_VECTORS = {
    "ed25519": (
        "308201ae30820156a0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13"
        "096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f3430"
        "3936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504"
        "051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c"
        "263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8"
        "173e55bd37e381569ea37c307a3078060a2b0601040183a25a0101046a3068042408011220a77f1d92fedb"
        "59dddaea5a1c4abd1ac2fbde7d7b879ed364501809923d7c11b90440d90d2769db992d5e6195dbb08e706b"
        "6651e024fda6cfb8846694a435519941cac215a8207792e42849cccc6cd8136c6e4bde92a58c5e08cfd420"
        "6eb5fe0bf909300a06082a8648ce3d0403020346003043021f50f6b6c52711a881778718238f650c9fb489"
        "43ae6ee6d28427dc6071ae55e702203625f116a7a454db9c56986c82a25682f7248ea1cb764d322ea983ed"
        "36a31b77",
        "12D3KooWM6CgA9iBFZmcYAHA6A2qvbAxqfkmrYiRQuz3XEsk4Ksv",
    ),
    "ecdsa": (
        "308201f63082019da0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13"
        "096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f3430"
        "3936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504"
        "051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c"
        "263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8"
        "173e55bd37e381569ea381c23081bf3081bc060a2b0601040183a25a01010481ad3081aa045f0803125b30"
        "59301306072a8648ce3d020106082a8648ce3d03010703420004bf30511f909414ebdd3242178fd290f093"
        "a551cf75c973155de0bb5a96fedf6cb5d52da7563e794b512f66e60c7f55ba8a3acf3dd72a801980d205e8"
        "a1ad29f2044730450220064ea8124774caf8f50e57f436aa62350ce652418c019df5d98a3ac666c9386a02"
        "2100aa59d704a931b5f72fb9222cb6cc51f954d04a4e2e5450f8805fe8918f71eaae300a06082a8648ce3d"
        "04030203470030440220799395b0b6c1e940a7e4484705f610ab51ed376f19ff9d7c16757cfbf61b8d4302"
        "206205c03fbb0f95205c779be86581d3e31c01871ad5d1f3435bcf375cb0e5088a",
        "QmfXbAwNjJLXfesgztEHe8HwgVDCMMpZ9Eax1HYq6hn9uE",
    ),
    "secp256k1": (
        "308201ba3082015fa0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13"
        "096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f3430"
        "3936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504"
        "051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c"
        "263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8"
        "173e55bd37e381569ea38184308181307f060a2b0601040183a25a01010471306f0425080212210206dc69"
        "68726765b820f050263ececf7f71e4955892776c0970542efd689d2382044630440220145e15a991961f0d"
        "08cd15425bb95ec93f6ffa03c5a385eedc34ecf464c7a8ab022026b3109b8a3f40ef833169777eb2aa337c"
        "fb6282f188de0666d1bcec2a4690dd300a06082a8648ce3d0403020349003046022100e1a217eeef9ec920"
        "4b3f774a08b70849646b6a1e6b8b27f93dc00ed58545d9fe022100b00dafa549d0f03547878338c7b15e75"
        "02888f6d45db387e5ae6b5d46899cef0",
        "16Uiu2HAkutTMoTzDw1tCvSRtu6YoixJwS46S1ZFxW8hSx9fWHiPs",
    ),
}
# "a mismatch between the Peer ID that it claims to authenticate vs the key that signed it"
SPEC_INVALID = (
    "308201f73082019da0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13"
    "096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f3430"
    "3936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504"
    "051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c"
    "263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8"
    "173e55bd37e381569ea381c23081bf3081bc060a2b0601040183a25a01010481ad3081aa045f0803125b30"
    "59301306072a8648ce3d020106082a8648ce3d03010703420004bf30511f909414ebdd3242178fd290f093"
    "a551cf75c973155de0bb5a96fedf6cb5d52da7563e794b512f66e60c7f55ba8a3acf3dd72a801980d205e8"
    "a1ad29f204473045022100bb6e03577b7cc7a3cd1558df0da2b117dfdcc0399bc2504ebe7de6f65cade728"
    "02206de96e2a5be9b6202adba24ee0362e490641ac45c240db71fe955f2c5cf8df6e300a06082a8648ce3d"
    "0403020348003045022100e847f267f43717358f850355bdcabbefb2cfbf8a3c043b203a14788a092fe8db"
    "022027c1d04a2d41fd6b57a7e8b3989e470325de4406e52e084e34a3fd56eef0d0df"
)

KEY_TYPES = {
    "ed25519": Ed25519PrivateKey,
    "secp256k1": Secp256k1PrivateKey,
    "ecdsa": EcdsaPrivateKey,
    "rsa": RsaPrivateKey,
}


def _cert(hex_der: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(bytes.fromhex(hex_der))


def _build(
    *,
    extension: bytes | None,
    host: PrivateKey | None = None,
    not_before: datetime.datetime = NOW - datetime.timedelta(hours=1),
    not_after: datetime.datetime = NOW + datetime.timedelta(days=1),
    extra: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    signer: ec.EllipticCurvePrivateKey | None = None,
    critical: bool = False,
) -> x509.Certificate:
    """A certificate made by hand, to break one rule at a time."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "1")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if extension is None and host is not None:
        from cryptography.hazmat.primitives import serialization

        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        extension = encode_signed_key(
            SignedKey(host.public_key.to_protobuf(), host.sign(SIGNATURE_PREFIX + spki))
        )
    if extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, extension), critical=critical
        )
    for ext, is_critical in extra:
        builder = builder.add_extension(ext, critical=is_critical)
    return builder.sign(signer or key, hashes.SHA256())


# ------------------------------------------------------------------ the spec's vectors


@pytest.mark.parametrize("name", sorted(SPEC_VECTORS))
def test_spec_vectors_verify_to_their_peer_id(name: str) -> None:
    hex_der, peer_id = SPEC_VECTORS[name]
    verified = verify_peer_certificates([_cert(hex_der)], now=NOW)
    assert str(verified.peer_id) == peer_id
    assert verified.peer_id.matches(verified.public_key)
    again = verify_peer_certificates(
        [_cert(hex_der)], now=NOW, expected_peer=PeerId.from_string(peer_id)
    )
    assert again.peer_id == verified.peer_id


def test_spec_invalid_vector_fails() -> None:
    with pytest.raises(CertificateError, match="signature does not verify") as info:
        verify_peer_certificates([_cert(SPEC_INVALID)], now=NOW)
    assert info.value.protocol == TLS_PROTOCOL_ID
    assert isinstance(info.value, HandshakeError)


# ------------------------------------------------------------------ our certificates


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_our_certificates_round_trip_for_every_key_type(kind: str) -> None:
    host = KEY_TYPES[kind].generate()
    creds = generate_credentials(host, now=NOW)
    peer = PeerId.from_public_key(host.public_key)
    verified = verify_peer_certificates([creds.certificate], now=NOW, expected_peer=peer)
    assert verified.peer_id == peer
    assert verified.public_key == host.public_key
    # fresh key and certificate every time, never the host key itself
    other = generate_credentials(host, now=NOW)
    assert other.certificate.public_key() != creds.certificate.public_key()
    assert isinstance(creds.certificate.public_key(), ec.EllipticCurvePublicKey)


def test_our_certificate_is_valid_now_with_skew_and_names_nobody() -> None:
    creds = generate_credentials(Ed25519PrivateKey.generate(), now=NOW)
    cert = creds.certificate
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc
    assert NOW - cert.not_valid_before_utc >= datetime.timedelta(minutes=30)
    assert cert.issuer == cert.subject
    assert not cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ext = cert.extensions.get_extension_for_oid(LIBP2P_EXTENSION_OID)
    assert not ext.critical


def test_wrong_expected_peer_is_a_peer_id_mismatch() -> None:
    host, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    creds = generate_credentials(host, now=NOW)
    expected = PeerId.from_public_key(other.public_key)
    with pytest.raises(PeerIdMismatchError) as info:
        verify_peer_certificates([creds.certificate], now=NOW, expected_peer=expected)
    assert info.value.expected == expected
    assert info.value.actual == PeerId.from_public_key(host.public_key)


# ------------------------------------------------------------------ what is refused


def test_no_certificate_or_a_chain_is_refused() -> None:
    host = Ed25519PrivateKey.generate()
    cert = generate_credentials(host, now=NOW).certificate
    with pytest.raises(CertificateError, match="no certificate"):
        verify_peer_certificates([], now=NOW)
    with pytest.raises(CertificateError, match="exactly one"):
        verify_peer_certificates([cert, cert], now=NOW)


def test_missing_extension_is_refused() -> None:
    with pytest.raises(CertificateError, match="no libp2p public key extension"):
        verify_peer_certificates([_build(extension=None)], now=NOW)


def test_signature_over_another_key_is_refused() -> None:
    host = Ed25519PrivateKey.generate()
    # the extension of one certificate moved into another: it signs the wrong key
    donor = generate_credentials(host, now=NOW).certificate
    value = donor.extensions.get_extension_for_oid(LIBP2P_EXTENSION_OID).value.value
    with pytest.raises(CertificateError, match="signature does not verify"):
        verify_peer_certificates([_build(extension=value)], now=NOW)


def test_tampered_signature_is_refused() -> None:
    host = Ed25519PrivateKey.generate()
    good = _build(extension=None, host=host)
    value = good.extensions.get_extension_for_oid(LIBP2P_EXTENSION_OID).value
    signed = decode_signed_key(value.value)  # type: ignore[attr-defined]
    bad_sig = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    forged = encode_signed_key(SignedKey(signed.public_key, bad_sig))
    with pytest.raises(CertificateError, match="signature"):
        verify_peer_certificates([_build(extension=forged)], now=NOW)


def test_invalid_host_key_is_refused() -> None:
    junk = encode_signed_key(SignedKey(b"\x08\x01\x12\x03abc", b"x" * 64))
    with pytest.raises(CertificateError, match="invalid host key"):
        verify_peer_certificates([_build(extension=junk)], now=NOW)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW + datetime.timedelta(minutes=1), NOW + datetime.timedelta(days=1)),  # not yet
        (NOW - datetime.timedelta(days=2), NOW - datetime.timedelta(days=1)),  # expired
    ],
)
def test_certificate_outside_its_validity_is_refused(
    not_before: datetime.datetime, not_after: datetime.datetime
) -> None:
    cert = _build(
        extension=None, host=Ed25519PrivateKey.generate(), not_before=not_before,
        not_after=not_after,
    )
    with pytest.raises(CertificateError, match="not valid now"):
        verify_peer_certificates([cert], now=NOW)


def test_certificate_not_self_signed_is_refused() -> None:
    cert = _build(
        extension=None, host=Ed25519PrivateKey.generate(),
        signer=ec.generate_private_key(ec.SECP256R1()),
    )
    with pytest.raises(CertificateError, match="self-signed"):
        verify_peer_certificates([cert], now=NOW)


def test_unknown_critical_extension_is_refused_unknown_plain_one_ignored() -> None:
    host = Ed25519PrivateKey.generate()
    other = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    ok = _build(extension=None, host=host, extra=[(other, False)])
    assert verify_peer_certificates([ok], now=NOW).public_key == host.public_key
    bad = _build(extension=None, host=host, extra=[(other, True)])
    with pytest.raises(CertificateError, match="unknown critical extension"):
        verify_peer_certificates([bad], now=NOW)
    # our own extension may be critical (the spec allows it)
    critical_ours = _build(extension=None, host=host, critical=True)
    assert verify_peer_certificates([critical_ours], now=NOW).public_key == host.public_key


# ------------------------------------------------------------------ the SignedKey codec


@given(st.binary(max_size=600), st.binary(max_size=600))
def test_signed_key_round_trips(public_key: bytes, signature: bytes) -> None:
    signed = SignedKey(public_key, signature)
    assert decode_signed_key(encode_signed_key(signed)) == signed


@given(st.binary(max_size=300))
def test_signed_key_parser_raises_only_certificate_errors(data: bytes) -> None:
    try:
        decoded = decode_signed_key(data)
    except CertificateError:
        return
    assert encode_signed_key(decoded) == data  # what parses is canonical DER


@given(st.binary(min_size=1, max_size=200), st.binary(max_size=200), st.data())
def test_signed_key_parser_rejects_every_truncation(
    public_key: bytes, signature: bytes, data: st.DataObject
) -> None:
    encoded = encode_signed_key(SignedKey(public_key, signature))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CertificateError):
        decode_signed_key(encoded[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x31\x04\x04\x00\x04\x00",  # SET, not SEQUENCE
        b"\x30\x04\x03\x00\x04\x00",  # BIT STRING publicKey
        b"\x30\x06\x04\x00\x04\x00\x04\x00",  # a third element
        b"\x30\x04\x04\x00\x04\x00\x00",  # trailing byte
        b"\x30\x81\x04\x04\x00\x04\x00",  # non-minimal length
        b"\x30\x80\x04\x00\x04\x00\x00\x00",  # indefinite length
        b"\x30\x84\x00\x00\x00\x04\x04\x00\x04\x00",  # 4-byte length
    ],
)
def test_signed_key_parser_is_strict(data: bytes) -> None:
    with pytest.raises(CertificateError):
        decode_signed_key(data)


def test_signed_key_size_is_bounded() -> None:
    huge = encode_signed_key(SignedKey(b"k" * MAX_EXTENSION_SIZE, b"s"))
    with pytest.raises(CertificateError, match="exceeds"):
        decode_signed_key(huge)
