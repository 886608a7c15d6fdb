"""The live sequence diagram widget: the span bus, drawn as messages between lanes.

    diagram = SequenceDiagram(bus, lanes=["A", "NAT A", "relay", "NAT B", "B"])
    runner.start_soon(diagram.run)     # draws batches as spans arrive (<= 20 a second)
    diagram                            # show it (last expression of a cell)

or, for a trace file, ``SequenceDiagram.from_records(read_trace("trace.jsonl"))``. The replay
controls under the plot (play/pause, speed, scrubber) run in the browser; see
:mod:`flarelab.workbench.plots.sequence`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..plots.sequence import SequencePlot
from ..views.sequence import SequenceBuilder
from .live import DEFAULT_RATE, LiveView

if TYPE_CHECKING:
    from ...tracing.bus import SpanBus
    from ...tracing.records import SpanRecord

__all__ = ["SequenceDiagram"]


class SequenceDiagram(LiveView):
    """A live (or replayed) cross-peer sequence diagram; display it in a notebook cell.

    ``bus``: follow this span bus (its history first, with ``replay``). ``lanes``: the lane
    order to use for the lanes it names. ``grace_ms``: how long a message waits for its
    other half before it is drawn alone. ``rate``: batches drawn per second at most.
    """

    def __init__(self, bus: SpanBus | None = None, *, lanes: Sequence[str] = (),
                 title: str = "sequence diagram", height: int = 620, replay: bool = True,
                 grace_ms: float = 2000.0, rate: float = DEFAULT_RATE) -> None:
        super().__init__(rate=rate)
        self.builder = SequenceBuilder(preferred_lanes=lanes, grace_ms=grace_ms)
        self.plot = SequencePlot(self.builder, title=title, height=height)
        self._widget: Any = None
        if bus is not None:
            self.follow(bus, replay=replay)

    @classmethod
    def from_records(cls, records: Iterable[SpanRecord], **kwargs: Any) -> SequenceDiagram:
        """Return a diagram of recorded spans (a trace file), fully drawn."""
        diagram = cls(**kwargs)
        diagram.feed.extend(records)
        diagram.flush(settle=True)
        return diagram

    # ------------------------------------------------------------------ drawing
    def flush(self, *, settle: bool = False) -> int:
        """Draw the queued records in one batch; ``settle`` draws unpaired messages too."""
        records = self.feed.take()
        builder = self.builder
        for record in records:
            builder.add(record)
        builder.settle(everything=settle)
        items = builder.take_new()
        if items or builder.lanes_version != self.plot._lanes_version:
            self.plot.append(items)
        return len(records)

    def idle_after(self) -> float | None:
        """Return the grace period (s) if message halves wait for their other half."""
        return self.builder.grace_ns / 1e9 if self.builder._pending else None

    def on_idle(self) -> None:
        """Nothing more came: draw the halves that waited as one-sided messages."""
        self.flush(settle=True)

    # ------------------------------------------------------------------ state
    @property
    def lanes(self) -> list[str]:
        """Return the lanes, left to right."""
        return self.builder.lanes

    @property
    def messages(self) -> int:
        """Return how many message arrows the plot holds."""
        return len(self.plot.arrows.data["id"])

    def summary(self) -> dict[str, Any]:
        """Return what the diagram shows, in numbers (for notebooks' assertions)."""
        data = self.plot.arrows.data
        return {
            "lanes": self.lanes,
            "messages": len(data["id"]),
            "delivered": sum(1 for s in data["status"] if s == "delivered"),
            "marks": len(self.plot.marks.data["id"]),
            "phases": len(self.plot.phases.data["id"]),
            "records": self.builder.records,
            "batches": self.batches,
            "end_ms": self.plot.slider.end,
        }

    # ------------------------------------------------------------------ display
    @property
    def widget(self) -> Any:
        """Return the notebook widget (a :class:`~.bokeh_widget.BokehWidget`), made on first use."""
        if self._widget is None:
            from .bokeh_widget import BokehWidget

            self._widget = BokehWidget(self.plot.layout)
        return self._widget

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return (f"<SequenceDiagram lanes={self.lanes} messages={self.messages} "
                f"batches={self.batches}>")
