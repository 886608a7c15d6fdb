"""Span records -> waterfall rows: one bar per span, per node, nested by parentage.

:func:`waterfall_rows` is pure: it merges start and end records (a span still running ends
"now", the latest time in the records), lays each node's spans out as a tree in start order
(a child right under its parent, indented by depth), and returns plain columns that both
the live widget and the standalone HTML file draw. Filtering by node and protocol family
happens here, and the surviving rows are numbered again so the bars stay packed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final

from ...tracing.records import AttributeValue, SpanRecord, latest_records
from ...tracing.spans import LIBP2P_PROTOCOL
from .palette import family_color, family_of

__all__ = ["WATERFALL_COLUMNS", "WaterfallSpan", "families", "nodes", "waterfall_rows",
           "waterfall_spans"]

WATERFALL_COLUMNS: Final = (
    "row", "node", "name", "family", "depth", "start_ms", "end_ms", "dur_ms", "status",
    "color", "label", "attrs", "running",
)
_MAX_ATTR_TEXT: Final = 160  # characters of one attribute value in a tooltip
_ERROR_COLOR: Final = "#d62728"


@dataclass(frozen=True, slots=True)
class WaterfallSpan:
    """One span, placed: its node, depth in its tree, and times relative to the first span."""

    node: str
    name: str
    family: str
    depth: int
    start_ms: float
    end_ms: float
    status: str
    running: bool
    attrs: str


def nodes(records: Iterable[SpanRecord]) -> list[str]:
    """Return the node labels in the records, in order of first appearance."""
    return list(dict.fromkeys(r.node_label or "?" for r in records))


def families(records: Iterable[SpanRecord]) -> list[str]:
    """Return the protocol families in the records, sorted."""
    return sorted({family_of(r.name, r.attributes.get(LIBP2P_PROTOCOL)) for r in records})


def waterfall_spans(records: Iterable[SpanRecord]) -> list[WaterfallSpan]:
    """Return every span placed, node by node, each node's spans as a tree in start order."""
    spans = latest_records(records)
    if not spans:
        return []
    t0 = min(s.start_ns for s in spans)
    now = max(max(s.end_ns or s.start_ns, s.start_ns) for s in spans)
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    children: dict[tuple[str, str] | None, list[SpanRecord]] = defaultdict(list)
    for s in spans:
        parent = (s.trace_id, s.parent_id) if s.parent_id else None
        same_node = parent in by_id and by_id[parent].node_label == s.node_label
        children[parent if same_node else None].append(s)
    for kids in children.values():
        kids.sort(key=lambda s: (s.start_ns, s.span_id))
    out: list[WaterfallSpan] = []
    roots: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in children[None]:
        roots[s.node_label or "?"].append(s)

    def walk(span: SpanRecord, depth: int) -> None:
        stack = [(span, depth)]
        while stack:
            s, d = stack.pop()
            end = s.end_ns if s.end_ns is not None else now
            out.append(WaterfallSpan(
                node=s.node_label or "?", name=s.name,
                family=family_of(s.name, s.attributes.get(LIBP2P_PROTOCOL)), depth=d,
                start_ms=(s.start_ns - t0) / 1e6, end_ms=(end - t0) / 1e6,
                status=s.status, running=s.end_ns is None, attrs=_attr_text(s)))
            kids = children.get((s.trace_id, s.span_id), [])
            stack.extend((k, d + 1) for k in reversed(kids))

    for node in nodes(spans):
        for root in roots.get(node, []):
            walk(root, 0)
    return out


def waterfall_rows(
    placed: Iterable[WaterfallSpan], *, node: str | None = None,
    only: Collection[str] | None = None,
) -> dict[str, list[Any]]:
    """Return the columns of the rows of one node (or all), of some families (or all)."""
    out: dict[str, list[Any]] = {name: [] for name in WATERFALL_COLUMNS}
    row = 0
    for s in placed:
        if (node is not None and s.node != node) or (only is not None and s.family not in only):
            continue
        values = {
            "row": row, "node": s.node, "name": s.name, "family": s.family, "depth": s.depth,
            "start_ms": round(s.start_ms, 3), "end_ms": round(s.end_ms, 3),
            "dur_ms": round(s.end_ms - s.start_ms, 3), "status": s.status,
            "color": _ERROR_COLOR if s.status == "error" else family_color(s.family),
            "label": "\u2003" * min(s.depth, 12) + s.name + (" \u2026" if s.running else ""),
            "attrs": s.attrs, "running": s.running,
        }
        for name in WATERFALL_COLUMNS:
            out[name].append(values[name])
        row += 1
    return out


def _attr_text(span: SpanRecord) -> str:
    lines = [f"{key} = {_value(value)}" for key, value in sorted(span.attributes.items())]
    if span.description:
        lines.append(f"error: {span.description}")
    for event in span.events[:20]:
        bits = " ".join(f"{k.rsplit('.', 1)[-1]}={_value(v)}" for k, v in event.attributes.items()
                        if not k.startswith("exception.stacktrace"))
        lines.append(f"\u2022 {event.name} {bits}".rstrip())
    if len(span.events) > 20:
        lines.append(f"\u2022 ... {len(span.events) - 20} more events")
    return "\n".join(lines)


def _value(value: AttributeValue) -> str:
    if isinstance(value, tuple):
        text = "[" + ", ".join(_value(v) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= _MAX_ATTR_TEXT else text[:_MAX_ATTR_TEXT - 1] + "\u2026"
