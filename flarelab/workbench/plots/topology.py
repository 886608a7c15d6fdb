"""The topology as Bokeh models: devices as markers, wires and connections as lines."""

from __future__ import annotations

from typing import Final

from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.plotting import figure

from ..views.topology import TopologyModel

__all__ = ["PLOT_NAME", "TopologyPlot"]

PLOT_NAME: Final = "flarelab-topology"


class TopologyPlot:
    """A topology figure; :meth:`update` redraws it from the model."""

    def __init__(self, model: TopologyModel, *, width: int = 760, height: int = 380,
                 title: str = "topology") -> None:
        self.model = model
        self.nodes = ColumnDataSource(model.node_columns(), name=f"{PLOT_NAME}-devices")
        self.edges = ColumnDataSource(model.edge_columns(), name=f"{PLOT_NAME}-edges")
        fig = figure(title=title, width=width, height=height, name=PLOT_NAME,
                     x_range=Range1d(start=-4.6, end=4.6), y_range=Range1d(start=-1.8, end=2.1),
                     tools="pan,wheel_zoom,reset,save", toolbar_location="right")
        fig.axis.visible = False
        fig.grid.visible = False
        edges = fig.multi_line(xs="xs", ys="ys", source=self.edges, line_color="color",
                               line_dash="dash", line_width="width", line_alpha=0.85)
        devices = fig.scatter(x="x", y="y", marker="marker", size="size", source=self.nodes,
                              fill_color="color", line_color="#222222", fill_alpha="alpha",
                              line_alpha="alpha")
        fig.text(x="x", y="y", text="name", source=self.nodes, text_align="center",
                 text_baseline="top", y_offset=16, text_font_size="9pt")
        fig.add_tools(HoverTool(renderers=[devices],
                                tooltips=[("", "@name (@kind)"), ("", "@detail"), ("", "@peer")]),
                      HoverTool(renderers=[edges], tooltips=[("", "@label"), ("", "@detail")],
                                line_policy="interp"))
        self.figure = fig

    def update(self) -> None:
        """Redraw from the model (devices, wires, connections)."""
        self.nodes.data = self.model.node_columns()
        self.edges.data = self.model.edge_columns()

    def connections(self) -> dict[str, int]:
        """Return how many connections of each kind are drawn."""
        counts: dict[str, int] = {}
        for kind in self.edges.data["kind"]:
            if kind != "link":
                counts[kind] = counts.get(kind, 0) + 1
        return counts
