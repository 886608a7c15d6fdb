"""The live widgets, kernel side: batching, following, filters, topology, the launcher.

What the browser shows is checked in test_workbench_browser.py; here the Bokeh sources and
ipywidgets' values are the outcome (what nbclient cannot see, a test can read directly).
"""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.testing

from flarelab.errors import LocalProtocolError
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.records import SpanRecord
from flarelab.workbench.playground import ACTIONS, Playground, Scenario
from flarelab.workbench.views.sequence import SequenceBuilder
from flarelab.workbench.widgets import PeerLauncher, SequenceDiagram, SpanWaterfall, TopologyView
from flarelab.workbench.widgets.bokeh_widget import BokehWidget


async def test_the_diagram_draws_a_burst_in_a_few_batches(
    autojump_clock: trio.testing.MockClock, trace_records: list[SpanRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bokeh.models import ColumnDataSource

    bus = SpanBus()
    diagram = SequenceDiagram(bus, rate=20)
    streams = []
    original = ColumnDataSource.stream

    def counting(self: ColumnDataSource, data: dict, rollover: int | None = None) -> None:
        if self is diagram.plot.arrows:
            streams.append(len(data["id"]))
        original(self, data, rollover)

    monkeypatch.setattr(ColumnDataSource, "stream", counting)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(diagram.run)
        for record in trace_records:  # one record every 2 ms: 500 records a second
            bus.publish(record)
            await trio.sleep(0.002)
        await trio.sleep(5)  # the grace period passes: one-sided messages are drawn too
        nursery.cancel_scope.cancel()
    seconds = len(trace_records) * 0.002
    assert diagram.batches <= seconds * 20 + 2  # at most 20 batches a second
    assert len(streams) <= diagram.batches + 2 and sum(streams) >= 40  # one stream per batch
    static = SequenceBuilder().feed(trace_records).items()
    summary = diagram.summary()
    assert summary["delivered"] == sum(1 for a in static.arrows if a.status == "delivered")
    assert summary["lanes"] == ["A", "NAT A", "relay"]
    assert diagram.plot.slider.value == diagram.plot.slider.end  # it followed the end


def test_the_cursor_stays_where_the_learner_put_it(trace_records: list[SpanRecord]) -> None:
    half = len(trace_records) // 2
    diagram = SequenceDiagram.from_records(trace_records[:half])
    slider = diagram.plot.slider
    end = slider.end
    assert slider.value == end and diagram.plot.cursor_line.location == end
    slider.value = 3.0  # scrubbed back
    diagram.feed.extend(trace_records[half:])
    diagram.flush(settle=True)
    assert slider.end > end and slider.value == 3.0
    assert diagram.messages == len(diagram.builder.items().arrows)


def test_lanes_from_a_scenario_fix_the_order(trace_records: list[SpanRecord]) -> None:
    diagram = SequenceDiagram.from_records(trace_records, lanes=["relay", "NAT A", "A"])
    assert diagram.lanes == ["relay", "NAT A", "A"]
    ticks = diagram.plot.figure.xaxis[0].major_label_overrides
    assert ticks == {0: "relay", 1: "NAT A", 2: "A"}
    widget = diagram.widget
    assert isinstance(widget, BokehWidget)


def test_the_waterfall_filters_by_node_and_family(trace_records: list[SpanRecord]) -> None:
    waterfall = SpanWaterfall.from_records(trace_records)
    assert waterfall.node == "A" and waterfall.rows > 10
    waterfall.select(node="relay", families={"noise", "identify"})
    data = waterfall.plot.source.data
    assert set(data["node"]) == {"relay"} and set(data["family"]) <= {"noise", "identify"}
    assert data["row"] == list(range(len(data["row"])))
    widget = waterfall.widget
    nodes, families = waterfall._controls
    assert nodes.value == "relay" and "A" in nodes.options
    nodes.value = "A"  # as if picked in the page
    assert set(waterfall.plot.source.data["node"]) == {"A"}
    assert isinstance(widget.children[1], BokehWidget)
    assert set(families.options) >= {"noise", "tcp", "quic"}


async def test_topology_shows_direct_and_failed_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = SpanBus()
    playground = Playground(Scenario(nat_b="home_router", relay=True), bus=bus,
                            clock=TrioClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(playground.run)
        assert playground.network is not None
        topo = TopologyView.of_network(playground.network, bus=bus)
        for name, node in playground.nodes.items():
            topo.track(node, name)
        playground.on_peer.append(
            lambda name, node: topo.track(node, name) if node else topo.untrack(name))
        nursery.start_soon(topo.run)
        await playground.dial("A", "relay")
        with pytest.raises(Exception):  # noqa: B017,PT011 - B sits behind its NAT
            with trio.fail_after(30):
                await playground.dial("A", "B")
        await trio.sleep(1)
        assert topo.connections() == {"direct": 1, "failed": 1}
        await playground.stop_peer("B")
        await trio.sleep(1)
        devices = topo.plot.nodes.data
        assert devices["alpha"][devices["name"].index("B")] < 1  # drawn as stopped
        playground.stop()
        nursery.cancel_scope.cancel()
    assert "B stopped" in playground.log


def test_every_action_is_available() -> None:
    assert {"dial TCP", "dial QUIC", "ping", "AutoNAT", "reserve", "dial via relay",
            "hole punch"} == {n for n, a in ACTIONS.items() if a.available}
    with pytest.raises(LocalProtocolError):
        Scenario(nat_a="carrier pigeon")
    with pytest.raises(LocalProtocolError):
        Scenario(autonat_servers=99)


def test_the_launcher_runs_a_scenario_from_the_kernel_loop() -> None:
    async def main() -> None:
        from flarelab.workbench.runner import TrioRunner

        runner = TrioRunner()
        launcher = PeerLauncher(runner, SpanBus(), Scenario(nat_a="full_cone", nat_b=None,
                                                            latency_ms=1))
        widget = launcher.widget  # ipywidgets made before the network runs
        await launcher.start()
        assert launcher.playground is not None
        assert set(launcher.playground.nodes) == {"A", "relay", "B"}
        conn = await launcher.act("dial TCP", "A", "relay")
        assert conn.security == "/noise"
        rtts = await launcher.act("ping", "A", "B")
        assert len(rtts) == 3
        result = await launcher.act("hole punch", "A", "B")  # B reaches public-ish A directly
        assert result.ok, result
        assert launcher.state()["B"]["punch"].startswith("initiator: ")
        assert "initiator: " in launcher._ui["peers"].value  # the table follows the events
        assert "running" in launcher._ui["peers"].value
        assert launcher.topology is not None and launcher.topology.widget is not None
        await launcher.stop_peer("B")
        assert "B" not in launcher.playground.nodes
        await launcher.stop()
        assert launcher.playground is None and "not running" in launcher._ui["peers"].value
        assert widget is launcher.widget
        await runner.aclose()
        assert not runner.errors

    asyncio.run(asyncio.wait_for(main(), 30))
