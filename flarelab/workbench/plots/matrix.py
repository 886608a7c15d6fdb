"""The NAT-type matrix as Bokeh models: one grid per transport, and a table of every trial.

Each grid has A's NAT kind down and B's across; a cell is green when the peers went direct
(darker for a hole punch, lighter for B's connection reversal to a public A), red when they
stayed relayed, and says how long the upgrade took or why it failed (hover for the whole
reason, and for what RFC 4787 predicts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.models.widgets import DataTable, TableColumn
from bokeh.plotting import figure

if TYPE_CHECKING:
    from ...flare.report import FlareTrial

__all__ = ["OUTCOME_COLORS", "MatrixPlot", "kind_name"]

#: cell colour per outcome (anything else: grey)
OUTCOME_COLORS: Final = {
    "success": "#2ca02c", "direct_dial": "#98df8a", "connection_reversed": "#98df8a",
    "failed": "#d62728", "timeout": "#ff9896", "no_suitable_address": "#ffbb78",
    "protocol_error": "#9467bd",
}


def kind_name(kind: str | None) -> str:
    """Return a NAT kind's label (``public`` for no NAT)."""
    return kind or "public"


class MatrixPlot:
    """Grids and a table of trials (see the module docstring); ``layout`` shows them."""

    def __init__(self, trials: Sequence[FlareTrial], *, expected: Any = None,
                 title: str = "hole punch by NAT kinds") -> None:
        self.trials = list(trials)
        kinds: list[str] = []
        for t in self.trials:
            for k in (kind_name(t.nat_a), kind_name(t.nat_b)):
                if k not in kinds:
                    kinds.append(k)
        self.kinds = kinds
        transports = list(dict.fromkeys(t.transport for t in self.trials))
        self.sources: dict[str, ColumnDataSource] = {}
        grids = [self._grid(tr, expected, title) for tr in transports]
        self.table_source = ColumnDataSource(_table_data(self.trials, expected),
                                             name="flarelab-matrix-table")
        columns = [TableColumn(field=f, title=t, width=w) for f, t, w in (
            ("transport", "transport", 60), ("nat_a", "A's NAT", 120), ("nat_b", "B's NAT", 120),
            ("outcome", "outcome", 90), ("ms", "ms", 50), ("attempts", "tries", 40),
            ("model", "RFC 4787", 70), ("reason", "reason", 600))]
        self.table = DataTable(source=self.table_source, columns=columns, width=1150,
                               height=260, index_position=None)
        self.layout = column(row(*grids), self.table)

    def _grid(self, transport: str, expected: Any, title: str) -> Any:
        trials = [t for t in self.trials if t.transport == transport]
        data = _table_data(trials, expected)
        data["x"] = [kind_name(t.nat_b) for t in trials]
        data["y"] = [kind_name(t.nat_a) for t in trials]
        data["color"] = [OUTCOME_COLORS.get(t.outcome, "#bbbbbb") for t in trials]
        data["text"] = [f"{t.elapsed * 1000:.0f} ms" if t.direct and t.elapsed is not None
                        else ("direct" if t.direct else "relayed") for t in trials]
        source = ColumnDataSource(data, name=f"flarelab-matrix-{transport}")
        self.sources[transport] = source
        fig = figure(title=f"{title}: {transport}", x_range=FactorRange(factors=list(self.kinds)),
                     y_range=FactorRange(factors=self.kinds[::-1]), width=560, height=460,
                     toolbar_location=None, x_axis_label="B's NAT (DCUtR initiator)",
                     y_axis_label="A's NAT (dials through the relay)")
        cells = fig.rect("x", "y", 0.95, 0.95, source=source, color="color", alpha=0.85)
        fig.text("x", "y", text="text", source=source, text_align="center",
                 text_baseline="middle", text_font_size="8pt")
        fig.xaxis.major_label_orientation = 0.8
        fig.grid.visible = False
        fig.add_tools(HoverTool(renderers=[cells], tooltips=[
            ("A / B", "@y / @x"), ("outcome", "@outcome (@attempts tries)"),
            ("RFC 4787", "@model"), ("why", "@reason")]))
        return fig

    def counts(self, transport: str) -> dict[str, int]:
        """Return how many trials of ``transport`` went direct and stayed relayed."""
        trials = [t for t in self.trials if t.transport == transport]
        return {"direct": sum(t.direct for t in trials),
                "relayed": sum(not t.direct for t in trials)}


def _table_data(trials: Sequence[FlareTrial], expected: Any) -> dict[str, list[Any]]:
    return {
        "transport": [t.transport for t in trials],
        "nat_a": [kind_name(t.nat_a) for t in trials],
        "nat_b": [kind_name(t.nat_b) for t in trials],
        "outcome": [t.outcome for t in trials],
        "ms": [round(t.elapsed * 1000) if t.elapsed is not None else None for t in trials],
        "attempts": [t.attempts for t in trials],
        "model": [("" if expected is None else
                   "direct" if expected(t).success else "relayed") for t in trials],
        "reason": [t.reason or "" for t in trials],
    }
