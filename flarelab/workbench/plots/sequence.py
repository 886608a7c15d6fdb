"""The sequence diagram as Bokeh models, with replay controls that run in the browser.

:class:`SequencePlot` draws what a :class:`~flarelab.workbench.views.sequence.SequenceBuilder`
made: lanes as vertical lines (names along the top), time running down, message arrows,
NAT marks, phase bands and squeezed gaps. The same object serves the live notebook widget
(:class:`~flarelab.workbench.widgets.SequenceDiagram` streams new rows into it) and the
standalone HTML file (:mod:`flarelab.workbench.html`).

Replay happens in BokehJS, with no round trip to the kernel: the scrubber (a ``Slider``) is
a cursor in diagram time; a ``CustomJSFilter`` shows only what happened before it, and
``CustomJSTransform``\\ s move each arrow's tip along its way, so messages fly from lane to
lane as the cursor moves; the play button advances the cursor at the chosen speed. Nothing
the animation does writes data back to Python (only the cursor's value and the buttons'
state change), so playing never loads the kernel.
"""

from __future__ import annotations

from typing import Any, Final

from bokeh.core.properties import field
from bokeh.layouts import column, row
from bokeh.models import (
    CDSView,
    ColumnDataSource,
    CustomJS,
    CustomJSFilter,
    CustomJSTransform,
    DataRange1d,
    FixedTicker,
    HoverTool,
    Range1d,
)
from bokeh.models.annotations import Arrow, Span, VeeHead
from bokeh.models.renderers import GlyphRenderer
from bokeh.models.widgets import Select, Slider, Toggle
from bokeh.plotting import figure
from bokeh.transform import transform

from ..views.columns import (
    ARROW_COLUMNS,
    GAP_COLUMNS,
    LANE_COLUMNS,
    MARK_COLUMNS,
    PHASE_COLUMNS,
    Columns,
    arrow_columns,
    gap_columns,
    lane_columns,
    mark_columns,
    phase_columns,
)
from ..views.sequence import SequenceBuilder, SequenceItems

__all__ = ["PLOT_NAME", "SPEEDS", "SequencePlot"]

#: the figure's Bokeh name (tests find it with ``Bokeh.documents[i].get_model_by_name``)
PLOT_NAME: Final = "flarelab-sequence"
#: replay speeds offered: diagram ms per real ms
SPEEDS: Final = ("0.02", "0.05", "0.1", "0.25", "0.5", "1", "2", "5")
DEFAULT_SPEED: Final = "0.1"
#: rows kept per source at most (the oldest go first, as ``stream(rollover=)`` does)
MAX_ROWS: Final = 50_000
_LANE_WIDTH: Final = 170
_FAR: Final = 1e12

_COLUMN_JS: Final = "const d = source.data; const g = (n) => d instanceof Map ? d.get(n) : d[n];"
_VISIBLE_JS: Final = _COLUMN_JS + """
const t = g(col); const c = cursor.value; const out = new Array(t.length);
for (let i = 0; i < t.length; i++) out[i] = t[i] <= c + 1e-9;
return out;"""
_TIP_Y_JS: Final = _COLUMN_JS + """
const y0 = g('y0'), c = cursor.value, out = new Float64Array(xs.length);
for (let i = 0; i < xs.length; i++) out[i] = Math.min(xs[i], Math.max(y0[i], c));
return out;"""
_TIP_X_JS: Final = _COLUMN_JS + """
const x0 = g('x0'), y0 = g('y0'), y1 = g('y1'), c = cursor.value;
const out = new Float64Array(xs.length);
for (let i = 0; i < xs.length; i++) {
  const span = y1[i] - y0[i];
  let f = span > 0 ? (c - y0[i]) / span : (c >= y0[i] ? 1 : 0);
  f = Math.max(0, Math.min(1, f));
  out[i] = x0[i] + (xs[i] - x0[i]) * f;
}
return out;"""
_ALPHA_JS: Final = """
const c = cursor.value, out = new Float64Array(xs.length);
for (let i = 0; i < xs.length; i++) out[i] = xs[i] <= c + 1e-9 ? 1 : 0;
return out;"""
_CLIP_JS: Final = _COLUMN_JS + """
const y0 = g('y0'), c = cursor.value, out = new Float64Array(xs.length);
for (let i = 0; i < xs.length; i++) out[i] = Math.min(xs[i], Math.max(y0[i], c));
return out;"""
_ON_CURSOR_JS: Final = """
for (const s of sources) s.change.emit();
line.location = cb_obj.value;"""
_PLAY_JS: Final = """
const key = '__flarelab_play_' + toggle.id;
if (window[key]) { clearInterval(window[key]); window[key] = null; }
if (!toggle.active) { toggle.label = '\u25b6 play'; return; }
toggle.label = '\u275a\u275a pause';
if (slider.value >= slider.end - 1e-9) slider.value = slider.start;
let last = performance.now();
window[key] = setInterval(() => {
  const now = performance.now(), dt = now - last; last = now;
  let v = slider.value + dt * parseFloat(speed.value);
  if (v >= slider.end) { slider.value = slider.end; toggle.active = false; return; }
  slider.value = v;
}, 40);"""


class SequencePlot:
    """Bokeh models of one sequence diagram (see the module docstring); ``.layout`` shows it."""

    def __init__(self, builder: SequenceBuilder, *, title: str = "sequence diagram",
                 height: int = 620, max_rows: int = MAX_ROWS) -> None:
        self.builder = builder
        self.max_rows = max_rows
        self.arrows = ColumnDataSource(_empty(ARROW_COLUMNS), name=f"{PLOT_NAME}-arrows")
        self.marks = ColumnDataSource(_empty(MARK_COLUMNS), name=f"{PLOT_NAME}-marks")
        self.phases = ColumnDataSource(_empty(PHASE_COLUMNS), name=f"{PLOT_NAME}-phases")
        self.gaps = ColumnDataSource(_empty(GAP_COLUMNS), name=f"{PLOT_NAME}-gaps")
        self.lanes = ColumnDataSource(_lane_data(lane_columns(builder)),
                                      name=f"{PLOT_NAME}-lanes")
        self.slider = Slider(start=0, end=1, value=1, step=0.1, title="replay: diagram time (ms)",
                             sizing_mode="stretch_width", name=f"{PLOT_NAME}-cursor")
        self.play = Toggle(label="\u25b6 play", active=False, width=90,
                           name=f"{PLOT_NAME}-play")
        speeds: list[str | tuple[Any, str]] = [(s, f"{s}\u00d7") for s in SPEEDS]
        self.speed = Select(options=speeds, value=DEFAULT_SPEED,
                            width=80, name=f"{PLOT_NAME}-speed")
        self.figure = self._figure(title, height)
        self.cursor_line = Span(location=1, dimension="width", line_color="#d62728",
                                line_alpha=0.5, line_dash="dotted", line_width=1)
        self.figure.add_layout(self.cursor_line)
        self._wire()
        self.layout = column(self.figure, row(self.play, self.speed, self.slider,
                                              sizing_mode="stretch_width"),
                             name=f"{PLOT_NAME}-layout")
        self._lanes_version = -1
        self._end = 0.0
        self.redraw()

    # ------------------------------------------------------------------ building
    def _figure(self, title: str, height: int) -> Any:
        fig = figure(title=title, height=height, width=self._width(), name=PLOT_NAME,
                     x_range=Range1d(start=-0.6, end=0.6), y_range=DataRange1d(flipped=True),
                     tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom",
                     x_axis_location="above", y_axis_label="ms", toolbar_location="right")
        fig.xgrid.visible = False
        fig.ygrid.grid_line_alpha = 0.25
        fig.xaxis.ticker = FixedTicker(ticks=[])
        fig.xaxis.major_label_text_font_style = "bold"
        fig.xaxis.major_label_text_font_size = "11pt"
        fig.xaxis.major_tick_line_color = None
        fig.xaxis.axis_line_color = None
        cursor = self.slider
        visible = {col: CustomJSFilter(args={"cursor": cursor, "col": col}, code=_VISIBLE_JS)
                   for col in ("y0", "y1", "y")}
        fig.segment(x0="x", x1="x", y0="top", y1="bottom", source=self.lanes, color="color",
                    line_width=2, line_alpha=0.35)
        fig.quad(left="left", right="right", top="y0", bottom="y1", source=self.gaps,
                 fill_color="#eeeeee", fill_alpha=0.8, line_color=None, hatch_pattern="/",
                 hatch_alpha=0.15)
        fig.text(x="left", y="ym", text="label", source=self.gaps, text_font_size="8pt",
                 text_color="#777777", text_baseline="middle", x_offset=4)
        clip = CustomJSTransform(args={"cursor": cursor, "source": self.phases}, v_func=_CLIP_JS)
        phases = fig.quad(left="left", right="right", top="y0",
                          bottom=transform("y1", clip),  # type: ignore[arg-type]
                          source=self.phases, fill_color="color", fill_alpha=0.16,
                          line_color="color", line_alpha=0.35,
                          view=CDSView(filter=visible["y0"]))
        tip_x = CustomJSTransform(args={"cursor": cursor, "source": self.arrows},
                                  v_func=_TIP_X_JS)
        tip_y = CustomJSTransform(args={"cursor": cursor, "source": self.arrows},
                                  v_func=_TIP_Y_JS)
        alpha = CustomJSTransform(args={"cursor": cursor}, v_func=_ALPHA_JS)
        arrows = fig.segment(x0="x0", y0="y0", x1=transform("x1", tip_x),  # type: ignore[arg-type]
                             y1=transform("y1", tip_y),  # type: ignore[arg-type]
                             source=self.arrows, line_color="color", line_width=1.6,
                             line_dash=field("dash"), view=CDSView(filter=visible["y0"]))
        head = VeeHead(size=8, fill_color="color", line_color="color",
                       fill_alpha=transform("y0", alpha),  # type: ignore[arg-type]
                       line_alpha=transform("y0", alpha))  # type: ignore[arg-type]
        fig.add_layout(Arrow(source=self.arrows, x_start="x0", y_start="y0",
                             x_end=transform("x1", tip_x),  # type: ignore[arg-type]
                             y_end=transform("y1", tip_y),  # type: ignore[arg-type]
                             end=head, line_alpha=0))  # type: ignore[call-arg]
        fig.text(x="xm", y="ym", text="label", source=self.arrows, text_font_size="7.5pt",
                 text_color="color", text_align="center", text_baseline="bottom",
                 y_offset=-1, view=CDSView(filter=visible["y1"]))
        marks = fig.scatter(x="x", y="y", marker="marker", angle="angle", source=self.marks,
                            size=9, fill_color="color", line_color="color", fill_alpha=0.8,
                            view=CDSView(filter=visible["y"]))
        fig.text(x="x", y="y", text="label", source=self.marks, text_font_size="7.5pt",
                 text_color="color", text_baseline="middle", x_offset=8,
                 view=CDSView(filter=visible["y"]))
        y_range: Any = fig.y_range
        y_range.renderers = [phases, arrows, marks]  # not the endless lane lines
        fig.add_tools(
            _hover(arrows, [("message", "@label (@size B)"), ("from \u2192 to", "@src \u2192 @dst"),
                            ("span", "@span @protocol"), ("sent at", "@t_ms ms"),
                            ("latency", "@latency_ms ms"), ("status", "@status")]),
            _hover(marks, [("where", "@lane: @kind"), ("what", "@detail"), ("at", "@t_ms ms")]),
            _hover(phases, [("step", "@lane: @name"), ("outcome", "@status"),
                            ("detail", "@detail"), ("at", "@t_ms ms for @dur_ms ms")]),
        )
        return fig

    def _wire(self) -> None:
        sources = [self.arrows, self.marks, self.phases]
        self.slider.js_on_change("value", CustomJS(
            args={"sources": sources, "line": self.cursor_line}, code=_ON_CURSOR_JS))
        self.play.js_on_change("active", CustomJS(
            args={"toggle": self.play, "slider": self.slider, "speed": self.speed},
            code=_PLAY_JS))

    def _width(self) -> int:
        return max(640, _LANE_WIDTH * max(len(self.builder.lanes), 1) + 120)

    # ------------------------------------------------------------------ updating
    @property
    def rows(self) -> int:
        """Return how many arrows, marks and phases the sources hold."""
        return (len(self.arrows.data["id"]) + len(self.marks.data["id"])
                + len(self.phases.data["id"]))

    def redraw(self) -> None:
        """Redraw everything from the builder (after the lanes changed)."""
        b = self.builder
        items = b.items()
        self.arrows.data = arrow_columns(b, items.arrows[-self.max_rows:])
        self.marks.data = mark_columns(b, items.marks[-self.max_rows:])
        self.phases.data = phase_columns(b, items.phases[-self.max_rows:])
        self._sync_lanes()
        self._sync_end(follow=True)

    def append(self, items: SequenceItems, *, follow: bool | None = None) -> None:
        """Add new items (one ``stream`` per source); redraw instead if the lanes changed.

        ``follow`` moves the cursor to the new end (default: if it was at the old end).
        """
        if follow is None:
            follow = self.slider.value >= self._end - 1e-6
        if self.builder.lanes_version != self._lanes_version:
            self.redraw()
            return
        b = self.builder
        for source, data in ((self.arrows, arrow_columns(b, items.arrows)),
                             (self.marks, mark_columns(b, items.marks)),
                             (self.phases, phase_columns(b, items.phases))):
            if data["id"]:
                source.stream(dict(data), rollover=self.max_rows)  # type: ignore[arg-type]
        gaps = gap_columns(b)
        if len(gaps["y0"]) != len(self.gaps.data["y0"]):
            self.gaps.data = gaps
        self._sync_end(follow=follow)

    def _sync_lanes(self) -> None:
        b = self.builder
        self._lanes_version = b.lanes_version
        lanes = lane_columns(b)
        self.lanes.data = _lane_data(lanes)
        n = len(lanes["x"])
        fig = self.figure
        fig.xaxis.ticker.ticks = list(range(n))
        fig.xaxis.major_label_overrides = {i: name for i, name in enumerate(lanes["name"])}
        fig.x_range.start, fig.x_range.end = -0.6, max(n - 0.4, 0.6)
        fig.width = self._width()
        self.gaps.data = gap_columns(b)

    def _sync_end(self, *, follow: bool) -> None:
        end = max(self.builder.axis.end, 1.0)
        self._end = end
        self.slider.end = end
        if follow:
            self.slider.value = end
            self.cursor_line.location = end


def _hover(renderer: GlyphRenderer, tooltips: list[tuple[str, str]]) -> HoverTool:
    return HoverTool(renderers=[renderer], tooltips=tooltips)


def _empty(names: tuple[str, ...]) -> Columns:
    return {name: [] for name in names}


def _lane_data(lanes: Columns) -> Columns:
    data = dict(lanes)
    n = len(lanes[LANE_COLUMNS[0]])
    data["top"] = [-_FAR] * n
    data["bottom"] = [_FAR] * n
    return data
