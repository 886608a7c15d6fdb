"""A trace as one standalone HTML file: the sequence diagram with replay, and the waterfall.

    flarelab trace view trace.jsonl -o trace.html

BokehJS is inlined (about 1.5 MB in all), so the file opens anywhere, offline, with no CDN;
the replay controls and the waterfall's filters run in the page.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from ..tracing.records import SpanRecord, latest_records, short_peer_id
from .views.sequence import SequenceBuilder
from .views.waterfall import families, nodes, waterfall_spans

__all__ = ["trace_html", "write_trace_html"]

DEFAULT_TITLE: Final = "flarelab trace"


def trace_html(records: Sequence[SpanRecord], *, title: str = DEFAULT_TITLE) -> str:
    """Return a standalone HTML page showing these span records."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models.widgets import Div
    from bokeh.resources import INLINE

    from .plots.sequence import SequencePlot
    from .plots.waterfall import static_waterfall

    builder = SequenceBuilder().feed(records)
    sequence = SequencePlot(builder, title="sequence diagram (scrub or press play to replay)")
    placed = waterfall_spans(records)
    waterfall = static_waterfall(placed, nodes(records), families(records))
    header = Div(text=_summary(records, builder, title), sizing_mode="stretch_width",
                 name="flarelab-summary")
    layout = column(header, sequence.layout, waterfall, name="flarelab-trace")
    return file_html(layout, INLINE, title)


def write_trace_html(records: Iterable[SpanRecord], path: str | os.PathLike[str], *,
                     title: str = DEFAULT_TITLE) -> Path:
    """Write the page for these records to ``path``; return the path."""
    out = Path(path)
    out.write_text(trace_html(list(records), title=title), encoding="utf-8")
    return out


def _summary(records: Sequence[SpanRecord], builder: SequenceBuilder, title: str) -> str:
    spans = latest_records(records)
    peers = {}
    for record in spans:
        if record.node_label and record.peer_id and record.node_label not in peers:
            peers[record.node_label] = record.peer_id
    items = builder.items()
    who = ", ".join(f"<b>{html.escape(label)}</b> {html.escape(short_peer_id(pid))}"
                    for label, pid in peers.items())
    duration = builder.axis.real_ms(builder.axis.end)
    return (
        f"<h2 style='margin:4px 0'>{html.escape(title)}</h2>"
        f"<div>{len(spans)} spans from {len(builder.lanes)} lanes ({who}); "
        f"{len(items.arrows)} messages, {len(items.marks)} NAT events and errors, "
        f"{duration:.1f} ms of trace"
        + (f", {len(builder.axis.gaps)} idle gaps squeezed" if builder.axis.gaps else "")
        + "</div>"
    )
