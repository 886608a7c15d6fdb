"""Our Yamux and Mplex against real js-libp2p 3.x peers (@chainsafe/libp2p-yamux 8.0.1,
@libp2p/mplex 12.0.32), over loopback TCP with Noise, in both roles.

The rest of the stack comes from flarelab (multistream-select, Noise) but not the node:
these tests drive the muxer directly, so they isolate it. They run real processes on real
sockets (trio's real clock), each wait bounded. js-libp2p opens identify and, every 10 s,
ping streams on every connection; we answer those with ``na`` (which js accepts).
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
from jspeer import JsSetupError, require_js_setup, run_js_peer

from flarelab.identity import PeerId, generate_private_key
from flarelab.mss import negotiate_initiator, negotiate_responder
from flarelab.muxers import MplexConnection, YamuxConfig, YamuxConnection
from flarelab.muxers.driver import MuxerDriver
from flarelab.security.noise import noise_handshake

pytestmark = pytest.mark.interop

ECHO = "/flarelab/echo/1.0.0"
PERF = "/perf/1.0.0"
MUXERS = {"yamux": ("/yamux/1.0.0", YamuxConnection), "mplex": ("/mplex/6.7.0", MplexConnection)}


@pytest.fixture(autouse=True)
def _js_setup() -> None:
    try:
        require_js_setup()
    except JsSetupError as err:
        pytest.fail(str(err), pytrace=False)


def make_muxer(
    kind: str, stream: trio.abc.Stream, *, is_initiator: bool, peer: object
) -> MuxerDriver:
    """Make our muxer (Yamux with its default keepalive: js pings too)."""
    if kind == "yamux":
        return YamuxConnection(stream, is_initiator=is_initiator, config=YamuxConfig(), peer=peer)  # type: ignore[arg-type]
    return MplexConnection(stream, is_initiator=is_initiator, peer=peer)  # type: ignore[arg-type]


async def refuse_inbound(conn: MuxerDriver, nursery: trio.Nursery, served: dict[str, int]) -> None:
    """Serve js's inbound streams: echo, and ``na`` to everything else (identify, ping)."""

    async def handle(stream: trio.abc.HalfCloseableStream) -> None:
        try:
            with trio.fail_after(20):
                _, negotiated = await negotiate_responder(stream, [ECHO])
                total = 0
                while data := await negotiated.receive_some(65536):
                    total += len(data)
                    await negotiated.send_all(data)
                await negotiated.send_eof()  # type: ignore[attr-defined]
                served["echo"] = served.get("echo", 0) + total
        except Exception:
            pass
        finally:
            await stream.aclose()

    while True:
        try:
            stream = await conn.accept_stream()
        except trio.BrokenResourceError:
            return
        nursery.start_soon(handle, stream)


@asynccontextmanager
async def dial_js(kind: str, js_addr: str) -> AsyncIterator[tuple[MuxerDriver, dict[str, int]]]:
    """Dial a js peer with TCP + Noise + the muxer; serve its streams while in the block."""
    parts = js_addr.split("/")
    host, port = parts[2], int(parts[4])
    tcp = await trio.open_tcp_stream(host, port)
    _, raw = await negotiate_initiator(tcp, ["/noise"])
    secure = await noise_handshake(raw, local_key=generate_private_key(), is_initiator=True)  # type: ignore[arg-type]
    protocol, _ = MUXERS[kind]
    _, mux_stream = await negotiate_initiator(secure, [protocol])
    conn = make_muxer(kind, mux_stream, is_initiator=True, peer=secure.remote_peer)
    served: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        nursery.start_soon(refuse_inbound, conn, nursery, served)
        try:
            yield conn, served
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()
            nursery.cancel_scope.cancel()


async def echo_through(conn: MuxerDriver, size: int) -> bool:
    """Send ``size`` random bytes through js's echo handler; tell whether they came back."""
    stream = await conn.open_stream()
    _, echo = await negotiate_initiator(stream, [ECHO])
    payload = random.Random(size).randbytes(size)
    got = hashlib.sha256()
    received = 0

    async def reader() -> None:
        nonlocal received
        while data := await echo.receive_some(1 << 20):
            got.update(data)
            received += len(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        view = memoryview(payload)
        while view:
            await echo.send_all(view[:100_000])
            view = view[100_000:]
        await echo.send_eof()  # type: ignore[attr-defined]
    await stream.aclose()
    return received == size and got.digest() == hashlib.sha256(payload).digest()


async def perf_download(conn: MuxerDriver, upload: int, download: int) -> int:
    """Run one /perf/1.0.0 exchange; return the bytes that came back."""
    stream = await conn.open_stream()
    _, perf = await negotiate_initiator(stream, [PERF])
    await perf.send_all(download.to_bytes(8, "big"))
    sent = 0
    while sent < upload:
        n = min(65536, upload - sent)
        await perf.send_all(bytes(n))
        sent += n
    await perf.send_eof()  # type: ignore[attr-defined]
    total = 0
    while data := await perf.receive_some(1 << 20):
        total += len(data)
    await stream.aclose()
    return total


@pytest.mark.parametrize("kind", ["yamux", "mplex"])
async def test_we_dial_js_and_echo_and_perf(kind: str) -> None:
    with trio.fail_after(90):
        async with run_js_peer("--muxer", kind) as js, dial_js(kind, js.addr) as (conn, _):
            event = await js.next_event("connection:open", timeout=10)
            assert event["muxer"] == MUXERS[kind][0]
            assert await echo_through(conn, 3_000_000)
            assert await perf_download(conn, upload=5_000_000, download=20_000_000) == 20_000_000
            assert not conn.is_closed
            # only js's automatic identify fails (we answer na): nothing on the muxer
            assert [e for e in js.events_named("error") if e["where"] != "identify"] == []
        assert conn.close_reason == "closed locally"


async def test_yamux_connection_outlives_js_keepalive_pings() -> None:
    # js pings at once and every 30 s; its connection monitor opens a ping stream every 10 s
    with trio.fail_after(60):
        async with run_js_peer("--muxer", "yamux") as js, dial_js("yamux", js.addr) as (conn, _):
            await trio.sleep(12)
            assert not conn.is_closed
            assert conn.rtt is not None  # type: ignore[attr-defined]
            assert await echo_through(conn, 100_000)
            assert js.events_named("connection:close") == []


@pytest.mark.parametrize("kind", ["yamux", "mplex"])
async def test_js_dials_us_and_echoes(kind: str) -> None:
    key = generate_private_key()
    peer_id = PeerId.from_public_key(key.public_key)
    protocol, _ = MUXERS[kind]
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    results: dict[str, object] = {}

    async def serve_one(tcp: trio.SocketStream) -> None:
        _, raw = await negotiate_responder(tcp, ["/noise"])
        secure = await noise_handshake(raw, local_key=key, is_initiator=False)  # type: ignore[arg-type]
        _, mux_stream = await negotiate_responder(secure, [protocol])
        conn = make_muxer(kind, mux_stream, is_initiator=False, peer=secure.remote_peer)
        served: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(refuse_inbound, conn, nursery, served)
            try:
                await conn.run()
            except Exception as exc:
                results["error"] = exc
            nursery.cancel_scope.cancel()
        results["served"] = served
        results["reason"] = conn.close_reason

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}"
            async with run_js_peer(
                "--muxer", kind, "--dial", addr, "--echo", "2000000", "--exit-after-actions"
            ) as js:
                tcp = await listeners[0].accept()
                nursery.start_soon(serve_one, tcp)
                echo = await js.next_event("echo", timeout=30)
                assert echo["ok"] and echo["bytes"] == 2_000_000
                assert await js.wait(timeout=20) == 0
            await listeners[0].aclose()
    assert "error" not in results, results
    assert results["served"] == {"echo": 2_000_000}
