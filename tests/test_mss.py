from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from flarelab.errors import ProtocolNotSupportedError, RemoteProtocolError
from flarelab.mss import (
    MAX_PROPOSALS,
    encode_message,
    negotiate_initiator,
    negotiate_responder,
)


def test_wire_bytes() -> None:
    assert encode_message("/multistream/1.0.0") == b"\x13/multistream/1.0.0\n"
    assert encode_message("na") == b"\x03na\n"


async def _pair(offer: list[str], supported: set[str], *, lazy: bool = False):
    a, b = trio.testing.memory_stream_pair()
    results: dict[str, object] = {}

    async def responder() -> None:
        try:
            results["responder"] = await negotiate_responder(b, supported, peer="B")
        except Exception as exc:  # collected for assertions
            results["responder"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(responder)
        try:
            results["initiator"] = await negotiate_initiator(a, offer, lazy=lazy, peer="A")
        except Exception as exc:
            results["initiator"] = exc
            await a.aclose()
    return results


async def test_first_choice_and_fallback() -> None:
    res = await _pair(["/a/1", "/b/1"], {"/b/1", "/c/1"})
    proto_i, _ = res["initiator"]
    proto_r, _ = res["responder"]
    assert proto_i == proto_r == "/b/1"


async def test_not_supported() -> None:
    res = await _pair(["/x/1", "/y/1"], {"/b/1"})
    err = res["initiator"]
    assert isinstance(err, ProtocolNotSupportedError)
    assert err.offered == ("/x/1", "/y/1")
    assert "/multistream/1.0.0" in str(err) and "peer A" in str(err)


async def test_data_after_negotiation_is_not_lost() -> None:
    a, b = trio.testing.memory_stream_pair()

    async def responder() -> None:
        _, stream = await negotiate_responder(b, {"/echo/1"})
        data = await stream.receive_some(100)
        await stream.send_all(data.upper())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(responder)
        _, stream = await negotiate_initiator(a, ["/echo/1"], lazy=True)
        # lazy: the proposal and the first data leave together, before any answer
        await stream.send_all(b"hello")
        got = b""
        while len(got) < 5:
            got += await stream.receive_some(100)
        assert got == b"HELLO"


async def test_lazy_refused() -> None:
    a, b = trio.testing.memory_stream_pair()

    async def responder() -> None:
        with pytest.raises(RemoteProtocolError):
            # initiator gives up after 'na' and closes, so the responder sees EOF
            await negotiate_responder(b, {"/other/1"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(responder)
        _, stream = await negotiate_initiator(a, ["/echo/1"], lazy=True)
        with pytest.raises(ProtocolNotSupportedError):
            await stream.receive_some(10)
        await a.aclose()


async def test_responder_rejects_garbage() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(b"\x05hello")  # no newline
    with pytest.raises(RemoteProtocolError, match="newline"):
        await negotiate_responder(b, {"/x"}, peer="P")


async def test_responder_rejects_wrong_header() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(encode_message("/multistream/2.0.0"))
    with pytest.raises(RemoteProtocolError, match="expected") as info:
        await negotiate_responder(b, {"/x"}, peer="P")
    assert info.value.peer == "P"
    assert info.value.protocol == "/multistream/1.0.0"


async def test_responder_proposal_limit() -> None:
    a, b = trio.testing.memory_stream_pair()
    payload = encode_message("/multistream/1.0.0") + b"".join(
        encode_message(f"/p/{i}") for i in range(MAX_PROPOSALS + 1)
    )

    async def flood() -> None:
        await a.send_all(payload)
        while await a.receive_some(65536):
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        with pytest.raises(RemoteProtocolError, match="proposals"):
            await negotiate_responder(b, {"/x"})
        await b.aclose()


async def test_oversized_token() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(b"\xff\x7f" + b"a" * 100)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        await negotiate_responder(b, {"/x"})


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_fuzz_responder(data: bytes) -> None:
    async def main() -> None:
        a, b = trio.testing.memory_stream_pair()
        await a.send_all(data)
        await a.send_eof()
        try:
            with trio.fail_after(5):
                proto, _ = await negotiate_responder(b, {"/x/1"})
        except RemoteProtocolError:
            return
        assert proto == "/x/1"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
