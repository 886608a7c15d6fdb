"""The workbench: trio in the Jupyter kernel, live views of spans and networks, trace pages.

    from flarelab.workbench import setup_notebook, SequenceDiagram
    runner = setup_notebook()                  # BokehJS inline + trio in guest mode
    diagram = SequenceDiagram(bus)             # a span bus shared by your nodes
    runner.start_soon(diagram.run)
    diagram

* :class:`TrioRunner` (:mod:`.runner`): trio in guest mode on the kernel's asyncio loop.
* :mod:`.views`: the pure models (sequence diagram, waterfall, topology, time axis, lanes).
* :mod:`.plots`: their Bokeh figures; :mod:`.widgets`: the live notebook widgets.
* :class:`Playground` (:mod:`.playground`): the story's simnet scenario and its actions.
* :func:`write_trace_html` (:mod:`.html`): a trace file as one standalone HTML page.

A running node never imports this package (it needs bokeh and ipywidgets: the ``workbench``
extra); names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .html import trace_html, write_trace_html
    from .notebook import setup_notebook
    from .playground import ACTIONS, Playground, Scenario, register_action
    from .runner import RunnerClosedError, TaskHandle, TrioRunner
    from .views import SequenceBuilder, TimeAxis, TopologyModel
    from .widgets import PeerLauncher, SequenceDiagram, SpanWaterfall, TopologyView

_EXPORTS = {
    "ACTIONS": "playground",
    "PeerLauncher": "widgets",
    "Playground": "playground",
    "RunnerClosedError": "runner",
    "Scenario": "playground",
    "SequenceBuilder": "views",
    "SequenceDiagram": "widgets",
    "SpanWaterfall": "widgets",
    "TaskHandle": "runner",
    "TimeAxis": "views",
    "TopologyModel": "views",
    "TopologyView": "widgets",
    "TrioRunner": "runner",
    "register_action": "playground",
    "setup_notebook": "notebook",
    "trace_html": "html",
    "write_trace_html": "html",
}

__all__ = [
    "ACTIONS",
    "PeerLauncher",
    "Playground",
    "RunnerClosedError",
    "Scenario",
    "SequenceBuilder",
    "SequenceDiagram",
    "SpanWaterfall",
    "TaskHandle",
    "TimeAxis",
    "TopologyModel",
    "TopologyView",
    "TrioRunner",
    "register_action",
    "setup_notebook",
    "trace_html",
    "write_trace_html",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
