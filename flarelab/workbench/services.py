"""The story's protocols on the playground's peers: AutoNAT, Circuit Relay v2 and DCUtR.

:class:`PeerServices` runs them on the nodes a :class:`~flarelab.workbench.playground.Playground`
starts (when its scenario asks for ``services``): every peer answers AutoNAT (v1 and v2); the
relay serves Circuit Relay v2 with the scenario's limits; A and B dial and listen through
relays (``p2p-circuit``) and upgrade relayed connections with DCUtR. Timeouts are shortened so
that a notebook sees each step in a second or two of real time. A peer *asks* AutoNAT (and
then keeps asking, on go's schedule) only once the AutoNAT action ran for it: nothing probes
behind a learner's back before that.

It also keeps what the launcher shows per peer -- reachability and its confidence, the
addresses AutoNAT v2 found reachable or not, reservations, the last hole punch -- updated
from the nodes' own events, and calls :attr:`PeerServices.on_change` when any of it changes.

The actions (:func:`autonat`, :func:`reserve`, :func:`dial_relayed`, :func:`hole_punch`) are
registered on import as the launcher's buttons (``AutoNAT``, ``reserve``, ``dial via relay``,
``hole punch``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import LocalProtocolError

if TYPE_CHECKING:
    from ..node import Connection, Node
    from ..node.events import Event
    from ..protocols.autonat import AutoNATConfig, AutoNATService
    from ..protocols.dcutr import HolePunchConfig, HolePunchResult, HolePunchService
    from ..protocols.relay import RelayService, RelayTransport, Reservation
    from .playground import Playground

__all__ = [
    "PeerServices",
    "PeerState",
    "autonat",
    "autonat_config",
    "dial_relayed",
    "hole_punch",
    "holepunch_config",
    "reserve",
]

#: AutoNAT answers needed to settle a status from unknown (more than max_confidence = 3)
SETTLE_ROUNDS: Final = 4


def autonat_config(*, client: bool = True) -> AutoNATConfig:
    """Return the playground's AutoNAT config: go's rules, times cut for real-time demos."""
    from ..protocols.autonat import AutoNATConfig

    return AutoNATConfig(
        client_v1=client, client_v2=client,
        boot_delay=1e9, retry_interval=1e9, refresh_interval=1e9,  # probe only when asked
        min_probe_gap=0.0, throttle_server_period=0.0,
        v1_request_timeout=5.0, v2_request_timeout=5.0, dial_back_wait=1.0,
        v1_dial_timeout=0.6, v1_dial_stagger=0.05, v2_dial_timeout=0.6,
        dial_back_timeout=1.0, amplification_dial_wait=0.0,
    )


def holepunch_config() -> HolePunchConfig:
    """Return the playground's DCUtR config: go's flow, shorter timeouts."""
    from ..protocols.dcutr import HolePunchConfig

    return HolePunchConfig(trust_unconfirmed_observations=True, reversal_timeout=1.0,
                           identify_timeout=3.0, exchange_timeout=3.0, punch_timeout=1.5,
                           relay_grace=2.0)


@dataclass
class PeerState:
    """What the launcher shows about one peer (kept current from its events)."""

    name: str
    reachability: str = "unknown"
    confidence: int = 0
    #: AutoNAT v2's verdict per address ("public" / "private")
    addresses: dict[str, str] = field(default_factory=dict)
    #: circuit addresses of the reservations held
    circuits: list[str] = field(default_factory=list)
    #: the last hole punch seen from this side, in one line
    punch: str = ""


class PeerServices:
    """The protocol services of a playground's peers (see the module docstring)."""

    def __init__(self, playground: Playground) -> None:
        self.playground = playground
        self.autonat: dict[str, AutoNATService] = {}
        self.relay_service: RelayService | None = None
        self.relay_transports: dict[str, RelayTransport] = {}
        self.holepunch: dict[str, HolePunchService] = {}
        self.states: dict[str, PeerState] = {}
        #: hole-punch results, newest last (B's side: the whole upgrade)
        self.punches: list[HolePunchResult] = []
        #: called with the peer's name whenever its state changes
        self.on_change: list[Callable[[str], None]] = []
        self._unlisten: dict[str, Callable[[], None]] = {}

    # ------------------------------------------------------------------ lifecycle
    async def install(self, name: str, node: Node) -> None:
        """Start the services ``name`` runs on its freshly started node."""
        from ..protocols.autonat import start_autonat
        from ..protocols.dcutr import HolePunchService
        from ..protocols.relay import (
            RelayLimits,
            RelayService,
            RelayServiceConfig,
            RelayTransport,
        )

        sc = self.playground.scenario
        self.states[name] = PeerState(name)
        # every peer answers AutoNAT; A and B ask only once the AutoNAT action asks them to
        # (a client probes by itself as soon as it meets a server)
        self.autonat[name] = await start_autonat(node, autonat_config(client=False))
        if name == "relay":
            limits = RelayLimits(circuit=sc.circuit_limit())
            self.relay_service = RelayService(node, RelayServiceConfig(limits=limits))
        elif name in ("A", "B"):
            self.relay_transports[name] = RelayTransport.install(node)
            if sc.dcutr:
                self.holepunch[name] = HolePunchService(node, holepunch_config())
        self._unlisten[name] = node.events.add_listener(functools.partial(self._on_event, name))
        self._changed(name)

    async def autonat_client(self, name: str) -> AutoNATService:
        """Return peer ``name``'s AutoNAT service, made a client (v1 and v2) if it is not."""
        from ..protocols.autonat import start_autonat

        service = self.autonat.get(name)
        if service is None:
            raise LocalProtocolError(f"peer {name!r} runs no AutoNAT")
        if not service.config.client_v1:
            await service.aclose()
            service = await start_autonat(service.node, autonat_config(client=True))
            self.autonat[name] = service
        return service

    def uninstall(self, name: str) -> None:
        """Forget a stopped peer's services (they ended with its node)."""
        unlisten = self._unlisten.pop(name, None)
        if unlisten is not None:
            unlisten()
        for table in (self.autonat, self.relay_transports, self.holepunch):
            table.pop(name, None)  # type: ignore[attr-defined]
        if name == "relay":
            self.relay_service = None
        if name in self.states:
            self.states[name] = PeerState(name)
        self._changed(name)

    # ------------------------------------------------------------------ live state
    def _on_event(self, name: str, event: Event) -> None:
        from ..node.events import LocalAddressesChanged
        from ..protocols.autonat import AddressReachabilityChanged, ReachabilityChanged
        from ..protocols.dcutr import HolePunchFailed, HolePunchStarted, HolePunchSucceeded

        state = self.states.get(name)
        if state is None:
            return
        if isinstance(event, ReachabilityChanged):
            state.reachability, state.confidence = str(event.reachability), event.confidence
            self.playground._note(f"{name} is {event.reachability} "
                                  f"(confidence {event.confidence})")
        elif isinstance(event, AddressReachabilityChanged):
            state.addresses[str(event.addr)] = str(event.reachability)
        elif isinstance(event, LocalAddressesChanged):
            transport = self.relay_transports.get(name)
            state.circuits = [str(a) for lst in (transport.listeners() if transport else [])
                              for a in lst.circuit_addrs]
        elif isinstance(event, HolePunchStarted):
            state.punch = f"{event.side}: punching (round {event.attempt})" \
                if event.attempt else f"{event.side}: upgrading"
        elif isinstance(event, HolePunchSucceeded | HolePunchFailed):
            result = event.result
            if event.side == "initiator":
                self.punches.append(result)
                del self.punches[:-100]
            took = f" in {result.elapsed * 1000:.0f} ms" if result.ok else ""
            how = f" over {result.transport}" if result.transport else ""
            state.punch = f"{event.side}: {result.outcome}{how}{took}"
            if not result.ok and result.reason:
                state.punch += f" ({result.reason})"
            if event.side == "initiator":
                self.playground._note(f"hole punch {name}: {state.punch}")
        else:
            return
        self._changed(name)

    def _changed(self, name: str) -> None:
        service = self.autonat.get(name)
        state = self.states.get(name)
        if service is not None and state is not None:
            state.reachability, state.confidence = str(service.reachability), service.confidence
        for hook in self.on_change:
            with contextlib.suppress(Exception):
                hook(name)

    def state(self, name: str) -> PeerState:
        """Return what is known about peer ``name``."""
        state = self.states.get(name)
        if state is None:
            raise LocalProtocolError(f"peer {name!r} runs no services")
        return state

    def reservation(self, name: str) -> Reservation | None:
        """Return the reservation peer ``name`` holds on the relay (None if it holds none)."""
        transport = self.relay_transports.get(name)
        for listener in transport.listeners() if transport is not None else []:
            if listener.reservation is not None and listener.circuit_addrs:
                return listener.reservation
        return None


# ====================================================================== the actions
def _services(pg: Playground) -> PeerServices:
    if pg.services is None:
        raise LocalProtocolError("this scenario runs no services (Scenario(services=True))")
    return pg.services


def _relay_addr(pg: Playground, transport: str = "tcp") -> str:
    relay = pg.node("relay")
    want = "/quic-v1" if transport == "quic" else "/tcp/"
    for addr in relay.addrs:
        if want in str(addr) and "/p2p-circuit" not in str(addr):
            return str(addr)
    raise LocalProtocolError(f"the relay has no {transport} address")


async def autonat(pg: Playground, src: str, dst: str | None = None, *,
                  rounds: int = SETTLE_ROUNDS, v2: bool = True) -> dict[str, Any]:
    """Ask AutoNAT servers about ``src``: v1 ``rounds`` times, then v2 for each address.

    ``src`` first connects to every other public peer that serves AutoNAT (the relay, the
    AutoNAT servers, public peers): a server answers about addresses it sees you on, over
    a connection from the internet. Returns the verdicts, for cells to print and assert.
    """
    from ..protocols.autonat import V1_PROTOCOL, V2_DIAL_REQUEST_PROTOCOL

    services = _services(pg)
    node = pg.node(src)
    service = await services.autonat_client(src)
    for name in pg.public_peers():
        if name != src and name in pg.nodes:
            with trio.fail_after(10):
                await node.identify_peer(pg.node(name).addrs[0])
    servers = service.servers(V1_PROTOCOL)
    if not servers:
        raise LocalProtocolError(f"{src} sees no AutoNAT server from the internet")
    v1 = []
    for i in range(rounds):
        result = await service.check(servers[i % len(servers)])
        if result is not None:
            v1.append(result.status)
    per_address: dict[str, str] = {}
    dial_data = 0
    if v2:
        servers2 = service.servers(V2_DIAL_REQUEST_PROTOCOL)
        for addr in service.candidate_addrs():
            for i in range(rounds):
                result2 = await service.check_address(addr, servers2[i % len(servers2)])
                if result2 is not None:
                    dial_data += result2.dial_data
            per_address[str(addr)] = str(service.address_reachability(addr))
    services._changed(src)
    pg._note(f"AutoNAT {src}: {service.reachability} (confidence {service.confidence}); "
             + ", ".join(f"{a} {r}" for a, r in per_address.items()))
    return {"reachability": str(service.reachability), "confidence": service.confidence,
            "v1": v1, "v2": per_address, "dial_data": dial_data}


async def reserve(pg: Playground, src: str, dst: str = "relay") -> Reservation:
    """Reserve a slot for ``src`` on the relay (Circuit Relay v2 RESERVE); return it."""
    services = _services(pg)
    node = pg.node(src)
    existing = services.reservation(src)
    if existing is not None:
        return existing
    if src not in services.relay_transports:
        raise LocalProtocolError(f"{src} does not use relays (only A and B do)")
    await node.listen(f"{_relay_addr(pg)}/p2p-circuit")
    rsvp = services.reservation(src)
    assert rsvp is not None
    services._on_event(src, _addresses_changed(node))
    limit = rsvp.limit
    pg._note(f"{src} reserved on the relay: {len(rsvp.circuit_addrs())} circuit address(es), "
             f"limit {limit.duration if limit else 0} s / {limit.data if limit else 0} B")
    return rsvp


def _addresses_changed(node: Node) -> Event:
    from ..node.events import LocalAddressesChanged

    return LocalAddressesChanged(tuple(node.advertised_addrs()))


async def dial_relayed(pg: Playground, src: str, dst: str, transport: str = "tcp"
                       ) -> Connection:
    """Dial ``dst`` from ``src`` through the relay (``dst`` reserves first if needed)."""
    services = _services(pg)
    await reserve(pg, dst)
    src_node, dst_node = pg.node(src), pg.node(dst)
    if src not in services.relay_transports:
        raise LocalProtocolError(f"{src} does not use relays (only A and B do)")
    target = f"{_relay_addr(pg, transport)}/p2p-circuit/p2p/{dst_node.peer_id}"
    conn = await src_node.connect(target, force_new=True)
    pg._note(f"{src} \u2192 {dst} through the relay: limited={conn.limited}")
    return conn


async def hole_punch(pg: Playground, src: str, dst: str, *, transport: str | None = None,
                     within: float = 30.0) -> HolePunchResult:
    """The DCUtR story: ``dst`` reserves, ``src`` learns its observed address from the relay
    and dials ``dst`` through it; ``dst`` (DCUtR's B) upgrades. Return B's result.

    Connections ``src`` already has to ``dst`` are closed first (a direct one would leave
    nothing to upgrade).

    ``transport``: ``tcp`` or ``quic`` (default: QUIC when the scenario runs it) -- what
    both peers talk to the relay over, and so which observed addresses they offer.
    """
    from ..protocols.dcutr import HolePunchFailed, HolePunchSucceeded

    kind = transport or ("quic" if pg.scenario.quic else "tcp")
    relay_addr = _relay_addr(pg, kind)
    src_node, dst_node = pg.node(src), pg.node(dst)
    if dst not in _services(pg).holepunch:
        raise LocalProtocolError(f"{dst} runs no DCUtR (Scenario(dcutr=True), A or B)")
    with trio.fail_after(within):
        # a direct connection leaves nothing to upgrade: close it, so that the punch is real
        for conn in src_node.connections(dst_node.peer_id):
            await conn.aclose("closed for a new hole punch")
        for node in (src_node, dst_node):  # each learns its observed address over `kind`
            await node.identify_peer(relay_addr)
        await reserve(pg, dst)
        with dst_node.events.subscribe(HolePunchSucceeded, HolePunchFailed) as events:
            await dial_relayed(pg, src, dst, kind)
            done = await events.next()
    result: HolePunchResult = done.result
    return result


def register_actions() -> None:
    """Register the story's actions with the launcher (replacing the placeholders)."""
    from .playground import register_action

    register_action("AutoNAT", autonat, "ask AutoNAT servers (v1 and v2) whether the "
                    "'from' peer is reachable")
    register_action("reserve", reserve, "the 'from' peer reserves a slot on the relay "
                    "(circuit relay v2)")
    register_action("dial via relay", dial_relayed, "'from' dials 'to' through the relay "
                    "('to' reserves first)")
    register_action("hole punch", hole_punch, "'from' dials 'to' through the relay; 'to' "
                    "upgrades the relayed connection with DCUtR")

