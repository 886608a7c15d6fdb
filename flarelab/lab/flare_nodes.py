"""The programs of the Flare flow in the lab's namespaces: relay, AutoNAT servers, A and B.

:mod:`flarelab.lab.flare_run` starts them (``lab.start(host, fn, ...)``); each is a
module-level ``async def fn(ctx, ...)`` that runs one real flarelab node, traced into the
lab's trace file:

* :func:`serve_relay` -- the public relay (Circuit Relay v2 hop);
* :func:`serve_autonat` -- a public AutoNAT server (v1 and v2);
* :func:`flare_listener` -- B: joins the servers and the relay, waits until AutoNAT says
  it is private, reserves on the relay, says ready with its circuit address, then reports
  how B's DCUtR upgrade ended (``ctx.progress({"holepunch": ...})``);
* :func:`flare_dialer` -- A: joins the servers and the relay, dials B's circuit address,
  says ready, and at the stop reports its direct connection to B (and pings over it);
* :func:`dial_without_punching` -- A without DCUtR: tries B's public mapping directly.

Each role is wired by ONE seam function (:func:`wire_relay`, :func:`wire_autonat_server`,
:func:`wire_peer`). A and B run the orchestrator, ``flarelab.flare.enable_flare`` with the
relay configured: AutoNAT, reservation, advertising and DCUtR are its business; without it
(``FlareLabSettings.orchestrator`` False) the seam installs the services itself.

Lab settings (:class:`FlareLabSettings`) shorten AutoNAT's go-libp2p timings so a trial
takes seconds -- the lab's internet has a sub-millisecond RTT, so a 0.5 s dial-back
timeout is generous -- but keep go's rules: the status settles after more than three
agreeing answers, from the four public AutoNAT servers (``s1``... and the relay), and an
observed address is trusted once four observers reported it. Observers are counted by peer,
since every public host of the lab is in one /24, which go's grouping counts as one.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import FlarelabError
from .agent import LabContext

if TYPE_CHECKING:
    from ..node import Node, NodeConfig
    from ..protocols.autonat import AutoNATService
    from ..protocols.dcutr import HolePunchResult, HolePunchService

__all__ = [
    "FlareLabSettings",
    "PeerWiring",
    "dial_circuit",
    "dial_without_punching",
    "flare_dialer",
    "flare_listener",
    "serve_autonat",
    "serve_relay",
    "wire_autonat_server",
    "wire_peer",
    "wire_relay",
]

#: the port the relay and the AutoNAT servers listen on
INFRA_PORT: Final = 4001
#: how long A waits, at the stop, for a direct connection B reported
DIRECT_GRACE: Final = 2.0


@dataclass(frozen=True)
class FlareLabSettings:
    """How the nodes of one lab run behave (JSON-able: it travels to the namespaces)."""

    #: ``tcp`` or ``quic``: what A and B listen on, reach the relay over, and punch with
    transport: str = "tcp"
    #: 4 or 6: the address family of A, B and their connections
    family: int = 4
    #: A and B listen on this port (a fresh one per trial: no TIME_WAIT from the last)
    port: int = 4100
    #: AutoNAT: the status settles after more than this many agreeing answers (go: 3)
    autonat_confidence: int = 3
    #: distinct observers (by peer) before A and B trust an observed address (go: 4)
    observers: int = 4
    #: AutoNAT servers: one dial-back (the lab's RTT is sub-millisecond)
    autonat_dial_timeout: float = 0.5
    #: AutoNAT clients: next probe while unsettled (go: 90 s)
    autonat_retry: float = 0.05
    #: how long B waits for AutoNAT to say private
    autonat_wait: float = 20.0
    #: DCUtR: B's connection reversal dial (go: 5 s; only tried when A looks public)
    reversal_timeout: float = 1.0
    #: DCUtR: one punch (go: 5 s)
    punch_timeout: float = 5.0
    #: how long B waits for its upgrade to end once the relayed connection is there
    holepunch_wait: float = 30.0
    #: A and B run ``enable_flare`` (False: the services wired one by one)
    orchestrator: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-able data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlareLabSettings:
        """Rebuild settings from :meth:`to_dict`."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------- node configs
def _listen_addrs(ctx: LabContext, family: int | None, transports: tuple[str, ...],
                  port: int) -> list[str]:
    out = []
    for ip in ctx.host.addresses():
        kind = "ip6" if ":" in ip else "ip4"
        if family is not None and kind != f"ip{family}":
            continue
        if "tcp" in transports:
            out.append(f"/{kind}/{ip}/tcp/{port}")
        if "quic" in transports:
            out.append(f"/{kind}/{ip}/udp/{port}/quic-v1")
    return out


def _infra_config(ctx: LabContext) -> NodeConfig:
    """A public node: TCP and QUIC on every address of its host."""
    return ctx.node_config(
        listen_addrs=_listen_addrs(ctx, None, ("tcp", "quic"), INFRA_PORT),
        enable_quic=True)


def _peer_config(ctx: LabContext, settings: FlareLabSettings) -> NodeConfig:
    """A or B: a fresh key, one transport and family, the trial's port."""
    quic = settings.transport == "quic"
    return ctx.node_config(
        listen_addrs=_listen_addrs(ctx, settings.family, (settings.transport,), settings.port),
        enable_quic=quic, prefer_quic=quic, observed_addr_group_by="peer",
        observed_addr_threshold=settings.observers)


# ---------------------------------------------------------------------- the seams
def wire_relay(node: Node) -> Any:
    """Make ``node`` the lab's relay; return the relay service.

    The lab relay serves many trials from the same two router addresses, so the per-IP
    rates are off (the counts per IP and per peer still hold).
    """
    from ..protocols.relay import RelayLimits, RelayService, RelayServiceConfig

    limits = RelayLimits(reservation_rate_per_ip=None, circuit_rate_per_ip=None)
    return RelayService(node, RelayServiceConfig(limits=limits))


def _autonat_config(settings: FlareLabSettings, *, server: bool, client: bool) -> Any:
    """go's AutoNAT with the lab's short timings (a lab server answers every trial's A and
    B, so its rate limits are raised)."""
    from ..protocols.autonat import AutoNATConfig, RateLimits

    limits = RateLimits(per_window=100_000, per_peer_per_window=100, max_in_flight_per_peer=2,
                        dial_data_per_window=100)
    return AutoNATConfig(
        server_v1=server, server_v2=server, client_v1=client, client_v2=client,
        boot_delay=0.0, retry_interval=settings.autonat_retry, min_probe_gap=0.05,
        max_confidence=settings.autonat_confidence,
        v1_request_timeout=settings.autonat_dial_timeout + 5.0,
        v2_request_timeout=settings.autonat_dial_timeout + 5.0,
        dial_back_wait=2.0,
        v1_dial_timeout=settings.autonat_dial_timeout,
        v2_dial_timeout=settings.autonat_dial_timeout,
        amplification_dial_wait=0.0, v1_limits=limits, v2_limits=limits)


async def wire_autonat_server(node: Node, settings: FlareLabSettings) -> AutoNATService:
    """Make ``node`` one of the lab's public AutoNAT servers; return the service."""
    from ..protocols.autonat import AutoNATService

    service = AutoNATService(node, _autonat_config(settings, server=True, client=False))
    await service.start()
    return service


@dataclass
class PeerWiring:
    """What :func:`wire_peer` set up on A or B."""

    node: Node
    autonat: AutoNATService
    holepunch: HolePunchService
    relay: str
    flare: Any = None  # the orchestrator's Flare, if it runs

    @property
    def via(self) -> str:
        """``enable_flare`` (the orchestrator) or ``services`` (wired one by one)."""
        return "enable_flare" if self.flare is not None else "services"

    @property
    def reachability(self) -> str:
        """What AutoNAT says about the node now."""
        return str(self.autonat.reachability.value)

    async def wait_private(self) -> bool:
        """Wait until AutoNAT settles; True if it says private."""
        from ..protocols.autonat import Reachability, ReachabilityChanged

        with self.node.events.subscribe(ReachabilityChanged) as changes:
            while self.autonat.reachability is Reachability.UNKNOWN:
                await changes.next()
        return self.autonat.reachability is Reachability.PRIVATE

    async def reserved(self) -> str:
        """Wait for (or make) the reservation on the lab's relay; return our circuit
        address (``.../p2p-circuit/p2p/<us>``)."""
        if self.flare is not None:
            state = await self.flare.wait_for(lambda s: bool(s.circuit_addrs))
            return f"{state.circuit_addrs[0]}/p2p/{self.node.peer_id}"
        await self.node.listen(f"{self.relay}/p2p-circuit")
        return f"{self.relay}/p2p-circuit/p2p/{self.node.peer_id}"


def _holepunch_config(settings: FlareLabSettings) -> Any:
    from ..protocols.dcutr import HolePunchConfig

    return HolePunchConfig(reversal_timeout=settings.reversal_timeout,
                           punch_timeout=settings.punch_timeout)


async def wire_peer(node: Node, settings: FlareLabSettings, relay: str) -> PeerWiring:
    """Give A or B the Flare flow with the lab's relay (``relay``: its address with /p2p/).

    With the orchestrator: ``enable_flare`` (AutoNAT, reservation when private, advertising,
    DCUtR). Without: the AutoNAT client, the p2p-circuit transport and DCUtR, one by one
    (reserving is then :meth:`PeerWiring.reserved`'s job).
    """
    from ..protocols.autonat import AutoNATService
    from ..protocols.dcutr import HolePunchService
    from ..protocols.relay import RelayTransport

    autonat_config = _autonat_config(settings, server=False, client=True)
    if settings.orchestrator:
        from ..flare import FlareConfig, enable_flare

        flare = enable_flare(node, FlareConfig(
            relays=(relay,), max_relays=1, autonat=autonat_config,
            holepunch=_holepunch_config(settings), relay_backoff=1.0,
            relay_backoff_max=10.0))
        return PeerWiring(node, flare.autonat, flare.holepunch, relay, flare)
    RelayTransport.install(node)
    holepunch = HolePunchService(node, _holepunch_config(settings))
    autonat = AutoNATService(node, autonat_config)
    await autonat.start()
    return PeerWiring(node, autonat, holepunch, relay)


# ---------------------------------------------------------------------- infrastructure
async def serve_relay(ctx: LabContext, settings: dict[str, Any]) -> dict[str, Any]:
    """Run the lab's relay (also an AutoNAT server) until stopped; ready carries its peer
    id and addresses."""
    from ..node import Node

    lab_settings = FlareLabSettings.from_dict(settings)
    async with Node(_infra_config(ctx)) as node:
        service = wire_relay(node)
        await wire_autonat_server(node, lab_settings)  # the fourth public AutoNAT server
        ctx.ready({"peer_id": str(node.peer_id), "addrs": [str(a) for a in node.addrs]})
        await ctx.wait_stop()
        return {"peer_id": str(node.peer_id),
                "reservations": len(service.book.reservations())}


async def serve_autonat(ctx: LabContext, settings: dict[str, Any]) -> dict[str, Any]:
    """Run a public AutoNAT server until stopped; ready carries its peer id and addresses."""
    from ..node import Node

    lab_settings = FlareLabSettings.from_dict(settings)
    async with Node(_infra_config(ctx)) as node:
        await wire_autonat_server(node, lab_settings)
        ctx.ready({"peer_id": str(node.peer_id), "addrs": [str(a) for a in node.addrs]})
        await ctx.wait_stop()
        return {"peer_id": str(node.peer_id)}


# ---------------------------------------------------------------------- A and B
def _pick(addrs: list[str], settings: FlareLabSettings) -> str:
    """The address of a public node that A and B use: their transport and family."""
    want_quic = settings.transport == "quic"
    for addr in addrs:
        if ("/quic-v1" in addr) == want_quic and addr.startswith(f"/ip{settings.family}/"):
            return addr
    raise FlarelabError(f"no {settings.transport}/ip{settings.family} address among {addrs}")


async def _join(node: Node, addrs: list[str]) -> list[float]:
    """Connect to every address at once and wait for identify; return the connect times."""
    times: list[float] = []

    async def one(addr: str) -> None:
        started = trio.current_time()
        conn = await node.connect(addr)
        times.append(trio.current_time() - started)
        assert node.identify is not None
        await node.identify.wait_identified(conn)

    async with trio.open_nursery() as nursery:
        for addr in addrs:
            nursery.start_soon(one, addr)
    return times


def _result_dict(result: HolePunchResult) -> dict[str, Any]:
    return {
        "outcome": result.outcome, "reason": result.reason, "attempts": result.attempts,
        "elapsed": result.elapsed, "ok": result.ok,
        "address": str(result.address) if result.address is not None else None,
        "transport": result.transport,
        "rtt": result.rtt_ms / 1000.0 if result.rtt_ms is not None else None,
        "rounds": [{"attempt": r.number, "outcome": str(r.outcome) if r.outcome else None,
                    "reason": r.reason,
                    "rtt": r.rtt,
                    "offered": [str(a) for a in r.our_addrs],
                    "received": [str(a) for a in r.their_addrs],
                    "dialled": [str(a) for a in r.dial_addrs]} for r in result.records],
    }


async def flare_listener(ctx: LabContext, settings: dict[str, Any], relay: list[str],
                         servers: list[list[str]]) -> dict[str, Any]:
    """B: AutoNAT says private, reserve on the relay, wait for A and the upgrade.

    ``ready`` carries ``circuit`` (B's circuit address) and the phase times, or ``error``
    if the flow stopped before the reservation; the upgrade's end comes as a progress
    report ``{"holepunch": ...}``. Returns B's reachability and phase times at the stop.
    """
    from ..node import Node
    from ..protocols.dcutr import HolePunchFailed, HolePunchSucceeded

    lab_settings = FlareLabSettings.from_dict(settings)
    phases: dict[str, float] = {}
    async with Node(_peer_config(ctx, lab_settings)) as node:
        relay_addr = _pick(relay, lab_settings)
        started = trio.current_time()
        wiring = await wire_peer(node, lab_settings, relay_addr)
        with node.events.subscribe(HolePunchSucceeded, HolePunchFailed) as punches:
            await _join(node, [relay_addr, *(_pick(s, lab_settings) for s in servers)])
            phases["join"] = trio.current_time() - started
            private = False
            with trio.move_on_after(lab_settings.autonat_wait):
                private = await wiring.wait_private()
            phases["autonat"] = trio.current_time() - started
            if not private:
                ctx.ready({"error": f"AutoNAT said {wiring.reachability}, not private, "
                                    f"within {lab_settings.autonat_wait:g} s",
                           "phases": phases, "reachability": wiring.reachability})
                await ctx.wait_stop()
                return {"reachability": wiring.reachability, "phases": phases}
            started = trio.current_time()
            circuit = ""
            problem = f"no reservation within {lab_settings.autonat_wait:g} s"
            with trio.move_on_after(lab_settings.autonat_wait):
                try:
                    circuit = await wiring.reserved()
                except (FlarelabError, OSError) as exc:
                    problem = str(exc)
            if not circuit:
                ctx.ready({"error": f"the reservation failed: {problem}", "phases": phases,
                           "reachability": wiring.reachability})
                await ctx.wait_stop()
                return {"reachability": wiring.reachability, "phases": phases}
            phases["reserve"] = trio.current_time() - started
            ctx.ready({"circuit": circuit, "peer_id": str(node.peer_id), "phases": phases,
                       "reachability": wiring.reachability, "via": wiring.via})
            with trio.move_on_after(lab_settings.holepunch_wait):
                event = await punches.next()
                while event.side != "initiator":
                    event = await punches.next()
                ctx.progress({"holepunch": _result_dict(event.result)})
        await ctx.wait_stop()
        return {"reachability": wiring.reachability, "phases": phases,
                "peer_id": str(node.peer_id)}


@dataclass
class _Dialer:
    wiring: PeerWiring
    wait: float  # how long dial_circuit waits for A's AutoNAT
    target: str | None = None  # B's peer id, once dial_circuit ran


#: A's running nodes in this agent process, by session (``flare_dialer`` -> ``dial_circuit``)
_DIALERS: dict[str, _Dialer] = {}


async def flare_dialer(ctx: LabContext, settings: dict[str, Any], relay: list[str],
                       servers: list[list[str]], session: str) -> dict[str, Any]:
    """A: join the relay and the servers (AutoNAT runs), then wait for :func:`dial_circuit`.

    It runs beside B's start, so A's AutoNAT works while B's does. At the stop it reports
    whether a direct connection to B exists (and a ping over it), A's reachability and
    the time of A's direct connect to a public node (``handshake``).
    """
    from ..identity import PeerId
    from ..node import Node
    from ..node.events import ConnectionOpened

    lab_settings = FlareLabSettings.from_dict(settings)
    phases: dict[str, float] = {}
    conn = None
    async with Node(_peer_config(ctx, lab_settings)) as node:
        wiring = await wire_peer(node, lab_settings, _pick(relay, lab_settings))
        times = await _join(node, [_pick(relay, lab_settings),
                                   *(_pick(s, lab_settings) for s in servers)])
        phases["handshake"] = min(times)
        dialer = _DIALERS[session] = _Dialer(wiring, lab_settings.autonat_wait)
        with node.events.subscribe(ConnectionOpened) as opened:
            try:
                ctx.ready({"peer_id": str(node.peer_id), "phases": phases})
                await ctx.wait_stop()
            finally:
                del _DIALERS[session]
            out: dict[str, Any] = {"peer_id": str(node.peer_id), "phases": phases,
                                   "reachability": wiring.reachability, "direct": None}
            if dialer.target is None:
                return out
            b_id = PeerId.from_string(dialer.target)
            # B may see the direct connection a moment before A finished its side
            with trio.move_on_after(DIRECT_GRACE):
                while (conn := node.best_connection(b_id, allow_limited=False)) is None:
                    await opened.next()
        if conn is not None:
            out["direct"] = {"address": str(conn.remote_addr), "transport": conn.transport,
                             "direction": conn.direction}
            with trio.move_on_after(5.0), contextlib.suppress(
                    FlarelabError, OSError, trio.BrokenResourceError):
                out["direct"]["ping_ms"] = await node.ping(b_id, 1)
        return out


async def dial_circuit(ctx: LabContext, session: str, circuit: str) -> dict[str, Any]:
    """A (a second call in A's agent): dial B's circuit address from the session's node;
    return the time it took and whether the connection is limited.

    A first lets its AutoNAT settle (bounded), as a Flare node in its steady state has:
    while A's status is unknown it still advertises its public-looking observed address,
    and B would waste a connection reversal on it (see the report: after a failed
    reversal through these NATs the TCP punches failed too).
    """
    dialer = _DIALERS.get(session)
    if dialer is None:
        raise FlarelabError(f"no A node for session {session!r} in this process")
    dialer.target = circuit.rsplit("/p2p/", 1)[1]
    started = trio.current_time()
    with trio.move_on_after(dialer.wait):
        await dialer.wiring.wait_private()
    settled = trio.current_time() - started
    started = trio.current_time()
    conn = await dialer.wiring.node.connect(circuit)
    return {"relayed_dial": trio.current_time() - started, "limited": conn.limited,
            "autonat_a_wait": settled, "reachability": dialer.wiring.reachability}


# ---------------------------------------------------------------------- without punching
async def dial_without_punching(ctx: LabContext, settings: dict[str, Any], targets: list[str],
                                timeout: float = 2.0,  # noqa: ASYNC109 -- per target
                                ) -> list[dict[str, Any]]:
    """A without DCUtR: try each of ``targets`` (B's multiaddrs with ``/p2p/``) directly.

    Returns, per target, ``connected`` (True would mean the NAT let A in), the error, and
    the time taken.
    """
    from ..node import Node

    lab_settings = FlareLabSettings.from_dict(settings)
    out = []
    async with Node(_peer_config(ctx, lab_settings)) as node:
        for target in targets:
            started = time.monotonic()
            entry: dict[str, Any] = {"target": target, "connected": False, "error": None}
            with trio.move_on_after(timeout) as scope:
                try:
                    await node.connect(target, force_new=True)
                    entry["connected"] = True
                except (FlarelabError, OSError) as exc:
                    entry["error"] = f"{type(exc).__name__}: {exc}"
            if scope.cancelled_caught:
                entry["error"] = f"timed out after {timeout:g} s"
            entry["elapsed"] = time.monotonic() - started
            out.append(entry)
    return out


async def observed_listener(ctx: LabContext, settings: dict[str, Any], relay: list[str]
                            ) -> dict[str, Any]:
    """B without DCUtR: connect to the relay (so B's router maps B's port) and wait.

    ``ready`` carries B's peer id, its addresses, and the addresses the relay observed
    it at (its public mapping).
    """
    from ..node import Node

    lab_settings = FlareLabSettings.from_dict(settings)
    async with Node(_peer_config(ctx, lab_settings)) as node:
        await _join(node, [_pick(relay, lab_settings)])
        observed = [str(o.addr) for o in node.observed_addrs.all(trio.current_time())]
        ctx.ready({"peer_id": str(node.peer_id), "observed": observed,
                   "listen": [str(a) for a in node.listen_addrs()]})
        await ctx.wait_stop()
        return {"peer_id": str(node.peer_id)}
