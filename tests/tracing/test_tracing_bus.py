"""The live span bus: order, bounded subscribers that drop instead of blocking, replay, listeners.

No sleeps: the subscriber that "falls behind" simply does not read until the producer is done.
"""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from flarelab.errors import LocalProtocolError
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.records import SpanRecord


def _tracer(bus: SpanBus, label: str = "A"):  # type: ignore[no-untyped-def]
    provider = TracerProvider(
        resource=Resource.create({"libp2p.node_label": label}), shutdown_on_exit=False
    )
    provider.add_span_processor(bus)
    return provider.get_tracer("test")


def _names(records: list[SpanRecord]) -> list[tuple[str, str]]:
    return [(r.kind, r.name) for r in records]


async def test_start_and_end_in_order() -> None:
    bus = SpanBus()
    tracer = _tracer(bus)
    with bus.subscribe() as sub:
        with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner") as inner:
            inner.add_event("message.sent", {"message.type": "e"})
        got = [sub.receive_nowait() for _ in range(4)]
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()
    assert _names(got) == [("start", "outer"), ("start", "inner"), ("end", "inner"),
                           ("end", "outer")]
    assert got[2].events[0].name == "message.sent"
    assert got[1].parent_id == got[0].span_id
    assert got[0].node_label == "A"
    assert bus.published == 4
    assert _names(bus.history()) == _names(got)


async def test_async_iteration_ends_when_closed() -> None:
    bus = SpanBus()
    tracer = _tracer(bus)
    seen: list[SpanRecord] = []
    sub = bus.subscribe()

    async def consume() -> None:
        async for record in sub:
            seen.append(record)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        with tracer.start_as_current_span("ping"):
            pass
        await trio.testing.wait_all_tasks_blocked()
        assert _names(seen) == [("start", "ping"), ("end", "ping")]
        with tracer.start_as_current_span("perf"):
            pass
        bus.close()  # the buffered records are still delivered, then iteration ends
    assert _names(seen)[2:] == [("start", "perf"), ("end", "perf")]
    assert sub.closed
    with tracer.start_as_current_span("after-close"):
        pass
    assert bus.published == 4


@pytest.mark.parametrize(("overflow", "kept"), [("drop_oldest", [7, 8, 9]),
                                                ("drop_newest", [0, 1, 2])])
async def test_slow_subscriber_drops_and_counts(overflow: str, kept: list[int]) -> None:
    bus = SpanBus()
    tracer = _tracer(bus)
    slow = bus.subscribe(max_buffer=3, overflow=overflow)  # type: ignore[arg-type]
    fast_seen: list[SpanRecord] = []
    bus.add_listener(fast_seen.append)
    for i in range(5):  # publishing is synchronous: it cannot wait for the slow subscriber
        with tracer.start_as_current_span(f"s{i}"):
            pass
    assert slow.dropped == 7
    assert slow.pending == 3
    records = [slow.receive_nowait() for _ in range(3)]
    order = [(kind, f"s{i}") for i in range(5) for kind in ("start", "end")]
    assert _names(records) == [order[i] for i in kept]
    assert len(fast_seen) == 10
    slow.close()


async def test_replay_for_late_subscriber_and_listener() -> None:
    bus = SpanBus(history=3)
    tracer = _tracer(bus)
    for name in ("a", "b"):
        with tracer.start_as_current_span(name):
            pass
    late = bus.subscribe(max_buffer=1, replay=True)
    replayed: list[SpanRecord] = []
    bus.add_listener(replayed.append, replay=True)
    with tracer.start_as_current_span("c"):
        pass
    expected = [("end", "a"), ("start", "b"), ("end", "b")]
    assert _names(replayed) == [*expected, ("start", "c"), ("end", "c")]
    got = [await late.receive() for _ in range(4)]
    assert _names(got) == [*expected, ("end", "c")]  # live buffer of 1: oldest dropped
    assert late.dropped == 1
    assert _names(bus.history()) == [("end", "b"), ("start", "c"), ("end", "c")]


async def test_one_bus_many_nodes() -> None:
    bus = SpanBus()
    a, b = _tracer(bus, "A"), _tracer(bus, "B")
    with a.start_as_current_span("dial"), b.start_as_current_span("accept"):
        pass
    assert [(r.node_label, r.kind, r.name) for r in bus.history()] == [
        ("A", "start", "dial"), ("B", "start", "accept"), ("B", "end", "accept"),
        ("A", "end", "dial"),
    ]


async def test_listener_errors_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    bus = SpanBus()
    tracer = _tracer(bus)
    good: list[SpanRecord] = []

    def bad(record: SpanRecord) -> None:
        raise RuntimeError("widget broke")

    bus.add_listener(bad)
    bus.add_listener(good.append)
    with tracer.start_as_current_span("x"):
        pass
    assert bus.listener_errors == 2
    assert len(good) == 2
    assert "widget broke" in caplog.text
    bus.remove_listener(bad)
    with tracer.start_as_current_span("y"):
        pass
    assert bus.listener_errors == 2


async def test_spans_from_another_thread_arrive_without_blocking() -> None:
    bus = SpanBus()
    tracer = _tracer(bus)
    sub = bus.subscribe()

    def in_thread() -> None:
        with tracer.start_as_current_span("threaded"):
            pass

    await trio.to_thread.run_sync(in_thread)
    with trio.fail_after(1):
        got = [await sub.receive(), await sub.receive()]
    assert _names(got) == [("start", "threaded"), ("end", "threaded")]
    assert threading.current_thread() is threading.main_thread()


def test_thread_delivery_after_run_counts_as_dropped() -> None:
    bus = SpanBus()
    tracer = _tracer(bus)
    subs = []

    async def main() -> None:
        subs.append(bus.subscribe())

    trio.run(main)
    worker = threading.Thread(target=lambda: tracer.start_span("late").end())
    worker.start()
    worker.join()
    assert subs[0].dropped == 2


async def test_provider_shutdown_keeps_shared_bus_open() -> None:
    bus = SpanBus()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(bus)
    provider.shutdown()
    assert not bus.closed
    assert bus.force_flush()


async def test_bad_arguments() -> None:
    bus = SpanBus()
    with pytest.raises(LocalProtocolError):
        bus.subscribe(max_buffer=0)
    with pytest.raises(LocalProtocolError):
        bus.subscribe(overflow="block")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        SpanBus(history=-1)
    bus.close()
    sub = bus.subscribe()
    assert sub.closed
    with pytest.raises(trio.EndOfChannel):
        await sub.receive()
