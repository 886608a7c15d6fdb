"""The pure view models: time axis, lane order, sequence builder, columns, waterfall, topology."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError
from flarelab.tracing import spans
from flarelab.tracing.records import SpanEventRecord, SpanRecord
from flarelab.workbench.views.columns import (
    ARROW_COLUMNS,
    MARK_COLUMNS,
    PHASE_COLUMNS,
    arrow_columns,
    gap_columns,
    lane_columns,
    mark_columns,
    phase_columns,
)
from flarelab.workbench.views.lanes import LaneInfo, order_lanes
from flarelab.workbench.views.sequence import SequenceBuilder
from flarelab.workbench.views.timeaxis import TimeAxis
from flarelab.workbench.views.topology import TopologyModel, from_network
from flarelab.workbench.views.waterfall import waterfall_rows, waterfall_spans

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


# ---------------------------------------------------------------- time axis
def test_time_axis_is_at_scale_and_squeezes_idle_gaps() -> None:
    axis = TimeAxis(max_gap_ms=1000, squeezed_ms=100)
    assert axis.extend(T0) == 0.0
    assert axis.extend(T0 + 40 * MS) == pytest.approx(40.0)
    assert axis.extend(T0 + 90 * MS) == pytest.approx(90.0)
    assert axis.extend(T0 + 30_090 * MS) == pytest.approx(190.0)  # 30 s drawn as 100 ms
    assert axis.extend(T0 + 30_100 * MS) == pytest.approx(200.0)
    assert [g.label for g in axis.gaps] == ["+30.0 s"]
    # a late time inside the gap is squeezed with it; positions never move
    assert axis.position(T0 + 15_090 * MS) == pytest.approx(140.0)
    assert axis.position(T0 + 40 * MS) == pytest.approx(40.0)
    assert axis.real_ms(190.0) == pytest.approx(30_090.0)
    assert axis.real_ms(40.0) == pytest.approx(40.0)
    assert axis.position(T0 - 5 * MS) == pytest.approx(-5.0)


def test_time_axis_rejects_bad_settings() -> None:
    with pytest.raises(LocalProtocolError):
        TimeAxis(max_gap_ms=10, squeezed_ms=20)


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=60))
def test_time_axis_keeps_order_and_never_moves_a_placed_time(times: list[int]) -> None:
    axis = TimeAxis(max_gap_ms=50, squeezed_ms=5)
    placed: dict[int, float] = {}
    for t in times:
        placed[t] = axis.extend(t)
        for earlier, y in placed.items():
            assert axis.position(earlier) == pytest.approx(y, abs=1e-6)
    ordered = sorted(placed)
    ys = [axis.position(t) for t in ordered]
    assert ys == sorted(ys)


# ---------------------------------------------------------------- lanes
def test_lanes_tell_the_hole_punch_story() -> None:
    lanes = [
        LaneInfo("A", "host", 0, "NAT A"), LaneInfo("NAT A", "nat", 1),
        LaneInfo("relay", "host", 2), LaneInfo("B", "host", 3, "NAT B"),
        LaneInfo("NAT B", "nat", 4), LaneInfo("12*abcdef", "remote", 5),
    ]
    assert order_lanes(lanes) == ["A", "NAT A", "relay", "NAT B", "B", "12*abcdef"]
    assert order_lanes(lanes, preferred=["relay"])[0] == "relay"


# ---------------------------------------------------------------- sequence builder
def _record(node: str, name: str, start: int, end: int | None, *, span_id: str,
            parent: str | None = None, attrs: dict | None = None,
            events: tuple[SpanEventRecord, ...] = (), peer: str | None = None,
            status: str = "unset") -> SpanRecord:
    resource = {spans.LIBP2P_NODE_LABEL: node, spans.LIBP2P_PEER_ID: peer or f"peer-{node}"}
    return SpanRecord(kind="end" if end is not None else "start", name=name,
                      trace_id="a" * 32, span_id=span_id, parent_id=parent,
                      start_ns=T0 + start * MS, end_ns=None if end is None else T0 + end * MS,
                      attributes=attrs or {}, events=events, status=status,  # type: ignore[arg-type]
                      resource=resource)


def _msg(sent: bool, at: int, kind: str, size: int) -> SpanEventRecord:
    return SpanEventRecord(spans.MESSAGE_SENT if sent else spans.MESSAGE_RECEIVED, T0 + at * MS,
                           {spans.MESSAGE_TYPE: kind, spans.MESSAGE_SIZE: size})


def _handshake() -> list[SpanRecord]:
    """A initiates Noise with B (knowing B's peer id); B's span names no peer."""
    a = _record("A", spans.NOISE_HANDSHAKE, 0, 25, span_id="1" * 16,
                attrs={spans.LIBP2P_REMOTE_PEER_ID: "peer-B"},
                events=(_msg(True, 0, "e", 34), _msg(False, 20, "e,ee,s,es", 232),
                        _msg(True, 20, "s,se", 186)))
    b = _record("B", spans.NOISE_HANDSHAKE, 10, 30, span_id="2" * 16,
                events=(_msg(False, 10, "e", 34), _msg(True, 10, "e,ee,s,es", 232),
                        _msg(False, 30, "s,se", 186)))
    return [a, b]


def test_messages_pair_across_nodes_even_when_one_side_names_no_peer() -> None:
    builder = SequenceBuilder().feed(_handshake())
    arrows = builder.items().arrows
    assert sorted((x.t_send, x.src, x.dst, x.label, x.status) for x in arrows) == [
        (T0, "A", "B", "e", "delivered"),
        (T0 + 10 * MS, "B", "A", "e,ee,s,es", "delivered"),
        (T0 + 20 * MS, "A", "B", "s,se", "delivered"),
    ]
    assert {x.family for x in arrows} == {"noise"}
    phases = builder.items().phases
    assert sorted(p.lane for p in phases) == ["A", "B"]


def test_records_in_any_order_give_the_same_pairs() -> None:
    forward = SequenceBuilder().feed(_handshake()).items().arrows
    backward = SequenceBuilder().feed(reversed(_handshake())).items().arrows
    key = sorted((a.src, a.dst, a.label, a.t_send, a.t_recv) for a in forward)
    assert key == sorted((a.src, a.dst, a.label, a.t_send, a.t_recv) for a in backward)


def test_a_lonely_half_waits_for_its_grace_then_is_drawn_alone() -> None:
    a, b = _handshake()
    extra = _record("A", spans.PING, 40, 50, span_id="3" * 16,
                    attrs={spans.LIBP2P_REMOTE_PEER_ID: "peer-B"},
                    events=(_msg(True, 40, "ping", 32),))
    later = _record("B", "tcp.listen", 3000, 3001, span_id="4" * 16)
    builder = SequenceBuilder(grace_ms=1000)
    for record in (a, b, extra):
        builder.add(record)
    builder.settle()
    assert all(x.label != "ping" for x in builder.take_new().arrows)  # still waiting
    builder.add(later)
    builder.settle()
    ping = [x for x in builder.take_new().arrows if x.label == "ping"]
    assert [(x.src, x.dst, x.status) for x in ping] == [("A", "B", "send_only")]


def test_messages_to_untraced_peers_get_a_remote_lane() -> None:
    record = _record("A", spans.PING, 0, 5, span_id="5" * 16,
                     attrs={spans.LIBP2P_REMOTE_PEER_ID: "12D3KooWgoPeerXYZabc"},
                     events=(_msg(True, 0, "ping", 32), _msg(False, 5, "pong", 32)))
    builder = SequenceBuilder().feed([record])
    assert builder.lanes == ["A", "12*XYZabc"]
    assert {x.status for x in builder.items().arrows} == {"remote"}


def test_nat_lanes_sit_beside_their_hosts_and_mark_mappings_at_once(
    trace_records: list[SpanRecord],
) -> None:
    builder = SequenceBuilder()
    session_start = next(r for r in trace_records
                         if r.name == spans.NAT_SESSION and not r.ended)
    for record in trace_records[: trace_records.index(session_start) + 1]:
        builder.add(record)
    assert "mapping" in [m.kind for m in builder.take_new().marks]
    builder.feed(trace_records[trace_records.index(session_start) + 1:])
    assert builder.lanes == ["A", "NAT A", "relay"]
    assert builder.behind("A") == "NAT A"
    kinds = [m.kind for m in builder.items().marks]
    assert kinds.count("mapping") == 2  # a TCP and a UDP session, each marked once
    assert "translated" in kinds


def test_simnet_trace_columns(trace_records: list[SpanRecord]) -> None:
    builder = SequenceBuilder().feed(trace_records)
    items = builder.items()
    arrows = arrow_columns(builder, items.arrows)
    assert set(arrows) == set(ARROW_COLUMNS)
    assert len({len(v) for v in arrows.values()}) == 1
    noise = [i for i, f in enumerate(arrows["family"]) if f == "noise"]
    assert len(noise) == 3 and all(arrows["status"][i] == "delivered" for i in noise)
    for i in noise:  # A is lane 0, relay lane 2: every Noise message crosses NAT A's lane
        assert {arrows["x0"][i], arrows["x1"][i]} == {0, 2}
        assert arrows["y1"][i] - arrows["y0"][i] == pytest.approx(20.5)  # 4 links, 2 hops
    marks = mark_columns(builder, items.marks)
    assert set(marks) == set(MARK_COLUMNS) and set(marks["x"]) == {1}
    phases = phase_columns(builder, items.phases)
    assert set(phases) == set(PHASE_COLUMNS)
    assert {"noise.handshake", "tcp.dial", "quic.dial"} <= set(phases["name"])
    assert lane_columns(builder)["name"] == ["A", "NAT A", "relay"]
    assert gap_columns(builder)["y0"] == []


def test_errors_become_marks(failing_trace_records: list[SpanRecord]) -> None:
    builder = SequenceBuilder().feed(failing_trace_records)
    errors = [m for m in builder.items().marks if m.kind == "error"]
    assert {m.label for m in errors} == {"node.dial", "tcp.dial"}
    assert all(m.lane == "A" and "timed out" in m.detail for m in errors)


_names = st.sampled_from([spans.PING, spans.NOISE_HANDSHAKE, spans.NAT_SESSION, spans.NAT_DROP,
                          "mss.negotiate", "x.y"])
_events = st.lists(st.builds(
    SpanEventRecord,
    name=st.sampled_from([spans.MESSAGE_SENT, spans.MESSAGE_RECEIVED, spans.NAT_TRANSLATED,
                          spans.NAT_FILTERED, "other"]),
    time_ns=st.integers(0, 10**10),
    attributes=st.dictionaries(st.sampled_from([spans.MESSAGE_TYPE, spans.MESSAGE_SIZE,
                                                spans.LIBP2P_DIRECTION, spans.LIBP2P_NAT_PACKET]),
                               st.one_of(st.text(max_size=5), st.integers(-5, 5), st.none()),
                               max_size=3)), max_size=4)


@st.composite
def _records(draw: st.DrawFn) -> SpanRecord:
    node = draw(st.sampled_from(["A", "B", "NAT A", "relay"]))
    start = draw(st.integers(0, 10**10))
    ended = draw(st.booleans())
    attrs = draw(st.dictionaries(
        st.sampled_from([spans.LIBP2P_REMOTE_PEER_ID, spans.LIBP2P_NAT_INTERNAL,
                         spans.LIBP2P_LOCAL_MULTIADDR, spans.LIBP2P_PROTOCOL]),
        st.sampled_from(["peer-A", "peer-B", "192.168.1.2:4001", "/ip4/192.168.1.2/tcp/1",
                         "[::1]:5", "router", "", "/ipfs/ping/1.0.0"]), max_size=3))
    peer = "router:1.2.3.4" if node.startswith("NAT") else f"peer-{node}"
    return SpanRecord(
        kind="end" if ended else "start", name=draw(_names), trace_id="b" * 32,
        span_id=draw(st.sampled_from(["1" * 16, "2" * 16, "3" * 16, "4" * 16])),
        parent_id=draw(st.sampled_from([None, "1" * 16, "2" * 16])), start_ns=start,
        end_ns=start + draw(st.integers(0, 10**9)) if ended else None, attributes=attrs,
        events=tuple(draw(_events)) if ended else (),
        status=draw(st.sampled_from(["unset", "error"])),
        resource={spans.LIBP2P_NODE_LABEL: node, spans.LIBP2P_PEER_ID: peer})


@given(st.lists(_records(), max_size=25))
def test_builder_takes_any_records_and_columns_stay_rectangular(records: list[SpanRecord]) -> None:
    builder = SequenceBuilder(grace_ms=1)
    for record in records:
        builder.add(record)
        builder.settle()
    builder.settle(everything=True)
    items = builder.items()
    for columns in (arrow_columns(builder, items.arrows), mark_columns(builder, items.marks),
                    phase_columns(builder, items.phases), lane_columns(builder)):
        assert len({len(v) for v in columns.values()}) <= 1
    lanes = set(builder.lanes)
    assert all(a.src in lanes and a.dst in lanes for a in items.arrows)
    assert builder._pending == 0


# ---------------------------------------------------------------- waterfall
def test_waterfall_nests_spans_and_filters(trace_records: list[SpanRecord]) -> None:
    placed = waterfall_spans(trace_records)
    rows = waterfall_rows(placed, node="A")
    assert set(rows["node"]) == {"A"}
    dial = rows["name"].index("node.dial")
    assert rows["depth"][dial] == 0 and rows["depth"][dial + 1] == 1  # tcp.dial under it
    noise = waterfall_rows(placed, node="A", only={"noise"})
    assert noise["name"] == ["noise.handshake"] and noise["row"] == [0]
    assert "libp2p.role = initiator" in noise["attrs"][0]
    assert "noise.msg1" in noise["attrs"][0]
    assert waterfall_rows([], node="A")["row"] == []


# ---------------------------------------------------------------- topology
def test_topology_lays_out_and_colours_connections() -> None:
    model = TopologyModel()
    model.add_router("NAT A", detail="home router")
    model.add_host("A", parent="NAT A")
    model.add_host("relay")
    model.add_router("NAT B")
    model.add_host("B", parent="NAT B")
    with pytest.raises(LocalProtocolError):
        model.add_host("A")
    model.add_failure("A", "B", "timed out")
    model.set_connections([dataclasses.replace(_link("A", "relay"), kind="direct"),
                           _link("B", "A", via="relay")])
    nodes = model.node_columns()
    x = dict(zip(nodes["name"], nodes["x"], strict=True))
    assert x["A"] < x["NAT A"] < x["relay"] < x["NAT B"] < x["B"]
    edges = model.edge_columns()
    kinds = [k for k in edges["kind"] if k != "link"]
    assert sorted(kinds) == ["direct", "relayed"]  # the relayed connection replaced the failure
    relayed = edges["kind"].index("relayed")
    assert len(edges["xs"][relayed]) == 3  # drawn through the relay


def _link(a: str, b: str, via: str | None = None):  # type: ignore[no-untyped-def]
    from flarelab.workbench.views.topology import Link

    return Link(a, b, "relayed", via)


async def test_topology_from_a_simnet_network() -> None:
    from flarelab.simnet import Network

    async with Network() as net:
        net.add_router("NAT A", "symmetric").add_host("A")
        net.add_host("relay")
        model = from_network(net)
    assert set(model.devices) == {"internet", "NAT A", "A", "relay"}
    assert model.devices["A"].parent == "NAT A"
    assert "symmetric" in model.devices["NAT A"].detail
