"""SpanRecord: snapshots of real SDK spans, the JSON form, and a fuzzed parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from flarelab.tracing import spans
from flarelab.tracing.records import (
    SpanEventRecord,
    SpanRecord,
    TraceFormatError,
    latest_records,
    short_peer_id,
)

PEER = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAabcdef"


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({spans.LIBP2P_NODE_LABEL: "A", spans.LIBP2P_PEER_ID: PEER}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_from_readable_span_captures_everything() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("node.dial", attributes={"a": 1}) as parent,
        tracer.start_as_current_span(
            spans.NOISE_HANDSHAKE, kind=SpanKind.CLIENT, attributes={"addrs": ["x", "y"]}
        ) as span,
    ):
        spans.message_sent(span, "e", 32)
        span.set_attribute("raw", b"\x01\xff")
        span.set_status(Status(StatusCode.ERROR, "bad"))
    child, root = exporter.get_finished_spans()
    record = SpanRecord.from_readable_span(child, ended=True)
    ctx = parent.get_span_context()
    assert record.kind == "end"
    assert record.ended
    assert record.name == "noise.handshake"
    assert record.trace_id == format(ctx.trace_id, "032x")
    assert record.parent_id == format(ctx.span_id, "016x")
    assert record.span_kind == "client"
    assert record.attributes == {"addrs": ("x", "y"), "raw": "01ff"}
    assert record.events == (
        SpanEventRecord(
            "message.sent", child.events[0].timestamp, {"message.type": "e", "message.size": 32}
        ),
    )
    assert (record.status, record.description) == ("error", "bad")
    assert record.node_label == "A"
    assert record.peer_id == PEER
    assert record.duration_ns == child.end_time - child.start_time
    root_record = SpanRecord.from_readable_span(root, ended=True)
    assert root_record.parent_id is None
    assert root_record.status == "unset"
    assert SpanRecord.from_json(record.to_json()) == record


def test_start_record_has_no_end() -> None:
    provider, _ = _provider()
    span = provider.get_tracer("t").start_span("ping", attributes={"k": "v"})
    record = SpanRecord.from_readable_span(span, ended=False)  # type: ignore[arg-type]
    span.end()
    assert record.kind == "start"
    assert record.end_ns is None
    assert record.duration_ns is None
    assert record.attributes == {"k": "v"}


def test_short_peer_id_like_go() -> None:
    assert short_peer_id(PEER) == "12*abcdef"
    assert short_peer_id("QmShort") == "QmShort"


def test_latest_records_prefers_end() -> None:
    start = SpanRecord("start", "ping", "1" * 32, "2" * 16, None, 10)
    end = SpanRecord("end", "ping", "1" * 32, "2" * 16, None, 10, 20)
    other = SpanRecord("start", "x", "1" * 32, "3" * 16, "2" * 16, 11)
    assert latest_records([start, other, end]) == [end, other]
    assert latest_records([end, start]) == [end]


# ---------------------------------------------------------------- JSON, fuzzed
_scalars = (
    st.text(max_size=20)
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.none()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_attrs = st.dictionaries(st.text(max_size=20), _values, max_size=5)
_hex16 = st.text("0123456789abcdef", min_size=16, max_size=16)
_times = st.integers(min_value=0, max_value=2**63)
_events = st.builds(SpanEventRecord, st.text(max_size=10), _times, _attrs)


@st.composite
def _records(draw: st.DrawFn) -> SpanRecord:
    kind = draw(st.sampled_from(["start", "end"]))
    return SpanRecord(
        kind=kind,
        name=draw(st.text(max_size=30)),
        trace_id=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        span_id=draw(_hex16),
        parent_id=draw(st.none() | _hex16),
        start_ns=draw(_times),
        end_ns=draw(_times) if kind == "end" else None,
        attributes=draw(_attrs),
        events=tuple(draw(st.lists(_events, max_size=3))),
        status=draw(st.sampled_from(["unset", "ok", "error"])),
        description=draw(st.none() | st.text(max_size=20)),
        resource=draw(_attrs),
        span_kind=draw(st.sampled_from(["internal", "client", "server", "producer", "consumer"])),
    )


@given(_records())
def test_json_roundtrip(record: SpanRecord) -> None:
    line = record.to_json()
    assert "\n" not in line
    assert line.isascii()
    assert SpanRecord.from_json(line) == record
    assert SpanRecord.from_json(line.encode()) == record


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_from_json_raises_only_trace_format_error(data: bytes | str) -> None:
    try:
        record = SpanRecord.from_json(data)
    except TraceFormatError:
        return
    assert SpanRecord.from_json(record.to_json()) == record


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@given(_records(), st.sampled_from(["kind", "name", "trace_id", "span_id", "parent_id",
                                    "start_ns", "end_ns", "attributes", "events", "status",
                                    "description", "resource", "span_kind"]), _json_values)
def test_from_dict_with_any_field_replaced(record: SpanRecord, key: str, value: object) -> None:
    data = record.to_dict()
    data[key] = value
    try:
        parsed = SpanRecord.from_json(json.dumps(data))
    except TraceFormatError:
        return
    assert SpanRecord.from_json(parsed.to_json()) == parsed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "middle"}, "kind"),
        ({"trace_id": "XYZ"}, "trace_id"),
        ({"span_id": "0" * 15}, "span_id"),
        ({"start_ns": -1}, "start_ns"),
        ({"start_ns": True}, "start_ns"),
        ({"end_ns": None}, "needs end_ns"),
        ({"status": "fine"}, "status"),
        ({"attributes": []}, "attributes"),
        ({"events": [{"name": "x"}]}, "time_ns"),
    ],
)
def test_from_json_rejects(change: dict[str, object], message: str) -> None:
    data = SpanRecord("end", "ping", "1" * 32, "2" * 16, None, 1, 2).to_dict()
    data.update(change)
    with pytest.raises(TraceFormatError, match=message):
        SpanRecord.from_json(json.dumps(data))


def test_from_json_rejects_deep_nesting() -> None:
    deep: object = 1
    for _ in range(20):
        deep = [deep]
    data = SpanRecord("start", "x", "1" * 32, "2" * 16, None, 1).to_dict()
    data["attributes"] = {"deep": deep}
    with pytest.raises(TraceFormatError, match="nest"):
        SpanRecord.from_json(json.dumps(data))
    with pytest.raises(TraceFormatError, match="not JSON"):
        SpanRecord.from_json("[" * 100_000)
