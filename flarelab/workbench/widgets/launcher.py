"""The peer launcher: pick a scenario, start and stop peers, make them act, watch the topology.

    launcher = PeerLauncher(runner, bus)
    launcher                                   # the controls and the live topology
    await launcher.start()                     # or press "start network"
    await launcher.act("dial TCP", "A", "relay")

The buttons run their action as a background task on the runner and write what happened to
the launcher's log. One button per registered action
(:data:`flarelab.workbench.playground.ACTIONS`): placeholders (AutoNAT, reserve, hole punch
until the Flare issue lands) are shown disabled, with what they wait for as tooltip.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from ..playground import ACTIONS, NAT_KINDS, Playground, Scenario
from .topology import TopologyView

if TYPE_CHECKING:
    from ...node import Node
    from ...tracing.bus import SpanBus
    from ..runner import TaskHandle, TrioRunner

__all__ = ["PeerLauncher"]

_PUBLIC = "public (no NAT)"


class PeerLauncher:
    """Controls for a :class:`~flarelab.workbench.playground.Playground` (module docstring)."""

    def __init__(self, runner: TrioRunner, bus: SpanBus, scenario: Scenario | None = None
                 ) -> None:
        self.runner = runner
        self.bus = bus
        self.scenario = scenario or Scenario()
        self.playground: Playground | None = None
        self.topology: TopologyView | None = None
        self._tasks: list[TaskHandle] = []
        self._widget: Any = None
        self._ui: dict[str, Any] = {}

    # ------------------------------------------------------------------ programmatic
    async def start(self, scenario: Scenario | None = None) -> Playground:
        """(Re)start the network with ``scenario`` (default: the controls' choice)."""
        await self.stop()
        self.scenario = scenario or self._scenario_from_controls()
        pg = Playground(self.scenario, bus=self.bus)
        self.playground = pg
        pg.on_peer.append(self._on_peer)
        self._tasks = [self.runner.start_soon(pg.run, name="playground")]
        await self.runner.run(pg.wait_started)
        assert pg.network is not None
        self.topology = TopologyView.of_network(pg.network, bus=self.bus)
        for name, node in pg.nodes.items():
            self.topology.track(node, name)
        self._tasks.append(self.runner.start_soon(self.topology.run, name="topology"))
        self._refresh()
        return pg

    async def stop(self) -> None:
        """Stop every peer and the network."""
        pg, self.playground = self.playground, None
        if pg is not None:
            pg.stop()
        for task in self._tasks:
            if task.name != "playground":
                task.cancel()  # live views run until cancelled; the playground ends by itself
            await task.finished
        self._tasks = []
        if self.topology is not None:
            self.topology.close()
        self._refresh()

    async def act(self, action: str, src: str, dst: str) -> Any:
        """Run a registered action in trio and return its result."""
        pg = self._playground()
        return await self.runner.run(pg.act, action, src, dst)

    async def start_peer(self, name: str) -> Node:
        """Start one peer."""
        return await self.runner.run(self._playground().start_peer, name)

    async def stop_peer(self, name: str) -> None:
        """Stop one peer."""
        await self.runner.run(self._playground().stop_peer, name)

    def _playground(self) -> Playground:
        if self.playground is None:
            from ...errors import LocalProtocolError

            raise LocalProtocolError("the network is not running: start it first")
        return self.playground

    def _on_peer(self, name: str, node: Node | None) -> None:
        if self.topology is not None:
            if node is not None:
                self.topology.track(node, name)
            else:
                self.topology.untrack(name)
        self._refresh()

    # ------------------------------------------------------------------ widget
    def _scenario_from_controls(self) -> Scenario:
        ui = self._ui
        if not ui:
            return self.scenario

        def kind(value: str) -> str | None:
            return None if value == _PUBLIC else value

        return Scenario(nat_a=kind(ui["nat_a"].value), nat_b=kind(ui["nat_b"].value),
                        latency_ms=float(ui["latency"].value), quic=bool(ui["quic"].value),
                        seed=self.scenario.seed)

    @property
    def widget(self) -> Any:
        """Return the launcher's ipywidgets (made on first use)."""
        if self._widget is None:
            self._widget = self._build()
            self._refresh()
        return self._widget

    def _build(self) -> Any:
        import ipywidgets as w

        sc = self.scenario
        kinds = [_PUBLIC, *NAT_KINDS]
        ui = self._ui
        ui["nat_a"] = w.Dropdown(description="NAT A", options=kinds, value=sc.nat_a or _PUBLIC)
        ui["nat_b"] = w.Dropdown(description="NAT B", options=kinds, value=sc.nat_b or _PUBLIC)
        ui["latency"] = w.IntSlider(description="latency ms", min=0, max=150,
                                    value=int(sc.latency_ms))
        ui["quic"] = w.Checkbox(description="QUIC", value=sc.quic)
        start = w.Button(description="start network", button_style="success", icon="play")
        stop = w.Button(description="stop network", icon="stop")
        start.on_click(lambda _: self._spawn(self.start))
        stop.on_click(lambda _: self._spawn(self.stop))
        ui["src"] = w.Dropdown(description="from", options=["A", "relay", "B"], value="A")
        ui["dst"] = w.Dropdown(description="to", options=["A", "relay", "B"], value="relay")
        buttons = []
        for name, action in ACTIONS.items():
            button = w.Button(description=name, disabled=not action.available,
                              tooltip=action.description)
            button.on_click(lambda _, n=name: self._spawn(self._act_from_ui, n))
            buttons.append(button)
        ui["peers"] = w.HTML()
        ui["log"] = w.HTML(layout=w.Layout(max_height="140px", overflow="auto"))
        ui["topology"] = w.Box()
        return w.VBox([
            w.HBox([ui["nat_a"], ui["nat_b"]]), w.HBox([ui["latency"], ui["quic"], start, stop]),
            ui["peers"], w.HBox([ui["src"], ui["dst"]]), w.HBox(buttons), ui["topology"],
            ui["log"],
        ])

    def _spawn(self, fn: Any, *args: Any) -> None:
        async def task() -> None:
            try:
                await fn(*args)
            except Exception as exc:  # shown to the learner, not raised into the kernel
                self._log(f"error: {type(exc).__name__}: {exc}")
            self._refresh()

        self.runner.loop.create_task(task())

    async def _act_from_ui(self, action: str) -> None:
        result = await self.act(action, self._ui["src"].value, self._ui["dst"].value)
        if isinstance(result, list):
            self._log(f"{action}: {result}")

    def _log(self, text: str) -> None:
        if self.playground is not None:
            self.playground.log.append(text)
        else:
            self._ui.setdefault("_orphans", []).append(text)
        self._refresh()

    def _refresh(self) -> None:
        ui = self._ui
        if "peers" not in ui:
            return
        pg = self.playground
        rows = []
        if pg is not None:
            for name in pg.hosts:
                node = pg.nodes.get(name)
                state = "running" if node is not None else "stopped"
                where = html.escape(" ".join(str(a) for a in node.listen_addrs())) if node else ""
                pid = node.peer_id.short() if node else ""
                rows.append(f"<tr><td><b>{html.escape(name)}</b></td><td>{state}</td>"
                            f"<td><code>{pid}</code></td><td><small>{where}</small></td></tr>")
        ui["peers"].value = ("<table>" + "".join(rows) + "</table>") if rows else (
            "<i>network not running</i>")
        lines = (pg.log if pg is not None else []) + ui.get("_orphans", [])
        ui["log"].value = "<br>".join(html.escape(x) for x in lines[-12:])
        if self.topology is not None and pg is not None:
            ui["topology"].children = [self.topology.widget]
        elif pg is None:
            ui["topology"].children = []

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
