"""The story's protocols in the playground, live NAT events, packets between NATs, the matrix.

Everything here runs on trio's mock clock (simnet, virtual time): the launcher's actions
(AutoNAT, reserve, dial via relay, hole punch), the NAT routers' progress records that make
their events visible while a session lives, the NAT-to-NAT packet arrows, and the matrix
experiment against RFC 4787's predictions.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flarelab.flare.report import FlareTrial
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.records import SpanRecord
from flarelab.workbench.experiments import expected, run_matrix
from flarelab.workbench.playground import ACTIONS, Playground, Scenario
from flarelab.workbench.plots.matrix import MatrixPlot
from flarelab.workbench.services import autonat, dial_relayed, hole_punch, reserve
from flarelab.workbench.views.sequence import SequenceBuilder
from flarelab.workbench.views.wire import Sighting, WireMatcher


def test_the_story_actions_are_registered() -> None:
    for name in ("AutoNAT", "reserve", "dial via relay", "hole punch"):
        assert ACTIONS[name].available, name


async def test_a_hole_punch_shows_live_nat_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = SpanBus()
    live = SequenceBuilder(preferred_lanes=["A", "NAT A", "relay", "NAT B", "B"])
    seen_while_alive: list[str] = []

    def listen(record: SpanRecord) -> None:
        live.add(record)
        if record.name == spans.NAT_SESSION and not record.ended and record.events:
            seen_while_alive.extend(e.name for e in record.events)

    bus.add_listener(listen)
    pg = Playground(Scenario(nat_a="home_router", nat_b="home_router"), bus=bus,
                    clock=TrioClock(epoch_ns=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(pg.run)
        result = await hole_punch(pg, "A", "B")
        assert (result.outcome, result.attempts, result.transport) == ("success", 1, "quic-v1")
        states = pg.services.states if pg.services else {}
        assert states["B"].punch.startswith("initiator: success")
        assert states["A"].punch.startswith("receiver: success")
        # the NATs' translated packets reached the bus while their sessions still live
        ended = [r for r in bus.history() if r.name == spans.NAT_SESSION and r.ended]
        assert not ended and spans.NAT_TRANSLATED in seen_while_alive
        marks = live.items().marks
        assert {m.lane for m in marks if m.kind == "translated"} == {"NAT A", "NAT B"}
        packets = [(a.src, a.dst, a.label) for a in live.items().arrows if a.family == "nat"]
        assert {("NAT A", "NAT B"), ("NAT B", "NAT A")} <= {(s, d) for s, d, _ in packets}
        pg.stop()
    # each NAT mark is drawn once, whether it came live or with the session's end
    done = SequenceBuilder().feed(bus.history()).items().marks
    translated = [m for m in done if m.kind == "translated"]
    assert len(translated) == len({(m.lane, m.t) for m in translated})


async def test_autonat_reserve_and_a_relayed_dial(autojump_clock: trio.testing.MockClock
                                                  ) -> None:
    scenario = Scenario(nat_a="home_router", nat_b=None, autonat_servers=3, dcutr=False,
                        circuit_duration=30, circuit_data=4096)
    pg = Playground(scenario)
    changes: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(pg.run)
        assert pg.services is not None
        pg.services.on_change.append(changes.append)
        assert pg.public_peers() == ["relay", "S1", "S2", "S3", "B"]
        a = await autonat(pg, "A")
        assert (a["reachability"], a["confidence"]) == ("private", 3)
        assert set(a["v2"].values()) == {"private"}
        b = await autonat(pg, "B")
        assert (b["reachability"], b["confidence"]) == ("public", 3)
        assert pg.services.state("A").reachability == "private" and "A" in changes
        rsvp = await reserve(pg, "A")
        assert rsvp.limit is not None and (rsvp.limit.duration, rsvp.limit.data) == (30, 4096)
        assert pg.services.state("A").circuits
        conn = await dial_relayed(pg, "B", "A")
        assert conn.limited and "A" not in pg.services.holepunch
        pg.stop()


def test_wire_matcher_pairs_sightings_in_any_order() -> None:
    wire = WireMatcher()
    key = ("tcp", "1.1.1.1:1", "2.2.2.2:2", "SYN")
    assert wire.sent(key, Sighting("NAT A", 10)) is None
    assert wire.arrived(key, Sighting("NAT B", 5)) is None  # before it was sent: not it
    pair = wire.arrived(key, Sighting("NAT B", 20, "filtered"))
    assert pair == (Sighting("NAT A", 10), Sighting("NAT B", 20, "filtered"))
    assert wire.sent(key, Sighting("NAT A", 1)) == (Sighting("NAT A", 1), Sighting("NAT B", 5))
    assert len(wire) == 0


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 100)),
                max_size=200))
def test_wire_matcher_stays_bounded(events: list[tuple[bool, int, int]]) -> None:
    wire = WireMatcher(max_waiting=16)
    for sending, k, t in events:
        key = ("udp", f"e{k}", "r", "udp 64 B")
        seen = Sighting("NAT A" if sending else "NAT B", t)
        pair = wire.sent(key, seen) if sending else wire.arrived(key, seen)
        if pair is not None:
            assert pair[0].t <= pair[1].t and pair[0].router != pair[1].router
        assert len(wire) <= 16


def test_progress_records_go_to_the_bus_only() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    bus = SpanBus()
    provider = TracerProvider()
    provider.add_span_processor(bus)
    span = provider.get_tracer("t").start_span("nat.session")
    span.add_event(spans.NAT_TRANSLATED, {spans.LIBP2P_DIRECTION: "outbound"})
    bus.publish_progress(span)
    bus.publish_progress(object())  # not a span: ignored
    span.end()
    kinds = [(r.kind, len(r.events)) for r in bus.history()]
    assert kinds == [("start", 0), ("start", 1), ("end", 1)]


@pytest.mark.timeout(60)
def test_a_small_matrix_agrees_with_rfc_4787() -> None:
    trials = run_matrix((None, "home_router", "symmetric"), ("quic",))
    assert len(trials) == 9
    assert all(t.direct == expected(t).success for t in trials)
    assert [t.outcome for t in trials if t.nat_a is None] == ["direct_dial"] * 3
    plot = MatrixPlot(trials, expected=expected)
    assert plot.counts("quic") == {"direct": 6, "relayed": 3}
    data = plot.sources["quic"].data
    assert data["color"][data["x"].index("symmetric", 3)] == "#d62728"  # home -> symmetric
    assert plot.table_source.data["model"].count("relayed") == 3


def test_matrix_plot_of_lab_trials() -> None:
    trials = [FlareTrial("tcp", "full_cone", None, "success", True, elapsed=0.2, attempts=1),
              FlareTrial("tcp", "symmetric", None, "timeout", False, reason="no reply")]
    plot = MatrixPlot(trials)
    assert plot.kinds == ["full_cone", "public", "symmetric"]
    assert plot.sources["tcp"].data["text"] == ["200 ms", "relayed"]
    assert plot.table_source.data["model"] == ["", ""]
