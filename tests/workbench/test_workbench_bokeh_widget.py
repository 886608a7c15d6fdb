"""The notebook widget ignores the browser's echoes of the kernel's own changes.

jupyter_bokeh's page sends back every change it made while applying the kernel's patch, late.
Here those echoes are built as the page builds them (BokehJS's wire format) and fed to the
widget as comm messages; the outcome is the kernel's Bokeh data and the document's events.
"""

from __future__ import annotations

from typing import Any

import pytest
from bokeh.document.events import DocumentChangedEvent
from jupyter_bokeh.widgets import BokehModel

from flarelab.tracing.records import SpanRecord
from flarelab.workbench.plots.sequence import SequencePlot
from flarelab.workbench.views.sequence import SequenceBuilder
from flarelab.workbench.widgets.bokeh_widget import BokehWidget


def _columns(data: dict[str, list[Any]]) -> dict[str, Any]:
    return {"type": "map", "entries": [[k, list(v)] for k, v in data.items()]}


def _data_echo(source: Any, data: dict[str, list[Any]]) -> dict[str, Any]:
    return {"kind": "ModelChanged", "model": {"id": source.id}, "attr": "data",
            "new": _columns(data), "event": "jsevent"}


def _stream_echo(source: Any, data: dict[str, list[Any]]) -> dict[str, Any]:
    return {"kind": "ColumnsStreamed", "model": {"id": source.id}, "attr": "data",
            "data": _columns(data), "rollover": None, "event": "jsevent"}


def _value(model: Any, attr: str, new: Any) -> dict[str, Any]:
    return {"kind": "ModelChanged", "model": {"id": model.id}, "attr": attr, "new": new,
            "event": "jsevent"}


def _live_plot(records: list[SpanRecord]) -> tuple[SequencePlot, Any]:
    """Return an empty plot (as a notebook shows it first) and the items to stream into it."""
    builder = SequenceBuilder(preferred_lanes=["A", "NAT A", "relay"])
    plot = SequencePlot(builder)
    builder.feed(records)
    return plot, builder.take_new()


@pytest.mark.parametrize("widget_type", [BokehModel, BokehWidget])
def test_a_late_echo_of_the_empty_data_resets_only_jupyter_bokeh(
    widget_type: type, trace_records: list[SpanRecord],
) -> None:
    plot, items = _live_plot(trace_records)
    widget = widget_type(plot.layout)
    empty = {k: list(v) for k, v in plot.marks.data.items()}  # what the page echoes later
    plot.append(items)
    marks = len(plot.marks.data["id"])
    assert marks >= 1 and "mapping" in plot.marks.data["kind"]
    widget._sync_model(widget, _data_echo(plot.marks, empty), [])
    if widget_type is BokehModel:  # the bug, as seen in notebook 01: the kernel's marks are gone
        assert plot.marks.data["id"] == []
    else:
        assert len(plot.marks.data["id"]) == marks and widget.echoes == 1


def test_an_echoed_stream_does_not_duplicate_rows(trace_records: list[SpanRecord]) -> None:
    plot, items = _live_plot(trace_records)
    widget = BokehWidget(plot.layout)
    plot.append(items)
    arrows = dict(plot.arrows.data)
    events: list[DocumentChangedEvent] = []
    plot.layout.document.on_change(events.append)
    widget._sync_model(widget, _stream_echo(plot.arrows, arrows), [])
    widget._sync_model(widget, _data_echo(plot.arrows, {k: [] for k in arrows}), [])
    assert plot.arrows.data["id"] == arrows["id"]
    assert events == [] and widget.echoes == 2  # the document never saw them


def test_the_cursor_keeps_following_but_the_learner_can_scrub(
    trace_records: list[SpanRecord],
) -> None:
    half = len(trace_records) // 2
    builder = SequenceBuilder(preferred_lanes=["A", "NAT A", "relay"])
    plot = SequencePlot(builder)
    widget = BokehWidget(plot.layout)
    plot.append(builder.feed(trace_records[:half]).take_new())
    first = plot.slider.value
    plot.append(builder.feed(trace_records[half:]).take_new())
    end = plot.slider.value
    assert end > first
    seen: list[float] = []
    plot.slider.on_change("value", lambda attr, old, new: seen.append(new))
    widget._sync_model(widget, _value(plot.slider, "value", first), [])  # a late echo
    assert plot.slider.value == end and seen == []
    plot.append(SequenceBuilder().items())
    assert plot.slider.value == end  # still following the end
    widget._sync_model(widget, _value(plot.slider, "value", end / 3), [])  # the learner scrubs
    assert plot.slider.value == end / 3 and set(seen) == {end / 3}  # (jupyter_bokeh calls twice)
    widget._sync_model(widget, _value(plot.play, "active", True), [])  # and presses play
    assert plot.play.active is True


def test_echoes_of_wrapped_and_json_mangled_values_are_recognised() -> None:
    plot = SequencePlot(SequenceBuilder())
    widget = BokehWidget(plot.layout)
    axis = plot.figure.xaxis[0]
    axis.major_label_overrides = {0: "A", 1: "relay"}  # a PropertyValueDict in the kernel
    plot.slider.end = 2.0
    axis.major_label_overrides = {0: "A", 1: "NAT A", 2: "relay"}
    plot.slider.end = 3.5
    overrides = {"type": "map", "entries": [[0, "A"], [1, "relay"]]}
    widget._sync_model(widget, _value(axis, "major_label_overrides", overrides), [])
    widget._sync_model(widget, _value(plot.slider, "end", 2), [])  # JSON.stringify(2.0) == "2"
    assert axis.major_label_overrides == {0: "A", 1: "NAT A", 2: "relay"}
    assert plot.slider.end == 3.5 and widget.echoes == 2
