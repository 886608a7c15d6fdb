"""The notebook widgets: live views of the span bus and a simulated network, and controls.

* :class:`SequenceDiagram`: the animated cross-peer sequence diagram, with replay.
* :class:`SpanWaterfall`: a span table/waterfall for any node, filterable by protocol.
* :class:`TopologyView`: hosts, NAT routers and connections coloured by kind.
* :class:`BokehWidget`: jupyter_bokeh's widget for any Bokeh layout, minus the page's echoes
  of the kernel's own changes (which would reset the kernel's data; see its module).
* :class:`PeerLauncher`: a simnet scenario's controls (start/stop peers, dial, ping, and the
  extension points for AutoNAT, reservations and hole punching).

Each live view is fed in batches by a trio task (``runner.start_soon(view.run)``) and shows
itself as the last expression of a cell.
"""

from .bokeh_widget import BokehWidget
from .launcher import PeerLauncher
from .live import LiveFeed, LiveView
from .sequence import SequenceDiagram
from .topology import TopologyView
from .waterfall import SpanWaterfall

__all__ = [
    "BokehWidget",
    "LiveFeed",
    "LiveView",
    "PeerLauncher",
    "SequenceDiagram",
    "SpanWaterfall",
    "TopologyView",
]
