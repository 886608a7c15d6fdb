"""The pure parts of the views: span records in, lanes, arrows, rows and layouts out.

Nothing here imports Bokeh, ipywidgets or trio, so the models are tested without a browser
and shared by the live widgets and the standalone HTML file.
"""

from .lanes import LaneInfo, order_lanes
from .sequence import ArrowItem, MarkItem, PhaseItem, SequenceBuilder, SequenceItems
from .timeaxis import Gap, TimeAxis
from .topology import TopologyModel, from_network
from .waterfall import waterfall_rows, waterfall_spans

__all__ = [
    "ArrowItem",
    "Gap",
    "LaneInfo",
    "MarkItem",
    "PhaseItem",
    "SequenceBuilder",
    "SequenceItems",
    "TimeAxis",
    "TopologyModel",
    "from_network",
    "order_lanes",
    "waterfall_rows",
    "waterfall_spans",
]
