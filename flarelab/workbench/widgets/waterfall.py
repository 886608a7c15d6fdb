"""The live span waterfall widget: one node's spans as bars, filterable by protocol family.

    waterfall = SpanWaterfall(bus, node="A")
    runner.start_soon(waterfall.run)
    waterfall                         # a node dropdown, family checkboxes, and the bars

Hover a bar for the span's attributes and events. Picking a node or families redraws in the
kernel (the rows are few); new spans are drawn in batches, at most ``rate`` a second.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any, Final

from ...tracing.records import SpanRecord
from ..plots.waterfall import ALL_NODES, WaterfallPlot
from ..views.waterfall import waterfall_rows, waterfall_spans
from .live import LiveView

if TYPE_CHECKING:
    from ...tracing.bus import SpanBus

__all__ = ["SpanWaterfall"]

#: spans kept at most (the oldest ended ones go first)
MAX_SPANS: Final = 20_000


class SpanWaterfall(LiveView):
    """A live span table/waterfall for one node (or all), filterable by protocol family."""

    def __init__(self, bus: SpanBus | None = None, *, node: str | None = None,
                 families: Collection[str] | None = None, replay: bool = True,
                 rate: float = 4.0, max_spans: int = MAX_SPANS) -> None:
        super().__init__(rate=rate)
        self.node = node
        self.families: set[str] | None = set(families) if families is not None else None
        self.max_spans = max_spans
        self._spans: dict[tuple[str, str], SpanRecord] = {}
        self.plot = WaterfallPlot()
        self._controls: Any = None
        self._widget: Any = None
        self._known_nodes: list[str] = []
        self._known_families: list[str] = []
        if bus is not None:
            self.follow(bus, replay=replay)

    @classmethod
    def from_records(cls, records: Iterable[SpanRecord], **kwargs: Any) -> SpanWaterfall:
        """Return a waterfall of recorded spans (a trace file)."""
        view = cls(**kwargs)
        view.feed.extend(records)
        view.flush()
        return view

    # ------------------------------------------------------------------ drawing
    def flush(self) -> int:
        """Take the queued records and redraw if anything changed."""
        records = self.feed.take()
        spans = self._spans
        for record in records:
            key = (record.trace_id, record.span_id)
            if record.ended or key not in spans:
                spans[key] = record
        if len(spans) > self.max_spans:
            for key in [k for k, r in spans.items() if r.ended][: len(spans) - self.max_spans]:
                del spans[key]
        if records:
            self.refresh()
        return len(records)

    def refresh(self) -> None:
        """Redraw with the current node and family choice."""
        placed = waterfall_spans(self._spans.values())
        self._known_nodes = list(dict.fromkeys(s.node for s in placed))
        self._known_families = sorted({s.family for s in placed})
        if self.node is None and self._known_nodes:
            self.node = self._known_nodes[0]
        node = None if self.node == ALL_NODES else self.node
        self.plot.show(waterfall_rows(placed, node=node, only=self.families))
        self._sync_controls()

    def select(self, *, node: str | None = None,
               families: Collection[str] | None = None) -> None:
        """Show another node (``"all nodes"`` for every node) and/or only these families."""
        if node is not None:
            self.node = node
        if families is not None:
            self.families = set(families)
        self.refresh()

    @property
    def rows(self) -> int:
        """Return how many bars are drawn."""
        return len(self.plot.source.data["row"])

    # ------------------------------------------------------------------ display
    def _sync_controls(self) -> None:
        if self._controls is None:
            return
        nodes, families = self._controls
        options = [ALL_NODES, *self._known_nodes]
        if list(nodes.options) != options:
            nodes.options = options
        if self.node in options and nodes.value != self.node:
            nodes.value = self.node
        if list(families.options) != self._known_families:
            chosen = self._known_families if self.families is None else [
                f for f in self._known_families if f in self.families]
            families.options = self._known_families
            families.value = tuple(chosen)

    @property
    def widget(self) -> Any:
        """Return the notebook widget: a node dropdown, family choice and the figure."""
        if self._widget is None:
            import ipywidgets as w

            from .bokeh_widget import BokehWidget

            nodes = w.Dropdown(description="node", options=[ALL_NODES], value=ALL_NODES)
            families = w.SelectMultiple(description="protocols", options=[], rows=5)
            self._controls = (nodes, families)
            self._sync_controls()

            def on_node(change: dict[str, Any]) -> None:
                if change["new"] != self.node:
                    self.select(node=change["new"])

            def on_families(change: dict[str, Any]) -> None:
                chosen = set(change["new"])
                if chosen != self.families:
                    self.select(families=chosen)

            nodes.observe(on_node, names="value")
            families.observe(on_families, names="value")
            self._widget = w.VBox([w.HBox([nodes, families]), BokehWidget(self.plot.figure)])
        return self._widget

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<SpanWaterfall node={self.node} rows={self.rows}>"
