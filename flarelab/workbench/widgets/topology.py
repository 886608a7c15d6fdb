"""The live topology widget: a simnet network's devices, and who is connected to whom.

    topo = TopologyView.of_network(network, bus=bus)
    topo.track(node_a); topo.track(node_b)     # their connections, live
    runner.start_soon(topo.run)
    topo

Connections come from the tracked nodes themselves (``node.connections()``), redrawn when a
node's event bus reports a connection opened or closed; failed dials come from the span bus
(``node.dial`` spans that ended in error). Nothing polls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...tracing import spans
from ..plots.topology import TopologyPlot
from ..views.topology import Link, TopologyModel, from_network
from .live import LiveView

if TYPE_CHECKING:
    from ...node import Node
    from ...node.events import Event
    from ...simnet import Network
    from ...tracing.bus import SpanBus

__all__ = ["TopologyView"]


class TopologyView(LiveView):
    """A live topology view (see the module docstring)."""

    def __init__(self, model: TopologyModel, *, bus: SpanBus | None = None,
                 rate: float = 5.0, title: str = "topology") -> None:
        super().__init__(rate=rate)
        self.model = model
        self.plot = TopologyPlot(model, title=title)
        self._nodes: dict[str, Node] = {}
        self._unlisten: dict[str, Any] = {}
        self._names: dict[str, str] = {}  # peer id -> device name
        self._widget: Any = None
        if bus is not None:
            self.follow(bus, replay=True)

    @classmethod
    def of_network(cls, network: Network, **kwargs: Any) -> TopologyView:
        """Return a view of a simnet network's hosts and routers."""
        return cls(from_network(network), **kwargs)

    # ------------------------------------------------------------------ nodes
    def track(self, node: Node, name: str | None = None) -> None:
        """Follow a node's connections (``name``: its device, default the node's label)."""
        name = name or node.label
        if name not in self.model.devices:
            self.model.add_host(name, detail="(not on the simulated network)")
        self._nodes[name] = node
        self._names[str(node.peer_id)] = name
        self.model.set_running(name, True, peer_id=str(node.peer_id))
        self._unlisten[name] = node.events.add_listener(self._on_event)
        self.feed.poke()

    def untrack(self, name: str) -> None:
        """Stop following a node (it stopped)."""
        self._nodes.pop(name, None)
        unlisten = self._unlisten.pop(name, None)
        if unlisten is not None:
            unlisten()
        if name in self.model.devices:
            self.model.set_running(name, False)
        self.feed.poke()

    def _on_event(self, event: Event) -> None:
        from ...node.events import ConnectionClosed, ConnectionOpened

        if isinstance(event, ConnectionOpened | ConnectionClosed):
            self.feed.poke()

    # ------------------------------------------------------------------ drawing
    def flush(self) -> int:
        """Recompute the connections and failures and redraw."""
        poked = self.feed.poked
        records = self.feed.take()
        for record in records:
            if record.ended and record.name == spans.NODE_DIAL and record.status == "error":
                remote = record.attributes.get(spans.LIBP2P_REMOTE_PEER_ID)
                dst = self._names.get(remote) if isinstance(remote, str) else None
                src = record.node_label
                if src is not None and dst is not None:
                    self.model.add_failure(src, dst, record.description or "dial failed")
        self.model.set_connections(self._links())
        self.plot.update()
        return len(records) + poked

    def _links(self) -> list[Link]:
        links = []
        for name, node in self._nodes.items():
            for conn in node.connections():
                other = self._names.get(str(conn.remote_peer))
                if other is None:
                    continue
                via = None
                text = str(conn.remote_addr)
                if conn.limited and "/p2p-circuit" in text:
                    relay_id = text.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[-1]
                    via = self._names.get(relay_id)
                links.append(Link(name, other, "relayed" if conn.limited else "direct", via,
                                  f"{conn.transport} {conn.remote_addr}"))
        return links

    def connections(self) -> dict[str, int]:
        """Return how many connections of each kind are drawn."""
        return self.plot.connections()

    # ------------------------------------------------------------------ display
    @property
    def widget(self) -> Any:
        """Return the notebook widget (a :class:`~.bokeh_widget.BokehWidget`)."""
        if self._widget is None:
            from .bokeh_widget import BokehWidget

            self._widget = BokehWidget(self.plot.figure)
        return self._widget

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Stop following the bus and the nodes."""
        super().close()
        for name in list(self._nodes):
            self.untrack(name)
