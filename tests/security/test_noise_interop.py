"""Noise against real js-libp2p 3.x peers (@chainsafe/libp2p-noise), both roles.

Each test runs a real node process (``interop/js/peer.mjs``, through the harness in
``tests/interop/jspeer.py``) on loopback, on trio's real clock, every wait bounded. After our
handshake, js reports the connection with the muxer *it* chose, which must be the one we
negotiated early: the proof that both ends agree without a multistream-select round.
ECDSA identities are left out: js-libp2p 3.x encodes ECDSA public keys in its own DER
layout, not the PKIX form the spec and go-libp2p use, and cannot parse standard ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
from jspeer import JsSetupError, require_js_setup, run_js_peer

from flarelab.identity import (
    Ed25519PrivateKey,
    PeerId,
    PrivateKey,
    RsaPrivateKey,
    Secp256k1PrivateKey,
)
from flarelab.mss import negotiate_initiator, negotiate_responder
from flarelab.security.noise import noise_handshake

pytestmark = pytest.mark.interop

YAMUX, MPLEX = "/yamux/1.0.0", "/mplex/6.7.0"


@pytest.fixture(autouse=True)
def _js_setup() -> None:
    try:
        require_js_setup()
    except JsSetupError as err:
        pytest.fail(str(err), pytrace=False)


def _port(addr: str) -> int:
    parts = addr.split("/")
    return int(parts[parts.index("tcp") + 1])


@pytest.mark.parametrize(
    ("key_type", "ours", "theirs", "expected"),
    [
        (Ed25519PrivateKey, [YAMUX, MPLEX], "yamux,mplex", YAMUX),
        (Secp256k1PrivateKey, [YAMUX, MPLEX], "mplex,yamux", YAMUX),
        (RsaPrivateKey, [YAMUX, MPLEX], "mplex", MPLEX),
    ],
    ids=["ed25519", "secp256k1-orders-differ", "rsa-mplex-only"],
)
async def test_we_dial_js(
    key_type: type[PrivateKey], ours: list[str], theirs: str, expected: str
) -> None:
    key = key_type.generate()
    async with run_js_peer("--muxer", theirs) as js:
        js_id = PeerId.from_string(js.addr.split("/p2p/")[1])
        with trio.fail_after(20):
            tcp = await trio.open_tcp_stream("127.0.0.1", _port(js.addr))
            _, stream = await negotiate_initiator(tcp, ["/noise"])
            secured = await noise_handshake(
                stream, local_key=key, is_initiator=True, expected_peer=js_id, muxers=ours
            )
            assert secured.remote_peer == js_id
            assert secured.early_muxer == expected
            opened = await js.next_event("connection:open")
        assert opened["peerId"] == str(PeerId.from_public_key(key.public_key))
        assert opened["encryption"] == "/noise"
        assert opened["muxer"] == expected
        await secured.aclose()


@pytest.mark.parametrize(
    ("key_type", "ours", "theirs", "expected"),
    [
        (Ed25519PrivateKey, [YAMUX, MPLEX], "yamux,mplex", YAMUX),
        # js would take our first choice and we its first: so we offer only ours
        (Secp256k1PrivateKey, [MPLEX, YAMUX], "yamux,mplex", MPLEX),
        (RsaPrivateKey, [YAMUX], "mplex,yamux", YAMUX),
    ],
    ids=["ed25519", "secp256k1-orders-differ", "rsa"],
)
async def test_js_dials_us(
    key_type: type[PrivateKey], ours: list[str], theirs: str, expected: str
) -> None:
    key = key_type.generate()
    me = PeerId.from_public_key(key.public_key)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    target = f"/ip4/127.0.0.1/tcp/{port}/p2p/{me}"
    async with run_js_peer("--muxer", theirs, "--dial", target) as js:
        with trio.fail_after(20):
            tcp = await listeners[0].accept()
            _, stream = await negotiate_responder(tcp, ["/noise"])
            secured = await noise_handshake(stream, local_key=key, is_initiator=False, muxers=ours)
            opened = await js.next_event("connection:open")
        assert opened["peerId"] == str(me)
        assert str(secured.remote_peer) == js.peer_id
        assert secured.early_muxer == expected
        assert opened["muxer"] == expected
        await secured.aclose()
    await listeners[0].aclose()
