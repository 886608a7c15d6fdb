"""The span waterfall as Bokeh models: one bar per span, attributes and events on hover.

:class:`WaterfallPlot` shows the rows of :func:`~flarelab.workbench.views.waterfall.waterfall_rows`.
The live widget refilters in Python (ipywidgets pick the node and families); the standalone
HTML file uses :func:`static_waterfall`, whose Bokeh ``Select``/``MultiChoice`` filter the
rows in the browser.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, CustomJS, DataRange1d, HoverTool
from bokeh.models.widgets import MultiChoice, Select
from bokeh.plotting import figure

from ..views.waterfall import WATERFALL_COLUMNS, WaterfallSpan, waterfall_rows

__all__ = ["ALL_NODES", "PLOT_NAME", "WaterfallPlot", "static_waterfall"]

PLOT_NAME: Final = "flarelab-waterfall"
#: the node choice that shows every node's spans
ALL_NODES: Final = "all nodes"
_ROW_PX: Final = 16
_TOOLTIP: Final = """
<div style="max-width: 520px">
  <div><b>@name</b> on <b>@node</b> &mdash; @dur_ms ms (@status)</div>
  <div style="white-space: pre-wrap; font-family: monospace; font-size: 10px">@attrs</div>
</div>"""
_FILTER_JS: Final = """
const d = full.data, g = (n) => d instanceof Map ? d.get(n) : d[n];
const names = %s;
const want = new Set(families.value), node = nodes.value, all = node === '%s';
const out = {};
for (const n of names) out[n] = [];
const fams = g('family'), ns = g('node');
let row = 0;
for (let i = 0; i < fams.length; i++) {
  if ((!all && ns[i] !== node) || !want.has(fams[i])) continue;
  for (const n of names) out[n].push(n === 'row' ? row : g(n)[i]);
  row++;
}
shown.data = out;
fig.height = Math.max(%d, Math.min(%d, 60 + %d * row));
"""


class WaterfallPlot:
    """A waterfall figure and its source; :meth:`show` replaces the rows."""

    min_height: Final = 220
    max_height: Final = 1400

    def __init__(self, *, title: str = "spans", width: int = 900) -> None:
        self.source = ColumnDataSource({name: [] for name in WATERFALL_COLUMNS},
                                       name=f"{PLOT_NAME}-rows")
        fig = figure(title=title, width=width, height=self.min_height, name=PLOT_NAME,
                     y_range=DataRange1d(flipped=True, range_padding=0.02),
                     tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
                     x_axis_label="ms since the first span", toolbar_location="right")
        fig.yaxis.visible = False
        fig.ygrid.visible = False
        bars = fig.hbar(y="row", left="start_ms", right="end_ms", height=0.72,
                        source=self.source, fill_color="color", line_color="color",
                        fill_alpha=0.55, line_alpha=0.9)
        fig.text(x="start_ms", y="row", text="label", source=self.source,
                 text_font_size="8pt", text_baseline="middle", x_offset=3,
                 text_color="#222222")
        fig.add_tools(HoverTool(renderers=[bars], tooltips=_TOOLTIP))
        self.figure = fig

    def show(self, rows: dict[str, list[Any]]) -> None:
        """Show these rows (the columns of :func:`waterfall_rows`)."""
        self.source.data = rows
        self.figure.height = self.height_for(len(rows["row"]))

    def height_for(self, rows: int) -> int:
        """Return the figure height that fits ``rows`` bars."""
        return max(self.min_height, min(self.max_height, 60 + _ROW_PX * rows))


def static_waterfall(placed: Sequence[WaterfallSpan], node_names: Sequence[str],
                     family_names: Sequence[str]) -> Any:
    """Return a waterfall with a node ``Select`` and a family ``MultiChoice`` that filter it
    in the browser (for the standalone HTML file)."""
    plot = WaterfallPlot(title="spans by node (hover a bar for its attributes and events)")
    full = ColumnDataSource(waterfall_rows(placed), name=f"{PLOT_NAME}-all")
    first = node_names[0] if node_names else ALL_NODES
    plot.show(waterfall_rows(placed, node=first if node_names else None))
    choices: list[str | tuple[Any, str]] = [ALL_NODES, *node_names]
    nodes = Select(title="node", value=first, options=choices, width=180,
                   name=f"{PLOT_NAME}-node")
    families = MultiChoice(title="protocols", value=list(family_names),
                           options=list(family_names), sizing_mode="stretch_width",
                           name=f"{PLOT_NAME}-families")
    code = _FILTER_JS % (json.dumps(list(WATERFALL_COLUMNS)), ALL_NODES, plot.min_height,
                         plot.max_height, _ROW_PX)
    callback = CustomJS(args={"full": full, "shown": plot.source, "nodes": nodes,
                              "families": families, "fig": plot.figure}, code=code)
    nodes.js_on_change("value", callback)
    families.js_on_change("value", callback)
    return column(row(nodes, families, sizing_mode="stretch_width"), plot.figure,
                  sizing_mode="stretch_width")
