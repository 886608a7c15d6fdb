"""The peer launcher: pick a scenario, start and stop peers, make them act, watch the topology.

    launcher = PeerLauncher(runner, bus)
    launcher                                   # the controls and the live topology
    await launcher.start()                     # or press "start network"
    await launcher.act("dial TCP", "A", "relay")

The buttons run their action as a background task on the runner and write what happened to
the launcher's log. One button per registered action
(:data:`flarelab.workbench.playground.ACTIONS`: dial, ping, AutoNAT, reserve, dial via relay,
hole punch; a placeholder would be shown disabled). The peers table -- peer ids, addresses,
reachability and its confidence, reservations, the last hole punch -- follows the nodes' own
events (:class:`~flarelab.workbench.services.PeerServices`), so it changes as they learn.
"""

from __future__ import annotations

import dataclasses
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
        if pg.services is not None:
            pg.services.on_change.append(lambda _name: self._refresh())
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

        return dataclasses.replace(
            self.scenario, nat_a=kind(ui["nat_a"].value), nat_b=kind(ui["nat_b"].value),
            latency_ms=float(ui["latency"].value), quic=bool(ui["quic"].value))

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
        names = ["A", "relay", "B", *sc.servers]
        ui["src"] = w.Dropdown(description="from", options=names, value="A")
        ui["dst"] = w.Dropdown(description="to", options=names, value="B")
        buttons = []
        for name, action in ACTIONS.items():
            button = w.Button(description=name, disabled=not action.available,
                              tooltip=action.description)
            button.on_click(lambda _, n=name: self._spawn(self._act_from_ui, n))
            buttons.append(button)
        ui["buttons"] = buttons
        ui["peers"] = w.HTML()
        ui["log"] = w.HTML(layout=w.Layout(max_height="140px", overflow="auto"))
        ui["topology"] = w.Box()
        return w.VBox([
            w.HBox([ui["nat_a"], ui["nat_b"]]), w.HBox([ui["latency"], ui["quic"], start, stop]),
            ui["peers"], w.HBox([ui["src"], ui["dst"]]),
            w.HBox(buttons, layout=w.Layout(flex_flow="row wrap")), ui["topology"],
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
        if isinstance(result, list | dict):
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
                rows.append(self._peer_row(pg, name))
        head = ("<tr><th>peer</th><th>state</th><th>peer id</th><th>reachability</th>"
                "<th>addresses</th><th>hole punch</th></tr>")
        ui["peers"].value = ("<table>" + head + "".join(rows) + "</table>") if rows else (
            "<i>network not running</i>")
        lines = (pg.log if pg is not None else []) + ui.get("_orphans", [])
        ui["log"].value = "<br>".join(html.escape(x) for x in lines[-12:])
        if self.topology is not None and pg is not None:
            ui["topology"].children = [self.topology.widget]
        elif pg is None:
            ui["topology"].children = []

    @staticmethod
    def _peer_row(pg: Playground, name: str) -> str:
        node = pg.nodes.get(name)
        state = pg.services.states.get(name) if pg.services is not None else None
        addrs = [str(a) for a in node.listen_addrs()] if node else []
        reach = punch = ""
        if node is not None and state is not None:
            reach = f"{state.reachability} ({state.confidence})"
            addrs += [f"{a}: {r}" for a, r in state.addresses.items()]
            addrs += [f"{a} (reserved)" for a in state.circuits[:1]]
            punch = state.punch
        where = "<br>".join(html.escape(a) for a in addrs)
        return (f"<tr><td><b>{html.escape(name)}</b></td>"
                f"<td>{'running' if node is not None else 'stopped'}</td>"
                f"<td><code>{node.peer_id.short() if node else ''}</code></td>"
                f"<td>{html.escape(reach)}</td><td><small>{where}</small></td>"
                f"<td><small>{html.escape(punch)}</small></td></tr>")

    def state(self) -> dict[str, dict[str, Any]]:
        """Return what the peers table shows, per peer (for notebooks' assertions)."""
        pg = self.playground
        if pg is None or pg.services is None:
            return {}
        return {name: dataclasses.asdict(state) for name, state in pg.services.states.items()}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
