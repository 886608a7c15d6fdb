"""The Flare scenario on the simulated internet: the lab's topology, nodes, the whole flow.

    from flarelab.flare import run_flare_simnet, summarize
    from flarelab.lab import Topology

    trials = await run_flare_simnet(Topology.standard(latency=0.01), transport="quic")
    print(trials[0].describe())             # #0 home_router->home_router quic/ip4: success ...

The topology is the shared scenario description (:class:`~flarelab.lab.Topology`, the one
the real kernel-NAT lab builds). Every trial builds it afresh on a
:class:`~flarelab.simnet.Network` and runs, on its hosts:

* ``s1``...: AutoNAT servers (v1 and v2, no client), with the short dial timeouts below;
* ``relay``: a circuit relay v2 (:class:`~flarelab.protocols.relay.RelayService`) that also
  runs Flare, so AutoNAT finds it public;
* ``a`` and ``b``: Flare with the relay configured. Both connect to every public host
  (over the trial's transport), AutoNAT says private (or public for a public host), each
  reserves on the relay; A then dials B's circuit address and B's DCUtR service upgrades
  the relayed connection. The trial records what B's ``HolePunchSucceeded`` or
  ``HolePunchFailed`` says (:class:`~flarelab.flare.FlareTrial`).

A public B needs no relay: A dials it directly (outcome ``not_started``, ``direct``
True, the reason says so). Observers are counted by peer (``observed_addr_group_by``),
since all public hosts share one /24, and an observed address is confirmed once every
public host reported it (up to go's 4).

Runs on trio's real clock (a trial takes a few seconds: AutoNAT needs four answers from
four servers) or on ``MockClock`` (instantly). Spans go to ``bus`` or ``tracing``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import trio

from ..errors import LocalProtocolError
from ..lab.nat_kinds import NatKind
from ..lab.topology import Topology
from ..multiaddr import Multiaddr
from ..node import Node, NodeConfig
from ..node.events import Event
from ..protocols.autonat import AutoNATConfig, Reachability, start_autonat
from ..protocols.dcutr import (
    SIDE_INITIATOR,
    HolePunchConfig,
    HolePunchFailed,
    HolePunchSucceeded,
)
from ..protocols.relay import RelayService
from .config import FlareConfig
from .events import FlareStateChanged
from .report import FlareTrial

if TYPE_CHECKING:
    from ..simnet import Host, Network
    from ..tracing.bus import SpanBus
    from ..tracing.provider import TracingConfig
    from .orchestrator import Flare

__all__ = [
    "MATRIX_KINDS",
    "SIMNET_AUTONAT",
    "SIMNET_AUTONAT_SERVER",
    "FlareSimnet",
    "flare_simnet",
    "run_flare_matrix_simnet",
    "run_flare_simnet",
    "simnet_flare_config",
]

log = logging.getLogger("flarelab.flare")

TransportName = Literal["tcp", "quic"]

#: AutoNAT of the Flare nodes, go's schedule shortened: probe soon, retry fast. The server
#: side (they answer each other too) dials back within 1 s.
SIMNET_AUTONAT = AutoNATConfig(
    boot_delay=0.2, retry_interval=0.25, refresh_interval=300.0, min_probe_gap=0.1,
    throttle_server_period=60.0, v1_request_timeout=10.0, v2_request_timeout=10.0,
    dial_back_wait=2.0, v1_dial_timeout=0.5, v2_dial_timeout=1.0, dial_back_timeout=2.0,
    amplification_dial_wait=0.0)
#: the AutoNAT servers ``s1``...: server only, the same short dial timeouts
SIMNET_AUTONAT_SERVER = dataclasses.replace(SIMNET_AUTONAT, client_v1=False,
                                            client_v2=False)
#: the NAT kinds of the matrix (None: a public host)
MATRIX_KINDS: tuple[str | None, ...] = ("home_router", "answering_router", "symmetric", None)
#: go's quorum of observers before an observed address is trusted
MAX_OBSERVERS = 4


def simnet_flare_config(relays: Sequence[Multiaddr | str] = (), *,
                        holepunch: HolePunchConfig | None = None,
                        **changes: Any) -> FlareConfig:
    """The Flare config the simnet scenario gives A and B (fast AutoNAT, quick retries)."""
    return FlareConfig(relays=tuple(relays), autonat=SIMNET_AUTONAT,
                       holepunch=holepunch, relay_backoff=1.0, relay_backoff_max=10.0,
                       **changes)


@dataclasses.dataclass
class _Clock:
    """When the phases of one side ended (trio time)."""

    started: float
    settled: float | None = None  # AutoNAT's first verdict
    reserved: float | None = None

    def on_event(self, event: Event) -> None:
        if not isinstance(event, FlareStateChanged):
            return
        now = trio.current_time()
        state = event.state
        if self.settled is None and state.reachability is not Reachability.UNKNOWN:
            self.settled = now
        if self.reserved is None and state.relays:
            self.reserved = now


def _kind_name(kind: NatKind | None) -> str | None:
    return None if kind is None else kind.value


async def _connect_all(node: Node, targets: Sequence[Node], quic: bool) -> None:
    """Connect ``node`` to every target over the trial's transport, identify included."""
    async def one(target: Node) -> None:
        conn = await node.connect(_addr_of(target, quic))
        assert node.identify is not None
        await node.identify.wait_identified(conn)

    async with trio.open_nursery() as nursery:
        for target in targets:
            nursery.start_soon(one, target)


@dataclasses.dataclass
class FlareSimnet:
    """The scenario's network and running nodes (see :func:`flare_simnet`)."""

    topology: Topology
    network: Network
    transport: TransportName
    servers: list[Node]
    relay: Node
    a: Node
    b: Node

    @property
    def quic(self) -> bool:
        return self.transport == "quic"

    def flare(self, side: str) -> Flare:
        """The Flare orchestrator of ``a``, ``b`` or ``relay``."""
        node = {"a": self.a, "b": self.b, "relay": self.relay}[side]
        assert node.flare is not None
        return node.flare

    def relay_addr(self) -> Multiaddr:
        """The relay's address over the scenario's transport (IPv6 in a dual-stack
        topology), with ``/p2p/<relay>``."""
        return _addr_of(self.relay, self.quic)

    async def join(self) -> None:
        """Connect A and B to every public host (the servers and the relay), as peers
        join a network through its bootstrap nodes (over IPv6 in a dual-stack topology)."""
        await _connect_all(self.a, [*self.servers, self.relay], self.quic)
        await _connect_all(self.b, [*self.servers, self.relay], self.quic)


def _addr_of(node: Node, quic: bool) -> Multiaddr:
    """The node's address over TCP or QUIC; IPv6 first where it has one (the dual-stack
    lab punches over IPv6, through firewalls that do not translate)."""
    addrs = [a for a in node.addrs
             if ("quic-v1" in a.protocol_names()) == quic and not a.is_relayed]
    return next((a for a in addrs if a.protocol_names()[0] == "ip6"), addrs[0])


@contextlib.asynccontextmanager
async def flare_simnet(
    topology: Topology,
    *,
    transport: TransportName = "tcp",
    seed: int = 0,
    tracing: TracingConfig | None = None,
    holepunch: HolePunchConfig | None = None,
    **flare_changes: Any,
) -> AsyncIterator[FlareSimnet]:
    """Build ``topology`` on simnet and run its nodes: AutoNAT servers on the public hosts,
    the relay (relay service and Flare, connected to the servers), and A and B with Flare
    and the relay configured (``flare_changes`` change their :class:`FlareConfig`), not yet
    connected to anyone (:meth:`FlareSimnet.join` does that)."""
    quic = transport == "quic"
    public = [h.name for h in topology.public if h.name not in ("relay", "a", "b")]
    threshold = min(MAX_OBSERVERS, len(topology.public) - sum(
        1 for side in ("a", "b") if topology.nat_of(side) is None))
    node_config = NodeConfig(enable_quic=quic, observed_addr_group_by="peer",
                             observed_addr_threshold=max(1, threshold))
    network = topology.simnet_network(seed=seed, tracing=tracing)
    async with network, contextlib.AsyncExitStack() as stack:
        built = topology.build_simnet(network)

        def host(name: str) -> Host:
            found = built[name]
            assert not hasattr(found, "add_host"), f"{name} is a router"
            return found  # type: ignore[return-value]

        servers = []
        for name in public:
            node = await stack.enter_async_context(host(name).node(node_config))
            await start_autonat(node, SIMNET_AUTONAT_SERVER)
            servers.append(node)
        relay = await stack.enter_async_context(host("relay").node(dataclasses.replace(
            node_config, flare=simnet_flare_config())))
        RelayService(relay)
        await _connect_all(relay, servers, quic)
        config = dataclasses.replace(node_config, flare=simnet_flare_config(
            [_addr_of(relay, quic)], holepunch=holepunch, **flare_changes))
        a = await stack.enter_async_context(host("a").node(config))
        b = await stack.enter_async_context(host("b").node(config))
        yield FlareSimnet(topology, network, transport, servers, relay, a, b)


async def _trial(topology: Topology, *, transport: TransportName, seed: int, trial: int,
                 tracing: TracingConfig | None, holepunch: HolePunchConfig | None,
                 phase_timeout: float, progress: Callable[[str], None] | None) -> FlareTrial:
    say = progress or (lambda text: None)
    nat_a, nat_b = topology.nat_of("a"), topology.nat_of("b")
    base = FlareTrial(transport=transport, nat_a=_kind_name(nat_a), nat_b=_kind_name(nat_b),
                      outcome="not_started", direct=False, ipv6=topology.ipv6, trial=trial)
    async with flare_simnet(topology, transport=transport, seed=seed + trial,
                            tracing=tracing, holepunch=holepunch) as world:
        a, b = world.a, world.b
        flare_a, flare_b = world.flare("a"), world.flare("b")
        start = trio.current_time()
        clock_b = _Clock(start)
        b.events.add_listener(clock_b.on_event)
        say(f"trial {trial}: {base.describe().split(':')[0]} -- nodes up")
        phases: dict[str, float] = {}

        def result(**changes: Any) -> FlareTrial:
            if clock_b.settled is not None:
                phases.setdefault("autonat", clock_b.settled - start)
            if clock_b.reserved is not None and clock_b.settled is not None:
                phases.setdefault("reserve", clock_b.reserved - clock_b.settled)
            return dataclasses.replace(
                base, reachability_a=flare_a.reachability.value,
                reachability_b=flare_b.reachability.value, phases=dict(phases), **changes)

        try:
            with trio.fail_after(phase_timeout):
                await world.join()
                await flare_a.wait_for(lambda s: s.reachability is not Reachability.UNKNOWN)
                state_b = await flare_b.wait_for(
                    lambda s: bool(s.relays) or s.reachability is Reachability.PUBLIC)
        except trio.TooSlowError:
            why = ("AutoNAT did not settle" if clock_b.settled is None
                   else "B got no reservation on the relay")
            return result(reason=f"{why} within {phase_timeout:g} s")
        say(f"trial {trial}: A {flare_a.reachability.value}, B {state_b.describe()}")
        if not state_b.relays:  # B is public: no relay needed
            begin = trio.current_time()
            with trio.fail_after(phase_timeout):
                await a.connect(b.peer_id, list(b.addrs), allow_limited=False)
            phases["direct_dial"] = trio.current_time() - begin
            return result(direct=True, reason="B is public: A dialled it directly, "
                                              "no relay or hole punch needed")
        return await _upgrade(a, b, flare_b, world.quic, phase_timeout, phases, result)
    raise AssertionError("unreachable")  # pragma: no cover


async def _upgrade(a: Node, b: Node, flare_b: Flare, quic: bool, phase_timeout: float,
                   phases: dict[str, float], result: Callable[..., FlareTrial]) -> FlareTrial:
    """A dials B's circuit address; return what B's DCUtR upgrade made of it."""
    circuits = [c for c in flare_b.state.circuit_addrs
                if ("quic-v1" in c.protocol_names()) == quic] or list(
        flare_b.state.circuit_addrs)
    target = circuits[0].encapsulate(f"/p2p/{b.peer_id}")
    with b.events.subscribe(HolePunchSucceeded, HolePunchFailed) as events:
        begin = trio.current_time()
        try:
            with trio.fail_after(phase_timeout):
                await a.connect(target)
        except Exception as exc:  # refused by the relay, unreachable, timed out
            return result(reason=f"A could not dial B through the relay: {exc}")
        phases["relayed_dial"] = trio.current_time() - begin
        try:
            with trio.fail_after(phase_timeout):
                done = await events.next(predicate=lambda e: e.side == SIDE_INITIATOR)
        except trio.TooSlowError:
            return result(outcome="timeout",
                          reason=f"B's DCUtR upgrade did not end within {phase_timeout:g} s")
    outcome = done.result
    phases["upgrade"] = outcome.elapsed
    return result(
        outcome=outcome.outcome, direct=outcome.ok, reason=outcome.reason,
        elapsed=outcome.elapsed if outcome.ok else None, attempts=outcome.attempts,
        address=str(outcome.address) if outcome.address is not None else None)


async def run_flare_simnet(
    topology: Topology,
    *,
    transport: TransportName = "tcp",
    trials: int = 1,
    seed: int = 0,
    bus: SpanBus | None = None,
    tracing: TracingConfig | None = None,
    holepunch: HolePunchConfig | None = None,
    phase_timeout: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> list[FlareTrial]:
    """Run the Flare scenario ``trials`` times on ``topology`` (see the module docstring).

    Trial *i* runs on a fresh network seeded ``seed + i``. ``bus`` (a span bus) or
    ``tracing`` (a template for every node and router) receives the spans; on MockClock
    give ``tracing`` a :class:`~flarelab.tracing.clock.TrioClock`. ``holepunch`` configures
    DCUtR on A and B; ``phase_timeout`` bounds each phase of a trial; ``progress`` hears a line
    per step.
    """
    if transport not in ("tcp", "quic"):
        raise LocalProtocolError(f"transport must be 'tcp' or 'quic', not {transport!r}")
    names = {h.name for h in topology.hosts()}
    if not {"relay", "a", "b"} <= names:
        raise LocalProtocolError("the topology needs hosts named relay, a and b "
                                 "(Topology.standard builds them)")
    if tracing is None and bus is not None:
        from ..tracing.clock import TrioClock
        from ..tracing.provider import TracingConfig

        tracing = TracingConfig(bus=bus, clock=TrioClock())
    out = []
    for i in range(trials):
        trial = await _trial(topology, transport=transport, seed=seed, trial=i,
                             tracing=tracing, holepunch=holepunch, phase_timeout=phase_timeout,
                             progress=progress)
        log.info("%s", trial.describe())
        if progress is not None:
            progress(trial.describe())
        out.append(trial)
    return out


async def run_flare_matrix_simnet(
    kinds: Sequence[str | None] = MATRIX_KINDS,
    transports: Sequence[TransportName] = ("tcp", "quic"),
    *,
    latency: float = 0.010,
    ipv6: bool = False,
    servers: int = 3,
    seed: int = 0,
    bus: SpanBus | None = None,
    tracing: TracingConfig | None = None,
    holepunch: HolePunchConfig | None = None,
    phase_timeout: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> list[FlareTrial]:
    """One trial per NAT pair (A's kind, B's kind; None or "public": a public host) and
    transport, on ``Topology.standard(..., latency=latency)``."""
    out = []
    for kind_a in kinds:
        for kind_b in kinds:
            topology = Topology.standard(_kind(kind_a), _kind(kind_b), servers=servers,
                                         ipv6=ipv6, latency=latency)
            for transport in transports:
                out += await run_flare_simnet(
                    topology, transport=transport, seed=seed, bus=bus, tracing=tracing,
                    holepunch=holepunch, phase_timeout=phase_timeout, progress=progress)
    return out


def _kind(kind: str | None) -> str | None:
    return None if kind in (None, "public") else kind
