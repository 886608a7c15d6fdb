"""JS-vs-JS smoke tests: prove the js-libp2p harness (peer.mjs + jspeer.py) works.

Rules (as everywhere in tests/): loopback only, port 0, no sleeps. These tests start
real node processes, so they run on trio's real clock and every wait is bounded.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jspeer import JsPeer, JsPeerError, JsSetupError, require_js_setup, run_js_peer

from flarelab.encoding import b58_encode

pytestmark = pytest.mark.interop

MUXER_IDS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}
SERVED_PROTOCOLS = {
    "/ipfs/id/1.0.0",
    "/ipfs/id/push/1.0.0",
    "/ipfs/ping/1.0.0",
    "/perf/1.0.0",
    "/flarelab/echo/1.0.0",
}
PERF_BYTES = 10 * 1024 * 1024
ECHO_BYTES = 1024 * 1024 + 17  # not a multiple of any frame or block size
SEED = "07" * 32


def without_p2p(addr: str) -> str:
    """Drop the trailing /p2p/<id> of a multiaddr string."""
    return addr.split("/p2p/")[0]


def tcp_port(addr: str) -> int:
    """Return the TCP port of a /ip4/.../tcp/PORT/... multiaddr string."""
    parts = addr.split("/")
    return int(parts[parts.index("tcp") + 1])


def ed25519_peer_id(seed_hex: str) -> str:
    """Compute the libp2p peer id of an Ed25519 key from its 32-byte seed."""
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public_key_pb = b"\x08\x01\x12\x20" + raw  # PublicKey{Type: Ed25519, Data: raw}
    return b58_encode(b"\x00" + bytes([len(public_key_pb)]) + public_key_pb)  # identity multihash


def only(events: list[dict[str, Any]], peer: JsPeer, what: str) -> dict[str, Any]:
    """Return the single event in ``events`` or fail with the peer's story."""
    assert len(events) == 1, peer.describe(f"expected one {what}, got {len(events)}")
    return events[0]


def identified(peer: JsPeer) -> list[dict[str, Any]]:
    """Return the peer:identify events of identify proper (not of identify push)."""
    return [e for e in peer.events_named("peer:identify") if not e["push"]]


def check_identify(event: dict[str, Any], *, remote: JsPeer, agent: str, observed: str) -> None:
    """Check a peer:identify event describes ``remote`` as seen from the other side."""
    assert event["peerId"] == remote.peer_id
    assert event["push"] is False
    assert set(event["protocols"]) >= SERVED_PROTOCOLS
    assert event["agentVersion"] == agent
    assert event["protocolVersion"] == "ipfs/0.1.0"
    assert event["listenAddrs"] == [without_p2p(a) for a in remote.addrs]
    record = event["signedPeerRecord"]
    assert record["present"]
    assert record["verified"]
    assert isinstance(record["seq"], int)
    assert record["seq"] > 0
    assert record["addrs"] == [without_p2p(a) for a in remote.addrs]
    # the observed address is what the remote saw of us: its connection's remoteAddr
    assert event["observedAddr"] == observed
    raw = bytes.fromhex(event["observedAddrHex"])
    port = tcp_port(observed)
    assert raw[:8] == b"\x04\x7f\x00\x00\x01\x06" + port.to_bytes(2, "big")


# js-libp2p's mplex takes at most 5 new inbound streams per second on a connection (see
# test_js_mplex_drops_the_sixth_new_stream_in_a_second); identify, the identify push each
# node sends a second after it starts, echo and perf leave room for one ping
@pytest.mark.parametrize(("muxer", "pings"), [("yamux", 3), ("mplex", 1)])
async def test_dialer_runs_every_action(muxer: str, pings: int) -> None:
    async with run_js_peer("--muxer", muxer, "--agent", "harness/listener") as listener:
        async with run_js_peer(
            *f"--muxer {muxer} --agent harness/dialer --dial {listener.addr} --identify"
            f" --ping {pings} --echo {ECHO_BYTES} --perf-upload {PERF_BYTES}"
            f" --perf-download {PERF_BYTES} --exit-after-actions".split()
        ) as dialer:
            done = await dialer.next_event("done", timeout=30)
            assert done["ok"], dialer.describe("an action failed")
            assert await dialer.wait() == 0
            assert (await dialer.next_event("stopped"))["reason"] == "actions done"
        await listener.next_event("connection:close", where=lambda e: e["peerId"] == dialer.peer_id)

    out = only(dialer.events_named("connection:open"), dialer, "connection:open")
    into = only(listener.events_named("connection:open"), listener, "connection:open")
    assert (out["peerId"], out["direction"]) == (listener.peer_id, "outbound")
    assert (into["peerId"], into["direction"]) == (dialer.peer_id, "inbound")
    assert out["remoteAddr"] == listener.addr
    for conn in (out, into):
        assert (conn["muxer"], conn["encryption"]) == (MUXER_IDS[muxer], "/noise")

    # identify ran both ways, as js-libp2p does on every new connection (a push may
    # follow: each js-libp2p node pushes to its connections a second after it starts)
    check_identify(
        only(identified(dialer), dialer, "peer:identify"),
        remote=listener,
        agent="harness/listener",
        observed=into["remoteAddr"],
    )
    check_identify(
        only(identified(listener), listener, "peer:identify"),
        remote=dialer,
        agent="harness/dialer",
        observed=out["remoteAddr"],
    )

    rtts = dialer.events_named("ping")
    assert [p["seq"] for p in rtts] == list(range(1, pings + 1))
    assert all(0 <= p["rtt"] < 1000 for p in rtts)

    echo = only(dialer.events_named("echo"), dialer, "echo")
    assert (echo["ok"], echo["bytes"], echo["sent"]) == (True, ECHO_BYTES, ECHO_BYTES)
    served = only(listener.events_named("echo:served"), listener, "echo:served")
    assert (served["peerId"], served["bytes"]) == (dialer.peer_id, ECHO_BYTES)

    perf = only(dialer.events_named("perf"), dialer, "perf")
    assert perf["ok"]
    assert perf["uploadBytes"] == perf["downloadBytes"] == PERF_BYTES
    assert perf["ms"] >= perf["uploadMs"] > 0
    assert perf["downloadMs"] > 0
    served = only(listener.events_named("perf:served"), listener, "perf:served")
    assert served["uploadBytes"] == served["downloadBytes"] == PERF_BYTES

    # the push each node sends a second after it starts may be cut off by the dialer's
    # exit; the receiver reports that as an identify-push error, which is fine here
    for peer in (dialer, listener):
        errors = [e for e in peer.events_named("error") if e["where"] != "identify-push"]
        assert not errors, peer.describe("unexpected errors")


YAMUX, MPLEX = MUXER_IDS["yamux"], MUXER_IDS["mplex"]
# listener --muxer, dialer --muxer, then the muxer each side ends up with (None: no connection)
MUXER_CASES = [
    ("yamux,mplex", "yamux,mplex", YAMUX, YAMUX),
    ("yamux,mplex", "mplex", MPLEX, MPLEX),
    ("mplex", "yamux,mplex", MPLEX, MPLEX),
    ("yamux", "mplex,yamux", YAMUX, YAMUX),
    ("yamux", "mplex", None, None),  # no common muxer: noise fails the handshake
    # a js-libp2p bug (noise 17.0.0): negotiating early, in the Noise handshake, the
    # initiator takes the first muxer of the *responder's* list it supports, while the
    # responder (rightly, per the spec) takes the first of the initiator's list; when
    # the two orders differ the sides disagree and the connection is unusable
    ("mplex,yamux", "yamux,mplex", MPLEX, YAMUX),
]


async def test_muxer_negotiation() -> None:
    results: dict[tuple[str, str], tuple[JsPeer, JsPeer]] = {}

    async def connect(listener_muxers: str, dialer_muxers: str, expect: str | None) -> None:
        async with (
            run_js_peer("--muxer", listener_muxers) as listener,
            run_js_peer(
                *f"--muxer {dialer_muxers} --dial {listener.addr} --ping 1"
                " --exit-after-actions".split()
            ) as dialer,
        ):
            await dialer.wait(timeout=20)
            if expect is not None:
                await listener.next_event("connection:open", timeout=20)
        results[listener_muxers, dialer_muxers] = (listener, dialer)

    async with trio.open_nursery() as nursery:  # ~1 s of module loading per peer: overlap
        for listener_muxers, dialer_muxers, _, listener_muxer in MUXER_CASES:
            nursery.start_soon(connect, listener_muxers, dialer_muxers, listener_muxer)

    for listener_muxers, dialer_muxers, dialer_muxer, listener_muxer in MUXER_CASES:
        listener, dialer = results[listener_muxers, dialer_muxers]
        case = f"listener {listener_muxers}, dialer {dialer_muxers}"
        out = [e["muxer"] for e in dialer.events_named("connection:open")]
        into = [e["muxer"] for e in listener.events_named("connection:open")]
        if dialer_muxer is None:
            assert (out, into) == ([], []), case
            assert dialer.events_named("error")[0]["where"] == "dial", case
        else:
            assert (out, into) == ([dialer_muxer], [listener_muxer]), case
        works = dialer_muxer is not None and dialer_muxer == listener_muxer
        assert dialer.returncode == (0 if works else 1), dialer.describe(case)


async def test_failed_dial_exits_nonzero() -> None:
    with trio.socket.socket() as sock:  # bound, never listening: a dial is refused
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with run_js_peer(
            "--dial", f"/ip4/127.0.0.1/tcp/{port}", "--ping", "1", "--exit-after-actions"
        ) as dialer:
            error = await dialer.next_event("error")
            assert error["where"] == "dial"
            assert "ECONNREFUSED" in error["message"]
            assert (await dialer.next_event("done"))["ok"] is False
            assert await dialer.wait() == 1
    assert not dialer.events_named("ping")


async def test_js_mplex_drops_the_sixth_new_stream_in_a_second() -> None:
    """Pin a js-libp2p limit that flarelab must respect when it talks mplex to JS.

    @libp2p/mplex rate-limits new inbound streams to 5 per second per connection; the
    6th is dropped without a reset (and the muxer aborts its open streams), so its
    opener waits until a timeout. Here: identify, then pings 1-4, then ping 5 is the 6th
    (or ping 4, if the dialer's start-up identify push got in first).
    """
    async with (
        run_js_peer("--muxer", "mplex") as listener,
        run_js_peer(
            *f"--muxer mplex --dial {listener.addr} --identify --ping 20 --timeout 1000"
            " --exit-after-actions".split()
        ) as dialer,
    ):
        assert (await dialer.next_event("done"))["ok"] is False
    assert [p["seq"] for p in dialer.events_named("ping")] in ([1, 2, 3, 4], [1, 2, 3])
    error = only(dialer.events_named("error"), dialer, "error")
    assert error["where"] == "ping"
    assert "timeout" in error["message"].lower()


async def test_seed_gives_the_libp2p_ed25519_peer_id() -> None:
    async with run_js_peer("--seed", SEED) as peer:
        assert peer.addr.endswith(f"/p2p/{peer.peer_id}")
    assert peer.peer_id == ed25519_peer_id(SEED)
    assert peer.peer_id.startswith("12D3KooW")


async def test_identify_push_on_command(js_listener: JsPeer) -> None:
    listener = js_listener
    async with run_js_peer("--dial", listener.addr, "--identify") as dialer:
        assert (await dialer.next_event("done"))["ok"], dialer.describe("identify failed")
        await listener.next_event("peer:identify")  # its own identify of the dialer is done
        await listener.send_command({"cmd": "push"})
        sent = await listener.next_event("identify-push:sent")
        assert sent["connections"] == 1
        pushed = await dialer.next_event(
            "peer:identify",
            where=lambda e: e["push"] and e["signedPeerRecord"]["seq"] >= sent["seqAtLeast"],
        )
        assert pushed["peerId"] == listener.peer_id
        assert pushed["listenAddrs"] == [without_p2p(a) for a in listener.addrs]
        assert pushed["signedPeerRecord"]["verified"]
        assert pushed["observedAddr"] is None  # js-libp2p leaves it out of a push
        await listener.send_command({"cmd": "bogus"})
        assert (await listener.next_event("error"))["where"] == "command"


async def test_stops_cleanly_when_stdin_closes() -> None:
    async with run_js_peer() as peer:
        assert await peer.stop() == 0
        assert (await peer.next_event("stopped"))["reason"] == "stdin closed"


async def test_bad_arguments_exit_2() -> None:
    async with run_js_peer("--seed", "not-hex", ready=False) as peer:
        assert await peer.wait() == 2
        error = await peer.next_event("error")
    assert error["where"] == "args"
    assert "--seed" in error["message"]
    assert "usage:" in peer.stderr


async def test_helper_reports_and_cleans_up_on_failure() -> None:
    peers: list[JsPeer] = []

    async def wait_for_a_ping_that_never_comes() -> None:
        async with run_js_peer("--agent", "stuck") as peer:
            peers.append(peer)
            await peer.next_event("ping", timeout=0.2)

    with pytest.raises(JsPeerError) as info:
        await wait_for_a_ping_that_never_comes()
    message = str(info.value)
    assert "no 'ping' event within 0.2 s" in message
    assert "--agent stuck" in message  # the arguments
    assert "listening on" in message  # and the stderr
    (peer,) = peers
    pid = peer.process.pid
    assert peer.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # nothing of its process group is left


async def test_helper_stops_a_peer_that_ignores_stdin_with_sigterm() -> None:
    with trio.fail_after(15):
        async with run_js_peer("--ignore-stdin", stop_grace=0.2) as peer:
            await peer.close_stdin()
    assert peer.returncode == 0  # a clean stop, on SIGTERM after the grace period
    assert peer.events_named("stopped")[0]["reason"] == "SIGTERM"


def test_missing_node_modules_says_run_make_setup(tmp_path: Path) -> None:
    with pytest.raises(JsSetupError, match="make setup"):
        require_js_setup(js_dir=tmp_path)
