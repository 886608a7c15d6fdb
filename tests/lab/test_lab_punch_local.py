"""The punch experiment without a lab: its protocol on loopback, order classification, theory,
and the same pairs on simnet built from the lab's topology. No root needed.

The real-lab matrix is test_lab_punch_matrix.py (root).
"""

from __future__ import annotations

import functools
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flarelab.lab import LabContext, NatKind
from flarelab.lab.matrix import (
    A_ANSWERS_LATE,
    B_FIRST,
    DCUTR,
    PunchTrial,
    classify_order,
    matrix_topology,
    predict,
    side_host,
    simnet_punch,
)
from flarelab.lab.punch import _read_line, observer_server, punch_side, rendezvous_server
from flarelab.lab.topology import LabHost

HOME, ANSWER, SYM = NatKind.HOME_ROUTER, NatKind.ANSWERING_ROUTER, NatKind.SYMMETRIC


class StubContext:
    """Just enough of a LabContext for the punch functions, on loopback."""

    def __init__(self, name: str) -> None:
        self.host = LabHost(name, "127.0.0.1")
        self.info: Any = None
        self.is_ready = trio.Event()
        self._stop = trio.Event()

    def ready(self, info: Any = None) -> None:
        self.info = info
        self.is_ready.set()

    async def wait_stop(self) -> None:
        await self._stop.wait()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()


async def _service(nursery: trio.Nursery, fn: Any, name: str, out: dict[str, Any]
                   ) -> StubContext:
    ctx = StubContext(name)

    async def run() -> None:
        out[name] = await fn(cast(LabContext, ctx))

    nursery.start_soon(run)
    await ctx.is_ready.wait()
    return ctx


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_a_punch_on_loopback_succeeds_on_both_sides(transport: str) -> None:
    stats: dict[str, Any] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            observer = await _service(nursery, functools.partial(observer_server, port=23478),
                                      "stun", stats)
            relay = await _service(nursery, functools.partial(rendezvous_server, port=24002),
                                   "relay", stats)
            common = {"observer": ["127.0.0.1", 23478], "rendezvous": ["127.0.0.1", 24002],
                      "session": "s1", "duration": 5.0}
            reports: dict[str, Any] = {}

            async def side(role: str, port: int) -> None:
                ctx = cast(LabContext, StubContext(role))
                reports[role] = await punch_side(ctx, role, transport,  # type: ignore[arg-type]
                                                 port=port, **common)  # type: ignore[arg-type]

            async with trio.open_nursery() as sides:
                sides.start_soon(side, "a", 24101)
                sides.start_soon(side, "b", 24102)
            observer._stop.set()
            relay._stop.set()
    a, b = reports["a"], reports["b"]
    assert a["observed"] == ["127.0.0.1", 24101] and b["peer_observed"] == ["127.0.0.1", 24101]
    assert b["observed"] == ["127.0.0.1", 24102] and a["peer_observed"] == ["127.0.0.1", 24102]
    assert a["success"] and b["success"]
    assert b["rtt"] is not None and b["rtt"] < 1.0
    assert a["first_send"] >= a["go"] and b["first_send"] >= b["go"]
    if transport == "tcp":
        assert {a["via"], b["via"]} <= {"connect", "accept"}
    else:
        assert (a["via"], b["via"]) == ("answer", "dial received")
    assert stats["relay"] == {"sessions": 1, "refused": 0}
    assert stats["stun"][transport] == 2


async def test_the_rendezvous_refuses_what_is_not_a_join() -> None:
    stats: dict[str, Any] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            relay = await _service(nursery, functools.partial(rendezvous_server, port=24003),
                                   "relay", stats)
            for garbage in (b"HELLO\n", b"JOIN x c\n", b"JOIN only-two\n", b"x" * 1000):
                stream = await trio.open_tcp_stream("127.0.0.1", 24003)
                async with stream:
                    await stream.send_all(garbage)
                    try:  # closed on us (reset, when our garbage was left unread)
                        assert await stream.receive_some(100) == b""
                    except trio.BrokenResourceError:
                        pass
            relay._stop.set()
    assert stats["relay"] == {"sessions": 0, "refused": 4}


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=12))
async def test_read_line_returns_lines_or_raises_our_errors(chunks: list[bytes]) -> None:
    send, receive = trio.testing.memory_stream_pair()
    for chunk in chunks:
        await send.send_all(chunk)
    await send.aclose()
    data = b"".join(chunks)
    buffer = bytearray()
    lines = []
    try:
        while True:
            lines.append(await _read_line(receive, buffer))
    except (EOFError, ValueError):
        pass
    expected = data.split(b"\n")[:len(lines)]
    assert lines == [line.decode(errors="replace") for line in expected]


def test_classify_order() -> None:
    # no latency: whoever sent more than a millisecond earlier was first
    assert classify_order(1.0, 1.1, one_way=0.0) == "a_first"
    assert classify_order(1.1, 1.0, one_way=0.0) == "b_first"
    assert classify_order(1.0, 1.0005, one_way=0.0) == "unclear"
    # 20 ms one way: starting 3 ms apart, the packets cross in the internet
    assert classify_order(1.0, 1.003, one_way=0.02) == "sync"
    assert classify_order(1.0, 1.05, one_way=0.02) == "a_first"
    assert classify_order(1.0, 1.02, one_way=0.02) == "unclear"
    assert classify_order(None, 1.0, one_way=0.0) == "unclear"


def test_predictions_for_the_lab() -> None:
    assert predict(HOME, HOME, "tcp", "a_first") == (True, predict(HOME, HOME, "tcp",
                                                                    "a_first")[1])
    ok, reason = predict(ANSWER, ANSWER, "udp", "a_first")
    assert not ok and "NAT B's stack answered A's first packet" in reason
    assert predict(ANSWER, ANSWER, "udp", "sync")[0]
    assert not predict(SYM, SYM, "tcp", "sync")[0]
    # IPv6: the routers only filter, nothing is translated: every pair punches through
    assert predict(SYM, SYM, "tcp", "a_first", ipv6=True)[0]
    assert predict(ANSWER, ANSWER, "udp", "b_first", ipv6=True)[0]


def test_a_trial_counts_as_direct_the_way_simnet_does() -> None:
    def side(success: bool, elapsed: float | None = None) -> dict[str, Any]:
        return {"success": success, "elapsed": elapsed, "notes": []}

    tcp = PunchTrial(HOME, None, "tcp", "x", 0, False, side(False), side(True, 0.002), "sync")
    assert tcp.success and tcp.elapsed == 0.002 and tcp.agrees is None
    udp = PunchTrial(HOME, None, "udp", "x", 0, False, side(False), side(True, 0.002), "sync",
                     predicted=False)
    assert not udp.success and udp.agrees  # B saw a dial, but no answer reached A
    assert "home-pub     udp #0 failed order=sync agrees" in udp.describe()


@pytest.mark.parametrize(("kind_a", "kind_b", "transport", "case", "latency", "expected"), [
    (HOME, HOME, "tcp", A_ANSWERS_LATE, 0.0, True),
    (HOME, HOME, "udp", A_ANSWERS_LATE, 0.0, True),
    (ANSWER, ANSWER, "tcp", A_ANSWERS_LATE, 0.0, False),
    (HOME, ANSWER, "udp", A_ANSWERS_LATE, 0.0, False),
    (HOME, ANSWER, "udp", B_FIRST, 0.0, True),
    (ANSWER, HOME, "tcp", B_FIRST, 0.0, False),
    (ANSWER, ANSWER, "udp", DCUTR, 0.01, True),
    (SYM, HOME, "tcp", DCUTR, 0.01, False),
    (None, SYM, "udp", DCUTR, 0.01, False),
    (SYM, None, "tcp", DCUTR, 0.01, True),
])
async def test_simnet_on_the_lab_topology_agrees_with_theory(
    kind_a: NatKind | None, kind_b: NatKind | None, transport: str, case: Any, latency: float,
    expected: bool, autojump_clock: trio.testing.MockClock,
) -> None:
    topology = matrix_topology(latency=latency)
    assert side_host("a", kind_a) in topology.names()
    order = case.order or "sync"
    assert predict(kind_a, kind_b, transport, order)[0] is expected  # type: ignore[arg-type]
    assert await simnet_punch(topology, kind_a, kind_b, transport,  # type: ignore[arg-type]
                              case) is expected
