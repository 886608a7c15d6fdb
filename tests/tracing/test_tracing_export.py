"""The JSON-lines trace file: written by nodes, read back, forgiving a cut-off last line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flarelab.tracing.export import JsonLinesSpanExporter, iter_trace, read_trace, write_trace
from flarelab.tracing.provider import NodeTracing, TracingConfig
from flarelab.tracing.records import SpanRecord, TraceFormatError

A = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa"
B = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbbbb"


def _record(i: int) -> SpanRecord:
    return SpanRecord("end", f"s{i}", f"{i:032x}", f"{i + 1:016x}", None, i, i + 5,
                      {"n": i, "l": ("a", "b")})


def test_two_nodes_append_to_one_file_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    with (
        NodeTracing.create(TracingConfig(label="A", trace_file=path), A) as a,
        NodeTracing.create(TracingConfig(label="B", trace_file=str(path)), B) as b,
    ):
        with a.tracer.start_as_current_span("node.dial", attributes={"libp2p.attempt": 1}) as sp:
            sp.add_event("message.sent", {"message.type": "e", "message.size": 32})
            with b.tracer.start_as_current_span("tcp.accept"):
                pass
        with a.tracer.start_as_current_span("ping"):
            pass
    records = read_trace(path)
    assert [(r.node_label, r.name) for r in records] == [
        ("B", "tcp.accept"), ("A", "node.dial"), ("A", "ping"),
    ]
    assert all(r.ended for r in records)
    dial = records[1]
    assert dial.peer_id == A
    assert dial.attributes == {"libp2p.attempt": 1}
    assert dial.events[0].attributes == {"message.type": "e", "message.size": 32}
    assert records[0].resource["service.instance.id"] == B
    # appending: a second run adds to the file
    with NodeTracing.create(TracingConfig(label="A", trace_file=path), A) as again:
        again.tracer.start_span("later").end()
    assert [r.name for r in read_trace(path)][-1] == "later"


def test_write_and_read_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    records = [_record(i) for i in range(5)]
    assert write_trace(path, records) == 5
    assert read_trace(path) == records
    write_trace(path, [_record(9)], append=True)
    assert read_trace(path) == [*records, _record(9)]


def test_truncated_last_line_is_forgiven(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_trace(path, [_record(1), _record(2)])
    data = path.read_bytes()
    for cut in range(1, len(_record(2).to_json()) + 1):
        path.write_bytes(data[:-cut])  # the last line loses its newline and `cut - 1` bytes
        records = read_trace(path)
        assert records[0] == _record(1)
        assert records[1:] in ([], [_record(2)])


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n" + _record(1).to_json() + "\n\n   \n")
    assert read_trace(path) == [_record(1)]


def test_malformed_line_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(_record(1).to_json() + "\n{not json}\n" + _record(2).to_json() + "\n")
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:2: not JSON"):
        read_trace(path)
    assert read_trace(path, strict=False) == [_record(1), _record(2)]
    assert next(iter_trace(path)) == _record(1)


def test_exporter_after_shutdown_fails_cleanly(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = JsonLinesSpanExporter(tmp_path / "t.jsonl")
    assert exporter.force_flush()
    exporter.shutdown()
    exporter.shutdown()
    assert exporter.export([]) is SpanExportResult.FAILURE
