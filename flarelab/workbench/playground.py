"""A simnet scenario the notebooks drive: peers behind NATs, a public relay, actions on them.

:class:`Playground` builds the story's network on the simulated internet -- ``A`` behind
``NAT A``, the public ``relay``, ``B`` behind ``NAT B`` (either side may be public) -- runs a
flarelab node on each host and offers the actions a learner triggers: start and stop peers,
dial (TCP or QUIC), ping, and -- with ``Scenario(services=True)``, the default -- the story's
protocols (:mod:`flarelab.workbench.services`): AutoNAT, a relay reservation, a dial through
the relay, a DCUtR hole punch. Every node and router traces to one span bus, so the widgets
show it all. It is a trio object: run it as a background task of the notebook's runner::

    playground = Playground(Scenario(nat_a="home_router", nat_b="symmetric"), bus=bus)
    runner.start_soon(playground.run)
    await runner.run(playground.wait_started)
    await runner.run(playground.dial, "A", "relay")

**Extension point**: :func:`register_action` adds a named action, ``async def
fn(playground, src, dst)``; :class:`~flarelab.workbench.widgets.launcher.PeerLauncher` shows
a button for every registered action (:mod:`.services` registers AutoNAT, reserve, dial via
relay and hole punch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import trio

from ..errors import LocalProtocolError

if TYPE_CHECKING:
    from ..node import Connection, Node
    from ..protocols.relay import Limit
    from ..simnet import Host, Network
    from ..tracing.bus import SpanBus
    from ..tracing.clock import TrioClock

__all__ = [
    "ACTIONS",
    "NAT_KINDS",
    "Action",
    "Playground",
    "Scenario",
    "register_action",
]

#: NAT kinds a scenario can pick (simnet presets), and None for a public host
NAT_KINDS: Final = ("home_router", "full_cone", "restricted_cone", "port_restricted_cone",
                    "symmetric", "answering_router")
Transport = Literal["tcp", "quic"]


@dataclass(frozen=True)
class Scenario:
    """The network: NAT kinds of A's and B's routers (None: public), latency, seed."""

    nat_a: str | None = "home_router"
    nat_b: str | None = "home_router"
    #: one-way latency of every internet link, ms (a packet between two public hosts
    #: crosses two links)
    latency_ms: float = 10.0
    relay: bool = True
    quic: bool = True
    seed: int = 0
    peers: tuple[str, ...] = field(default=("A", "relay", "B"))
    #: run AutoNAT, the relay service and DCUtR on the peers (:mod:`.services`)
    services: bool = True
    #: A and B upgrade relayed connections with DCUtR (False: relayed ones stay relayed)
    dcutr: bool = True
    #: extra public hosts ``S1``.. that only serve AutoNAT
    autonat_servers: int = 0
    #: limits of each relayed connection: seconds and bytes per direction (0: none)
    circuit_duration: int = 120
    circuit_data: int = 1 << 17

    def __post_init__(self) -> None:
        for kind in (self.nat_a, self.nat_b):
            if kind is not None and kind not in NAT_KINDS:
                raise LocalProtocolError(f"unknown NAT kind {kind!r}; known: {NAT_KINDS}")
        if self.latency_ms < 0:
            raise LocalProtocolError(f"latency must be >= 0 ms, not {self.latency_ms}")
        if not 0 <= self.autonat_servers <= 8:
            raise LocalProtocolError("autonat_servers must be 0 to 8")

    @property
    def servers(self) -> list[str]:
        """Return the names of the AutoNAT-only servers."""
        return [f"S{i + 1}" for i in range(self.autonat_servers)]

    def circuit_limit(self) -> Limit:
        """Return the relay's limit for each relayed connection."""
        from ..protocols.relay import Limit

        return Limit(duration=self.circuit_duration, data=self.circuit_data)

    @property
    def lanes(self) -> list[str]:
        """Return the sequence diagram's lane order for this scenario."""
        out = ["A"] + (["NAT A"] if self.nat_a else [])
        out += ["relay"] if self.relay else []
        out += self.servers
        out += (["NAT B"] if self.nat_b else []) + ["B"]
        return out


ActionFn = Callable[["Playground", str, str], Awaitable[Any]]


@dataclass(frozen=True)
class Action:
    """A named thing a learner can make peers do (see the module docstring)."""

    name: str
    fn: ActionFn | None
    description: str

    @property
    def available(self) -> bool:
        """True if the action can run (False for a placeholder)."""
        return self.fn is not None


#: registered actions, by name (the extension point)
ACTIONS: dict[str, Action] = {}


def register_action(name: str, fn: ActionFn | None, description: str) -> None:
    """Register (or replace) an action; ``fn=None`` registers a placeholder."""
    ACTIONS[name] = Action(name, fn, description)


async def _dial_tcp(pg: Playground, src: str, dst: str) -> Any:
    return await pg.dial(src, dst, "tcp")


async def _dial_quic(pg: Playground, src: str, dst: str) -> Any:
    return await pg.dial(src, dst, "quic")


async def _ping(pg: Playground, src: str, dst: str) -> Any:
    return await pg.ping(src, dst)


register_action("dial TCP", _dial_tcp, "a direct TCP + Noise + Yamux connection")
register_action("dial QUIC", _dial_quic, "a direct QUIC connection")
register_action("ping", _ping, "ping over an existing connection (dials one if needed)")


class Playground:
    """The scenario's network and peers, run as one trio task (see the module docstring)."""

    def __init__(self, scenario: Scenario | None = None, *, bus: SpanBus | None = None,
                 clock: TrioClock | None = None) -> None:
        self.scenario = scenario or Scenario()
        self.bus = bus
        self.clock = clock
        self.network: Network | None = None
        self.hosts: dict[str, Host] = {}
        self.nodes: dict[str, Node] = {}
        #: the protocol services on the peers (None unless the scenario runs them)
        self.services: PeerServices | None = (
            PeerServices(self) if self.scenario.services else None)
        self._scopes: dict[str, trio.CancelScope] = {}
        self._stopped: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._started = trio.Event()
        self._stop = trio.Event()
        #: called with (name, node or None) when a peer starts or stops (the launcher's hook)
        self.on_peer: list[Callable[[str, Node | None], None]] = []
        #: what happened, newest last (the launcher shows it)
        self.log: list[str] = []

    # ------------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Build the network, start the scenario's peers, run until :meth:`stop`."""
        from ..simnet import Link, Network
        from ..tracing.provider import TracingConfig

        sc = self.scenario
        tracing = (TracingConfig(bus=self.bus, clock=self.clock)
                   if self.bus is not None else None)
        async with Network(seed=sc.seed, tracing=tracing,
                           wan_link=Link(latency=sc.latency_ms / 1000)) as net:
            self.network = net
            self._build(net)
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for name in (*sc.peers, *sc.servers):
                        if name in self.hosts:
                            await self.start_peer(name)
                    self._note(f"network up: {', '.join(self.hosts)}")
                    self._started.set()
                    task_status.started()
                    await self._stop.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self._nursery = None
                self._note("network down")

    def _build(self, net: Network) -> None:
        sc = self.scenario
        for side, kind in (("A", sc.nat_a), ("B", sc.nat_b)):
            if side == "B" and sc.relay:
                self.hosts["relay"] = net.add_host("relay")
            if kind is None:
                self.hosts[side] = net.add_host(side)
            else:
                self.hosts[side] = net.add_router(f"NAT {side}", kind).add_host(side)
        if sc.relay and "relay" not in self.hosts:
            self.hosts["relay"] = net.add_host("relay")
        for name in sc.servers:
            self.hosts[name] = net.add_host(name)

    def public_peers(self) -> list[str]:
        """Return the hosts on the internet itself (no NAT in front), in lane order."""
        sc = self.scenario
        behind = {side for side, kind in (("A", sc.nat_a), ("B", sc.nat_b)) if kind}
        return [name for name in sc.lanes if name in self.hosts and name not in behind]

    async def wait_started(self) -> None:
        """Wait until the network runs and the scenario's peers have started."""
        await self._started.wait()

    def stop(self) -> None:
        """Stop every peer and the network (:meth:`run` returns)."""
        self._stop.set()

    # ------------------------------------------------------------------ peers
    async def start_peer(self, name: str) -> Node:
        """Start a node on host ``name`` (returns once it listens)."""
        if self._nursery is None:
            raise LocalProtocolError("the playground is not running")
        if name not in self.hosts:
            raise LocalProtocolError(f"no host named {name!r}; hosts: {list(self.hosts)}")
        if name in self.nodes:
            return self.nodes[name]
        node: Node = await self._nursery.start(self._peer, name)
        return node

    async def _peer(self, name: str, *, task_status: trio.TaskStatus[Node]) -> None:
        host = self.hosts[name]
        done = self._stopped[name] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scopes[name] = scope
                async with host.node(enable_quic=self.scenario.quic) as node:
                    self.nodes[name] = node
                    if self.services is not None:
                        await self.services.install(name, node)
                    self._note(f"{name} started: {node.peer_id.short()} "
                               + " ".join(str(a) for a in node.listen_addrs()))
                    self._notify(name, node)
                    task_status.started(node)
                    await trio.sleep_forever()
        finally:
            self.nodes.pop(name, None)
            self._scopes.pop(name, None)
            if self.services is not None:
                self.services.uninstall(name)
            self._notify(name, None)
            done.set()

    async def stop_peer(self, name: str) -> None:
        """Stop the node on host ``name`` (returns once it closed)."""
        scope = self._scopes.get(name)
        if scope is None:
            return
        scope.cancel()
        await self._stopped[name].wait()
        self._note(f"{name} stopped")

    def _notify(self, name: str, node: Node | None) -> None:
        for hook in self.on_peer:
            with contextlib.suppress(Exception):
                hook(name, node)

    def node(self, name: str) -> Node:
        """Return the running node of host ``name``."""
        node = self.nodes.get(name)
        if node is None:
            raise LocalProtocolError(f"peer {name!r} is not running")
        return node

    # ------------------------------------------------------------------ actions
    async def dial(self, src: str, dst: str, transport: Transport = "tcp") -> Connection:
        """Dial ``dst`` from ``src`` directly over ``transport`` (a new connection)."""
        a, b = self.node(src), self.node(dst)
        want = "/quic-v1" if transport == "quic" else "/tcp/"
        addrs = [x for x in b.addrs if want in str(x) and "/p2p-circuit" not in str(x)]
        if not addrs:
            raise LocalProtocolError(f"{dst} has no {transport} address")
        try:
            conn = await a.connect(addrs[0], force_new=True)
        except Exception as exc:
            self._note(f"{src} \u2192 {dst} {transport}: failed ({exc})")
            raise
        self._note(f"{src} \u2192 {dst}: {conn.transport} + {conn.security} + "
                   f"{conn.muxer_protocol}")
        return conn

    async def ping(self, src: str, dst: str, count: int = 3) -> list[float]:
        """Ping ``dst`` from ``src`` (dialling if they are not connected); RTTs in ms."""
        a, b = self.node(src), self.node(dst)
        if a.best_connection(b.peer_id) is None:
            await self.dial(src, dst)
        rtts = await a.ping(b.peer_id, count)
        self._note(f"{src} pinged {dst}: " + ", ".join(f"{r:.1f}" for r in rtts) + " ms")
        return rtts

    async def act(self, action: str, src: str, dst: str) -> Any:
        """Run a registered action."""
        entry = ACTIONS.get(action)
        if entry is None:
            raise LocalProtocolError(f"no action {action!r}; known: {list(ACTIONS)}")
        if entry.fn is None:
            raise LocalProtocolError(f"{action} is not available yet: {entry.description}")
        return await entry.fn(self, src, dst)

    def _note(self, text: str) -> None:
        self.log.append(text)
        del self.log[:-200]


from .services import PeerServices, register_actions  # noqa: E402  (needs ACTIONS above)

register_actions()
