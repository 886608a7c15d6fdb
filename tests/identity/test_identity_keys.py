"""Keys: the spec's test vectors, go-libp2p's fixtures, signing, and strict parsing.

Vectors come from files beside this module: ``data/peer_ids_key_vectors.json`` (the table in
libp2p/specs peer-ids/peer-ids.md) and ``data/go_crypto_fixtures.json`` (go-libp2p's
core/crypto/test_data: keys and a signature of "Libp2p is the _best_!" for each type).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given
from hypothesis import strategies as st
from reference_pb import pb2

from flarelab.errors import LocalProtocolError, RemoteProtocolError
from flarelab.identity import (
    EcdsaPrivateKey,
    EcdsaPublicKey,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    InvalidKeyError,
    KeyType,
    PeerId,
    PrivateKey,
    PublicKey,
    RsaPrivateKey,
    RsaPublicKey,
    Secp256k1PrivateKey,
    Secp256k1PublicKey,
    generate_private_key,
    load_private_key,
    private_key_from_protobuf,
    public_key_from_protobuf,
    save_private_key,
)
from flarelab.identity.keys import MAX_PRIVATE_KEY_SIZE, MAX_PUBLIC_KEY_SIZE
from flarelab.wire import encode_uvarint

crypto_pb2 = pb2("crypto")

DATA = Path(__file__).parent / "data"
SPEC = json.loads((DATA / "peer_ids_key_vectors.json").read_text())["vectors"]
GO = json.loads((DATA / "go_crypto_fixtures.json").read_text())
GO_MESSAGE = GO["message"].encode()
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

SPEC_TYPES = {
    "ed25519": (KeyType.ED25519, Ed25519PrivateKey, Ed25519PublicKey),
    "secp256k1": (KeyType.SECP256K1, Secp256k1PrivateKey, Secp256k1PublicKey),
    "ecdsa": (KeyType.ECDSA, EcdsaPrivateKey, EcdsaPublicKey),
    "rsa": (KeyType.RSA, RsaPrivateKey, RsaPublicKey),
}


def key_protobuf(key_type: int, data: bytes) -> bytes:
    """Encode ``PublicKey``/``PrivateKey {Type, Data}`` by hand, canonically."""
    return b"\x08" + encode_uvarint(key_type) + b"\x12" + encode_uvarint(len(data)) + data


@pytest.fixture(scope="module")
def keys() -> dict[KeyType, PrivateKey]:
    """One generated private key of each type (RSA generation is the slow one)."""
    return {kt: generate_private_key(kt) for kt in KeyType}


# ------------------------------------------------------------------ vectors


@pytest.mark.parametrize("name", list(SPEC_TYPES))
def test_spec_vectors_parse_and_round_trip(name: str) -> None:
    key_type, private_cls, public_cls = SPEC_TYPES[name]
    priv_bytes = bytes.fromhex(SPEC[f"{name}_private_key"])
    pub_bytes = bytes.fromhex(SPEC[f"{name}_public_key"])
    priv = private_key_from_protobuf(priv_bytes)
    pub = public_key_from_protobuf(pub_bytes)
    assert type(priv) is private_cls
    assert type(pub) is public_cls
    assert priv.key_type == pub.key_type == key_type
    # "Implementations SHOULD check that they can produce the public key from the private key."
    assert priv.public_key == pub
    assert priv.public_key.to_protobuf() == pub_bytes
    assert pub.to_protobuf() == pub_bytes
    assert priv.to_protobuf() == priv_bytes
    assert pub_bytes.endswith(pub.raw)
    assert private_cls.from_raw(priv.raw).public_key == pub
    assert public_cls.from_raw(pub.raw) == pub


@pytest.mark.parametrize("name", ["rsa", "secp256k1", "ecdsa"])
def test_go_fixtures_verify_and_reproduce(name: str) -> None:
    fixture = GO["fixtures"][name]
    priv = private_key_from_protobuf(bytes.fromhex(fixture["priv"]))
    pub = public_key_from_protobuf(bytes.fromhex(fixture["pub"]))
    signature = bytes.fromhex(fixture["sig"])
    assert priv.public_key == pub
    assert priv.to_protobuf().hex() == fixture["priv"]
    assert pub.verify(GO_MESSAGE, signature)
    assert not pub.verify(GO_MESSAGE + b"!", signature)
    ours = priv.sign(GO_MESSAGE)
    assert pub.verify(GO_MESSAGE, ours)
    if name in ("rsa", "secp256k1"):
        # PKCS#1 v1.5 is deterministic, and go signs secp256k1 with RFC 6979 and low S: so do
        # we, byte for byte (ECDSA P-256 in go uses a random nonce).
        assert ours == signature


# ------------------------------------------------------------------ signing


@pytest.mark.parametrize("key_type", list(KeyType))
def test_sign_and_verify(keys: dict[KeyType, PrivateKey], key_type: KeyType) -> None:
    priv = keys[key_type]
    pub = priv.public_key
    signature = priv.sign(b"flarelab")
    assert pub.verify(b"flarelab", signature)
    assert not pub.verify(b"flarelaB", signature)
    assert not pub.verify(b"flarelab", signature[:-1])
    assert not pub.verify(b"flarelab", signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not pub.verify(b"flarelab", b"")
    assert not pub.verify(b"flarelab", b"\x30\x06\x02\x01\x01\x02\x01\x01")
    # the key survives its own encodings
    assert public_key_from_protobuf(pub.to_protobuf()) == pub
    assert private_key_from_protobuf(priv.to_protobuf()) == priv
    assert private_key_from_protobuf(priv.to_protobuf()).sign(b"x") is not None


def test_signatures_do_not_verify_under_other_keys(keys: dict[KeyType, PrivateKey]) -> None:
    others = {kt.name: k for kt, k in keys.items()}
    others["ED25519-2"] = Ed25519PrivateKey.generate()
    for signer_name, signer in others.items():
        signature = signer.sign(b"message")
        for verifier_name, verifier in others.items():
            expected = signer_name == verifier_name
            assert verifier.public_key.verify(b"message", signature) is expected


def test_ed25519_seed_is_deterministic() -> None:
    seed = bytes(range(32))
    a, b = Ed25519PrivateKey.from_seed(seed), Ed25519PrivateKey.from_seed(seed)
    assert a == b
    assert a.public_key.to_protobuf() == b.public_key.to_protobuf()
    assert a.sign(b"x") == b.sign(b"x")  # Ed25519 signatures are deterministic
    assert a.raw[:32] == seed
    assert a.raw[32:] == a.public_key.raw
    assert Ed25519PrivateKey.from_seed(bytes(32)) != a
    with pytest.raises(LocalProtocolError):
        Ed25519PrivateKey.from_seed(b"short")


def test_ed25519_private_key_forms() -> None:
    key = Ed25519PrivateKey.from_seed(b"\x07" * 32)
    seed, public = key.raw[:32], key.raw[32:]
    assert Ed25519PrivateKey.from_raw(seed) == key  # bare seed
    assert Ed25519PrivateKey.from_raw(seed + public + public) == key  # legacy 96 bytes
    with pytest.raises(InvalidKeyError, match="two different"):
        Ed25519PrivateKey.from_raw(seed + public + bytes(32))
    other = Ed25519PrivateKey.generate().public_key.raw
    with pytest.raises(InvalidKeyError, match="does not match"):
        Ed25519PrivateKey.from_raw(seed + other)
    with pytest.raises(InvalidKeyError):
        Ed25519PrivateKey.from_raw(seed[:31])


def test_secp256k1_signatures_are_low_s_and_high_s_still_verifies() -> None:
    key = Secp256k1PrivateKey.generate()
    for i in range(32):
        r, s = decode_dss_signature(key.sign(bytes([i])))
        assert s <= SECP256K1_ORDER // 2
    r, s = decode_dss_signature(key.sign(b"m"))
    high = encode_dss_signature(r, SECP256K1_ORDER - s)
    assert key.public_key.verify(b"m", high)  # accepted, as go-libp2p accepts it


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_ecdsa_signatures_on_every_curve_are_low_s(curve: ec.EllipticCurve) -> None:
    raw_key = ec.generate_private_key(curve)
    sec1 = raw_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    key = EcdsaPrivateKey.from_raw(sec1)
    order = ORDERS[curve.name]
    for i in range(24):  # a wrong group order would break about half of these
        signature = key.sign(bytes([i]))
        assert key.public_key.verify(bytes([i]), signature)
        assert decode_dss_signature(signature)[1] <= order // 2


ORDERS = {  # group orders in decimal, as FIPS 186-4 appendix D prints them
    "secp256r1": int(
        "115792089210356248762697446949407573529996955224135760342422259061068512044369"
    ),
    "secp384r1": int(
        "394020061963944792122790401001436138050797392704654466679469052796276593991132"
        "63569398956308152294913554433653942643"
    ),
    "secp521r1": int(
        "686479766013060971498190079908139321726943530014330540939446345918554318339765"
        "539424505774633321719753296399637136332111386476861244038034037280889270700544"
        "9"
    ),
}


def test_ecdsa_accepts_p384_from_peers() -> None:
    raw_key = ec.generate_private_key(ec.SECP384R1())
    spki = raw_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub = public_key_from_protobuf(key_protobuf(KeyType.ECDSA, spki))
    signature = raw_key.sign(b"m", ec.ECDSA(hashes.SHA256()))  # libp2p hashes with SHA-256
    assert pub.verify(b"m", signature)
    sec1 = raw_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert EcdsaPrivateKey.from_raw(sec1).public_key == pub


def test_private_key_repr_shows_no_secret() -> None:
    key = Ed25519PrivateKey.from_seed(b"\xab" * 32)
    assert "abab" not in repr(key)
    peer = PeerId.from_public_key(key.public_key).short()
    assert repr(key) == f"Ed25519PrivateKey(public=Ed25519PublicKey(peer={peer}))"


def test_public_keys_compare_and_hash_by_encoding(keys: dict[KeyType, PrivateKey]) -> None:
    pubs = [k.public_key for k in keys.values()]
    copies = [public_key_from_protobuf(p.to_protobuf()) for p in pubs]
    assert pubs == copies
    assert len(set(pubs) | set(copies)) == len(pubs)
    assert pubs[0] != pubs[1]
    assert pubs[0] != pubs[0].to_protobuf()


def test_generate_each_type() -> None:
    for key_type in (KeyType.ED25519, KeyType.SECP256K1, KeyType.ECDSA):
        key = generate_private_key(key_type)
        assert key.key_type == key_type
        assert isinstance(key.public_key, PublicKey)
    with pytest.raises(LocalProtocolError):
        RsaPrivateKey.generate(bits=1024)


# ------------------------------------------------------------------ strict parsing


@pytest.mark.parametrize("name", list(SPEC_TYPES))
def test_key_framing_agrees_with_protobuf(name: str) -> None:
    pub = public_key_from_protobuf(bytes.fromhex(SPEC[f"{name}_public_key"]))
    msg = crypto_pb2.PublicKey()
    msg.ParseFromString(pub.to_protobuf())
    assert (msg.Type, msg.Data) == (pub.key_type, pub.raw)
    again = crypto_pb2.PublicKey(Type=msg.Type, Data=msg.Data)
    assert again.SerializeToString(deterministic=True) == pub.to_protobuf()


ED_PUB = bytes.fromhex(SPEC["ed25519_public_key"])
ED_RAW = ED_PUB[4:]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "does not start with its Type"),
        (key_protobuf(4, ED_RAW), "unknown key type"),
        (key_protobuf(1, ED_RAW[:31]), "32 bytes"),
        (key_protobuf(1, ED_RAW + b"\0"), "32 bytes"),
        (b"\x08\x01", "no Data field"),
        (b"\x12\x20" + ED_RAW + b"\x08\x01", "does not start with its Type"),
        (ED_PUB + b"\x18\x01", "but 34 follow"),  # an extra field
        (ED_PUB + b"\x08\x01", "but 34 follow"),  # Type twice
        (b"\x08\x81\x00\x12\x20" + ED_RAW, "not minimally encoded"),
        (ED_PUB[:-1], "but 31 follow"),  # truncated
        (b"\x08", "truncated varint"),
        (b"\x08\x01\x12\xff\xff\xff\xff\x0f", "declares 4294967295 bytes"),
        (key_protobuf(1, (2).to_bytes(32, "little")), "not a point"),  # no x for y = 2
        (key_protobuf(1, ((1 << 255) | 1).to_bytes(32, "little")), "not a point"),  # -0
        (key_protobuf(1, (2**255 - 18).to_bytes(32, "little")), "not a point"),  # y >= p
        (key_protobuf(2, b"\x02" + b"\xff" * 32), "not a point"),  # x >= p
        (key_protobuf(2, b"\x04" + b"\x01" * 32), "compressed"),
        (key_protobuf(2, bytes.fromhex(SPEC["secp256k1_public_key"])[4:] + b"\0"), "33-byte"),
        (key_protobuf(3, b"\x30\x03\x02\x01\x01"), "SubjectPublicKeyInfo"),
        (key_protobuf(0, ED_RAW), "SubjectPublicKeyInfo"),
        (key_protobuf(1, b"\0" * (MAX_PUBLIC_KEY_SIZE)), "exceeds"),
    ],
)
def test_invalid_public_keys(data: bytes, match: str) -> None:
    with pytest.raises(InvalidKeyError, match=match) as info:
        public_key_from_protobuf(data)
    assert isinstance(info.value, RemoteProtocolError)
    assert isinstance(info.value, ValueError)


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_ecdsa_rejects_other_curves_and_compressed_points() -> None:
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(InvalidKeyError, match="P-256"):
        public_key_from_protobuf(key_protobuf(KeyType.ECDSA, _spki(k1)))
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert EcdsaPublicKey.from_raw(_spki(p256))  # uncompressed point: fine
    point = p256.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    algorithm = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")
    compressed = b"\x30\x39" + algorithm + b"\x03\x22\x00" + point
    with pytest.raises(InvalidKeyError, match=r"uncompressed|SubjectPublicKeyInfo"):
        EcdsaPublicKey.from_raw(compressed)
    rsa_spki = bytes.fromhex(SPEC["rsa_public_key"])[5:]
    with pytest.raises(InvalidKeyError, match="P-256"):
        public_key_from_protobuf(key_protobuf(KeyType.ECDSA, rsa_spki))
    with pytest.raises(InvalidKeyError, match="another type"):
        public_key_from_protobuf(key_protobuf(KeyType.RSA, _spki(p256)))


def test_rsa_size_bounds() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidKeyError, match="1024 bits"):
        public_key_from_protobuf(key_protobuf(KeyType.RSA, _spki(small.public_key())))
    small_der = small.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidKeyError, match="1024 bits"):
        private_key_from_protobuf(key_protobuf(KeyType.RSA, small_der))
    huge = rsa.RSAPublicNumbers(65537, (1 << 8199) | 1).public_key()
    with pytest.raises(InvalidKeyError, match="8200 bits"):
        public_key_from_protobuf(key_protobuf(KeyType.RSA, _spki(huge)))
    big_e = rsa.RSAPublicNumbers((1 << 33) + 1, (1 << 2047) | 1).public_key()
    with pytest.raises(InvalidKeyError, match="exponent"):
        public_key_from_protobuf(key_protobuf(KeyType.RSA, _spki(big_e)))


@pytest.mark.parametrize(
    "data",
    [
        key_protobuf(2, bytes(32)),  # zero scalar
        key_protobuf(2, SECP256K1_ORDER.to_bytes(32, "big")),  # scalar = n
        key_protobuf(2, b"\x01" * 31),
        key_protobuf(3, b"\x30\x00"),
        key_protobuf(0, b"garbage"),
        key_protobuf(9, bytes(32)),
        key_protobuf(1, bytes(MAX_PRIVATE_KEY_SIZE)),
    ],
)
def test_invalid_private_keys(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        private_key_from_protobuf(data)


def test_ecdsa_private_key_must_not_be_secp256k1() -> None:
    der = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidKeyError, match="P-256"):
        private_key_from_protobuf(key_protobuf(KeyType.ECDSA, der))


# ------------------------------------------------------------------ key files


def test_save_and_load_private_key(tmp_path: Path, keys: dict[KeyType, PrivateKey]) -> None:
    for key_type, key in keys.items():
        path = tmp_path / f"{key_type.name}.key"
        save_private_key(key, path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes() == key.to_protobuf()
        loaded = load_private_key(path)
        assert loaded == key
        assert loaded.public_key.verify(b"m", key.sign(b"m"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{k.name}.key" for k in keys)


def test_save_tightens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    key = Ed25519PrivateKey.generate()
    save_private_key(key, str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(str(path)) == key


def test_load_rejects_garbage_and_oversized_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(b"\x08\x01\x12\x40" + bytes(MAX_PRIVATE_KEY_SIZE))
    with pytest.raises(InvalidKeyError, match="exceeds"):
        load_private_key(path)
    path.write_bytes(b"not a key")
    with pytest.raises(InvalidKeyError):
        load_private_key(path)


# ------------------------------------------------------------------ fuzz

VALID_PUBLIC = [bytes.fromhex(SPEC[f"{n}_public_key"]) for n in SPEC_TYPES]


def _check_public_parse(data: bytes) -> None:
    try:
        key = public_key_from_protobuf(data)
    except InvalidKeyError:
        return
    assert key.to_protobuf() == data  # anything accepted is canonical
    assert public_key_from_protobuf(key.to_protobuf()) == key


@given(st.binary(max_size=200))
def test_fuzz_public_key_random_bytes(data: bytes) -> None:
    _check_public_parse(data)


@given(st.integers(0, 5), st.binary(max_size=600))
def test_fuzz_public_key_random_data(key_type: int, raw: bytes) -> None:
    _check_public_parse(key_protobuf(key_type, raw))


@given(
    st.sampled_from(VALID_PUBLIC),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    st.integers(0, 10_000),
)
def test_fuzz_public_key_mutations(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    _check_public_parse(bytes(data[: max(0, len(data) - cut % 4)]))


@given(st.integers(0, 5), st.binary(max_size=200))
def test_fuzz_private_key(key_type: int, raw: bytes) -> None:
    try:
        key = private_key_from_protobuf(key_protobuf(key_type, raw))
    except InvalidKeyError:
        return
    assert private_key_from_protobuf(key.to_protobuf()) == key


@given(st.binary(max_size=600), st.binary(max_size=100))
def test_fuzz_verify_never_raises(signature: bytes, data: bytes) -> None:
    for key in FUZZ_VERIFIERS:
        assert key.verify(data, signature) is False


FUZZ_VERIFIERS = [public_key_from_protobuf(p) for p in VALID_PUBLIC]


@given(st.binary(min_size=32, max_size=32))
def test_fuzz_every_ed25519_public_key_is_on_the_curve(seed: bytes) -> None:
    key = Ed25519PrivateKey.from_seed(seed)
    assert public_key_from_protobuf(key.public_key.to_protobuf()) == key.public_key


P25519 = 2**255 - 19
D25519 = -121665 * pow(121666, -1, P25519) % P25519


def reference_is_point(raw: bytes) -> bool:
    """RFC 8032 section 5.1.3 decoding, step by step, with Euler's criterion."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= P25519:
        return False
    x2 = (y * y - 1) * pow(D25519 * y * y + 1, P25519 - 2, P25519) % P25519
    if x2 == 0:
        return raw[31] >> 7 == 0
    return pow(x2, (P25519 - 1) // 2, P25519) == 1


@given(st.binary(min_size=32, max_size=32))
def test_fuzz_ed25519_point_check_matches_rfc_8032(raw: bytes) -> None:
    try:
        Ed25519PublicKey.from_raw(raw)
    except InvalidKeyError:
        assert not reference_is_point(raw)
    else:
        assert reference_is_point(raw)
