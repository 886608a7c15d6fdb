"""Sequence-diagram items -> plain columns with coordinates (what a Bokeh source holds).

x is the lane's position (0 at the left), y the diagram time in ms from
:class:`~flarelab.workbench.views.timeaxis.TimeAxis` (time runs down the page). Every row
also carries what its tooltip shows. The functions return ``dict[str, list]``: the live
widget streams them into its sources, the standalone HTML file embeds them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from .palette import LANE_COLORS, family_color
from .sequence import ArrowItem, MarkItem, PhaseItem, SequenceBuilder

__all__ = [
    "ARROW_COLUMNS",
    "GAP_COLUMNS",
    "LANE_COLUMNS",
    "MARK_COLUMNS",
    "PHASE_COLUMNS",
    "arrow_columns",
    "gap_columns",
    "lane_columns",
    "mark_columns",
    "phase_columns",
]

Columns = dict[str, list[Any]]

ARROW_COLUMNS: Final = (
    "id", "x0", "y0", "x1", "y1", "xm", "ym", "label", "color", "dash", "status", "src", "dst",
    "family", "protocol", "span", "size", "t_ms", "latency_ms",
)
MARK_COLUMNS: Final = (
    "id", "x", "y", "marker", "angle", "color", "label", "kind", "lane", "detail", "t_ms",
)
PHASE_COLUMNS: Final = (
    "id", "left", "right", "y0", "y1", "color", "name", "lane", "status", "detail", "t_ms",
    "dur_ms",
)
GAP_COLUMNS: Final = ("left", "right", "y0", "y1", "ym", "label")
LANE_COLUMNS: Final = ("x", "name", "kind", "color", "behind")

#: how far (diagram ms) a one-sided message's arrow goes down on its way to half way
LOST_DROP: Final = 2.0
_HALF_WIDTH: Final = 0.28  # a phase band's half width, in lanes
_ERROR_COLOR: Final = "#d62728"
_MARK_STYLE: Final = {  # kind -> (marker, colour)
    "mapping": ("circle", "#555555"),
    "translated": ("triangle", "#555555"),
    "hairpinned": ("diamond", "#555555"),
    "answered": ("square_x", "#ff7f0e"),
    "filtered": ("x", _ERROR_COLOR),
    "error": ("x", _ERROR_COLOR),
}


def _empty(names: Sequence[str]) -> Columns:
    return {name: [] for name in names}


def _ms(builder: SequenceBuilder, t: int) -> float:
    origin = builder.axis.origin_ns or t
    return round((t - origin) / 1e6, 3)


def arrow_columns(builder: SequenceBuilder, arrows: Sequence[ArrowItem]) -> Columns:
    """Return the columns of message arrows."""
    out = _empty(ARROW_COLUMNS)
    pos = builder.axis.position
    for a in arrows:
        xs, xd = float(builder.lane_index(a.src)), float(builder.lane_index(a.dst))
        x0: float
        x1: float
        if a.status == "delivered":
            assert a.t_send is not None and a.t_recv is not None
            x0, y0, x1, y1 = xs, pos(a.t_send), xd, pos(a.t_recv)
        elif a.status == "send_only":
            assert a.t_send is not None
            y0 = pos(a.t_send)
            x0, x1, y1 = xs, (xs + xd) / 2, y0 + LOST_DROP
        elif a.status == "receive_only":
            assert a.t_recv is not None
            y1 = pos(a.t_recv)
            x0, y0, x1 = (xs + xd) / 2, y1 - LOST_DROP, xd
        else:  # remote: flat, at the one time we know
            y0 = y1 = pos(a.t_first)
            x0, x1 = xs, xd
        latency = (round((a.t_recv - a.t_send) / 1e6, 3)
                   if a.t_send is not None and a.t_recv is not None else math.nan)
        row = {
            "id": a.id, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
            "xm": (x0 + x1) / 2, "ym": (y0 + y1) / 2, "label": a.label,
            "color": family_color(a.family),
            "dash": "solid" if a.status == "delivered" else "dashed", "status": a.status,
            "src": a.src, "dst": a.dst, "family": a.family, "protocol": a.protocol or "",
            "span": a.span, "size": a.size if a.size is not None else -1,
            "t_ms": _ms(builder, a.t_first), "latency_ms": latency,
        }
        for name in ARROW_COLUMNS:
            out[name].append(row[name])
    return out


def mark_columns(builder: SequenceBuilder, marks: Sequence[MarkItem]) -> Columns:
    """Return the columns of marks (NAT events and errors)."""
    out = _empty(MARK_COLUMNS)
    for m in marks:
        x = builder.lane_index(m.lane)
        marker, color = _MARK_STYLE.get(m.kind, ("circle", "#555555"))
        angle = 0.0
        if marker == "triangle":
            angle = -math.pi / 2 if _points_right(builder, m) else math.pi / 2
        row = {
            "id": m.id, "x": x, "y": builder.axis.position(m.t), "marker": marker,
            "angle": angle, "color": color, "label": m.label, "kind": m.kind, "lane": m.lane,
            "detail": m.detail, "t_ms": _ms(builder, m.t),
        }
        for name in MARK_COLUMNS:
            out[name].append(row[name])
    return out


def _points_right(builder: SequenceBuilder, mark: MarkItem) -> bool:
    """True if a packet at a router travels to the right (outbound: away from its host)."""
    here = builder.lane_index(mark.lane)
    hosts = [builder.lane_index(h) for h in builder.lanes if builder.behind(h) == mark.lane]
    host_left = (bool(hosts) and min(hosts) < here) or not hosts
    outbound = mark.direction != "inbound"
    return outbound == host_left


def phase_columns(builder: SequenceBuilder, phases: Sequence[PhaseItem]) -> Columns:
    """Return the columns of phase bands."""
    out = _empty(PHASE_COLUMNS)
    pos = builder.axis.position
    for p in phases:
        x = builder.lane_index(p.lane)
        row = {
            "id": p.id, "left": x - _HALF_WIDTH, "right": x + _HALF_WIDTH,
            "y0": pos(p.t0), "y1": pos(p.t1),
            "color": _ERROR_COLOR if p.status == "error" else family_color(p.family),
            "name": p.name, "lane": p.lane, "status": p.status, "detail": p.detail,
            "t_ms": _ms(builder, p.t0), "dur_ms": round((p.t1 - p.t0) / 1e6, 3),
        }
        for name in PHASE_COLUMNS:
            out[name].append(row[name])
    return out


def gap_columns(builder: SequenceBuilder) -> Columns:
    """Return the columns of squeezed idle gaps (bands across every lane)."""
    out = _empty(GAP_COLUMNS)
    right = max(len(builder.lanes) - 0.5, 0.5)
    for gap in builder.axis.gaps:
        for name, value in (("left", -0.5), ("right", right), ("y0", gap.y0), ("y1", gap.y1),
                            ("ym", (gap.y0 + gap.y1) / 2), ("label", gap.label)):
            out[name].append(value)
    return out


def lane_columns(builder: SequenceBuilder) -> Columns:
    """Return the columns of the lanes, left to right."""
    out = _empty(LANE_COLUMNS)
    for i, name in enumerate(builder.lanes):
        kind = builder.lane_kind(name)
        for col, value in (("x", i), ("name", name), ("kind", kind),
                           ("color", LANE_COLORS[kind]), ("behind", builder.behind(name) or "")):
            out[col].append(value)
    return out
