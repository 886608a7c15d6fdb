"""The Flare orchestrator: AutoNAT -> relays -> reservations -> DCUtR, on one node.

    flare = enable_flare(node, FlareConfig(relays=["/ip4/198.51.100.1/tcp/4001/p2p/12D3..."]))
    async with node:                                   # (or enable it on a running node)
        state = await flare.wait_for("reserved")       # AutoNAT said private; reserved
        print(state.circuit_addrs)                     # what peers dial to reach us

:func:`enable_flare` installs the services -- :class:`~flarelab.protocols.autonat.
AutoNATService` (client and server), the ``p2p-circuit`` transport
(:class:`~flarelab.protocols.relay.RelayTransport`) and DCUtR
(:class:`~flarelab.protocols.dcutr.HolePunchService`) -- and runs one task that follows
the node's event bus: AutoNAT's :class:`~flarelab.protocols.autonat.ReachabilityChanged`,
identify (peers that speak the relay hop protocol become relay candidates) and DCUtR's
start and end events. The decisions are the pure :class:`~.state.FlareCore`'s; this
module carries them out:

* **reserve**: ``node.listen("<relay>/p2p-circuit")``; the relay transport keeps the
  reservation (refreshes it, advertises the circuit addresses, which pushes identify);
  when a held reservation ends, the core backs off from that relay and picks another;
* **public**: reservations are dropped (``keep_reservations_when_public`` keeps them) and,
  with ``relay_service``, the node serves as a relay (:class:`~flarelab.protocols.relay.
  RelayService`) until AutoNAT says otherwise;
* **advertise**: while private, the node advertises (identify, ``node.addrs``) its
  private LAN addresses, its circuit addresses and the addresses AutoNAT v2 found
  reachable -- not the public-looking observed or listen addresses AutoNAT could not
  reach, as go-libp2p's autorelay does. DCUtR still offers those in its CONNECT (it reads
  them from the node, not from identify), where they are what the punch needs; and a peer
  that sees no public address of ours does not waste a connection reversal on it.
* **upgrade**: inbound relayed connections are upgraded by the DCUtR service (B's role);
  the state shows ``upgrading`` while one runs.

Every change of :attr:`Flare.state` is published as
:class:`~.events.FlareStateChanged`; :meth:`Flare.wait_for` waits on those, never polls.
The phases are traced by the services themselves (``autonat.probe``, ``relay.reserve``,
``dcutr.upgrade``, ...); the ``libp2p_autorelay_*`` family (:mod:`.metrics`) counts
reservations, and ``node.metrics`` holds every family (autonat, holepunch, relay service).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..errors import LocalProtocolError
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..node.events import Event, PeerIdentified, PeerProtocolsUpdated
from ..protocols.autonat import AutoNATService, Reachability, ReachabilityChanged
from ..protocols.dcutr import (
    SIDE_INITIATOR,
    HolePunchFailed,
    HolePunchService,
    HolePunchStarted,
    HolePunchSucceeded,
)
from ..protocols.relay import HOP_PROTOCOL, RelayListener, RelayService, RelayTransport
from .config import FlareConfig
from .events import FlareStateChanged
from .metrics import AutoRelayMetrics
from .state import (
    Command,
    Discover,
    FlareCore,
    FlarePhase,
    FlareState,
    Release,
    Reserve,
    ServeRelay,
    Source,
)

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["Flare", "enable_flare"]

log = logging.getLogger("flarelab.flare")

#: states kept for :meth:`Flare.wait_for` (a waiter sees every state published meanwhile)
STATE_HISTORY = 64
#: events queued for the orchestrator's task at most (it drains them at once)
MAX_QUEUED = 1024
#: a discover hook's time to answer, and the candidates taken from one answer
DISCOVER_TIMEOUT = 30.0
MAX_DISCOVERED = 16

StateMatch = FlarePhase | str | Callable[[FlareState], bool]


class Flare:
    """Project Flare on one node (see the module docstring); made by :func:`enable_flare`."""

    def __init__(self, node: Node, config: FlareConfig | None = None) -> None:
        self.node = node
        self.config = cfg = config or FlareConfig()
        self.autonat = AutoNATService(node, cfg.autonat)
        self.relay_transport = RelayTransport.install(node, cfg.relay_client)
        self.holepunch = HolePunchService(node, cfg.holepunch)
        self.relay_service: RelayService | None = None
        self.metrics = AutoRelayMetrics(node.metrics.meter)
        node.metrics.autonat = self.autonat.metrics
        node.metrics.holepunch = self.holepunch.metrics
        node.metrics.autorelay = self.metrics
        self.core = FlareCore(
            max_relays=cfg.max_relays, max_candidates=cfg.max_candidates,
            backoff=cfg.relay_backoff, backoff_max=cfg.relay_backoff_max,
            keep_when_public=cfg.keep_reservations_when_public,
            relay_service=cfg.relay_service, discover_interval=cfg.discover_interval,
            can_discover=cfg.discover is not None)
        self._state = self.core.state
        self._seq = 0
        self._history: deque[tuple[int, FlareState]] = deque([(0, self._state)],
                                                             maxlen=STATE_HISTORY)
        self._changed = trio.Event()
        self._queue: deque[Event] = deque(maxlen=MAX_QUEUED)
        self._wake = trio.Event()
        self._scopes: dict[PeerId, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._hiding = False
        self._remove_listener: Callable[[], None] | None = node.events.add_listener(
            self._on_event)
        node.address_filters["flare"] = self._advertisable

    # ================================================================== lifecycle
    async def start(self) -> None:
        """Run the flow in the node's nursery until the node stops (or :meth:`aclose`)."""
        await self.node.nursery.start(self.run)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Start AutoNAT, then follow events and carry out the core's commands."""
        if self._scope is not None or self.core.stopped:
            raise LocalProtocolError("this Flare has run already")
        with trio.CancelScope() as self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self.autonat.start()
                    now = trio.current_time()
                    for addr in self.config.relays:
                        self._add_relay(addr, Source.CONFIGURED, now)
                    for peer in self.node.connected_peers():
                        self._consider(peer)
                    self._apply(self.core.start(now, self.autonat.reachability))
                    task_status.started()
                    await self._loop()
            finally:
                self._nursery = None
                self._apply(self.core.stop())

    async def aclose(self) -> None:
        """Stop the flow and its services: reservations end, nothing is served any more."""
        if self._scope is not None:
            self._scope.cancel()
        else:
            self._apply(self.core.stop())
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        self.node.address_filters.pop("flare", None)
        self.holepunch.close()
        await self.autonat.aclose()
        if self.node.flare is self:
            self.node.flare = None

    # ================================================================== state
    @property
    def state(self) -> FlareState:
        """The flow's current state (what the last :class:`FlareStateChanged` said)."""
        return self._state

    @property
    def history(self) -> list[FlareState]:
        """The last states, oldest first (up to 64, the initial idle state included)."""
        return [state for _, state in self._history]

    @property
    def reachability(self) -> Reachability:
        """What AutoNAT says about the node now."""
        return self.autonat.reachability

    async def wait_for(self, match: StateMatch) -> FlareState:
        """Wait until the state matches (a phase, or a predicate on :class:`FlareState`);
        return the matching state. A state published while we waited counts even if a
        newer one replaced it before we woke. Bound it with ``trio.fail_after``."""
        if callable(match):
            predicate = match
        else:
            phase = FlarePhase(match)

            def predicate(state: FlareState) -> bool:
                return state.phase is phase

        seen = self._seq
        if predicate(self._state):
            return self._state
        while True:
            await self._changed.wait()
            for seq, state in list(self._history):
                if seq > seen and predicate(state):
                    return state
            seen = self._seq

    def _publish(self) -> None:
        state = self.core.state
        if state == self._state:
            return
        previous, self._state = self._state, state
        self._seq += 1
        self._history.append((self._seq, state))
        log.info("%s: flare %s", self.node, state.describe())
        self.metrics.record_status(self.core.seeking)
        self.metrics.record_addresses(len(state.circuit_addrs))
        self.metrics.record_desired(self.config.max_relays if self.core.seeking else 0)
        self.node.events.publish(FlareStateChanged(state, previous))
        self._changed.set()
        self._changed = trio.Event()

    # ================================================================== events in
    def _on_event(self, event: Event) -> None:
        """Queue what concerns us (synchronously, from the node's bus) for :meth:`_loop`."""
        if isinstance(event, (ReachabilityChanged, PeerIdentified, PeerProtocolsUpdated,
                              HolePunchStarted, HolePunchSucceeded, HolePunchFailed)):
            self._queue.append(event)
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            while self._queue:
                self._handle(self._queue.popleft())
            wakeup = self.core.next_wakeup()
            with trio.move_on_at(wakeup if wakeup is not None else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()
            self._apply(self.core.tick(trio.current_time()))

    def _handle(self, event: Event) -> None:
        now = trio.current_time()
        if isinstance(event, ReachabilityChanged):
            self._apply(self.core.set_reachability(self.autonat.reachability, now))
        elif isinstance(event, PeerIdentified | PeerProtocolsUpdated):
            self._consider(event.peer)
        elif isinstance(event, HolePunchStarted) and event.side == SIDE_INITIATOR:
            self.core.upgrade_started(event.peer)
            self._publish()
        elif isinstance(event, HolePunchSucceeded | HolePunchFailed) and (
                event.side == SIDE_INITIATOR):
            self.core.upgrade_ended(event.peer)
            self._publish()

    def _consider(self, peer: PeerId) -> None:
        """Make a connected peer that speaks the hop protocol a relay candidate."""
        if not self.config.use_identified_relays or peer == self.node.peer_id:
            return
        now = trio.current_time()
        hop = HOP_PROTOCOL in self.node.peerstore.protocols(peer)
        known = self.core.candidates.get(peer)
        if hop and self.node.best_connection(peer, allow_limited=False) is not None:
            if known is None:
                self.metrics.record_candidate(True)
            self._apply(self.core.add_candidate(peer, None, Source.IDENTIFIED, now))
        elif not hop and known is not None and known.source is Source.IDENTIFIED:
            self.metrics.record_candidate(False)
            self._apply(self.core.remove_candidate(peer, now))

    def _add_relay(self, entry: Any, source: Source, now: float) -> None:
        """Add a relay candidate given as a multiaddr, a peer id or a peer info."""
        try:
            peer, addr = _relay_of(entry)
        except (ValueError, LocalProtocolError) as exc:
            log.warning("%s: ignoring relay %r: %s", self.node, entry, exc)
            return
        if peer == self.node.peer_id:
            return
        if peer not in self.core.candidates:
            self.metrics.record_candidate(True)
        self._apply(self.core.add_candidate(peer, addr, source, now))

    # ================================================================== commands out
    def _apply(self, commands: Sequence[Command]) -> None:
        """Carry out the core's commands (synchronously: tasks do the waiting), publish."""
        for command in commands:
            if isinstance(command, Reserve):
                if self._nursery is not None:
                    self._nursery.start_soon(self._keep, command.relay, command.addr)
            elif isinstance(command, Release):
                scope = self._scopes.pop(command.relay, None)
                if scope is not None:
                    scope.cancel()
            elif isinstance(command, ServeRelay):
                self._serve_relay(command.on)
            elif isinstance(command, Discover) and self._nursery is not None:
                self._nursery.start_soon(self._discover)
        self._update_advertising()
        self._publish()

    def _serve_relay(self, on: bool) -> None:
        if on and self.relay_service is None:
            self.relay_service = RelayService(self.node, self.config.relay_service_config)
            self.node.metrics.relay_service = self.relay_service.metrics
            log.info("%s: serving as a relay", self.node)
        elif not on and self.relay_service is not None:
            self.relay_service.close()
            self.relay_service = None

    async def _keep(self, relay: PeerId, addr: Multiaddr | None) -> None:
        """Reserve on ``relay`` and follow the reservation until it ends or is released."""
        scope = trio.CancelScope()
        self._scopes[relay] = scope
        listener: RelayListener | None = None
        try:
            with scope:
                base = addr.with_peer_id(relay) if addr is not None else Multiaddr(
                    f"/p2p/{relay}")
                try:
                    await self.node.listen(base.encapsulate("/p2p-circuit"))
                except Exception as exc:  # refused, unreachable, a protocol error
                    reason = f"{type(exc).__name__}: {exc}"
                    log.info("%s: no reservation on %s: %s", self.node, relay, reason)
                    self.metrics.record_request(type(exc).__name__)
                    self._apply(self.core.reserve_failed(relay, reason,
                                                         trio.current_time()))
                    return
                listener = next(x for x in self.relay_transport.listeners()
                                if x.relay == relay)
                self.metrics.record_request("success")
                self._apply(self.core.reserved(relay, listener.circuit_addrs,
                                               trio.current_time()))
                while True:
                    await listener.wait_changed()
                    now = trio.current_time()
                    if listener.circuit_addrs:
                        self._apply(self.core.reserved(relay, listener.circuit_addrs, now))
                        continue
                    error = listener.last_error
                    reason = (f"{type(error).__name__}: {error}" if error is not None else
                              "the connection to the relay closed")
                    log.info("%s: lost the reservation on %s: %s", self.node, relay, reason)
                    self._apply(self.core.reservation_lost(relay, reason, now))
                    return
        finally:
            if self._scopes.get(relay) is scope:
                del self._scopes[relay]
            if listener is not None:
                self.metrics.record_closed()
                with trio.CancelScope(shield=True):
                    await listener.aclose()

    async def _discover(self) -> None:
        hook = self.config.discover
        if hook is None:
            return
        try:
            with trio.fail_after(DISCOVER_TIMEOUT):
                found = list(await hook())
        except Exception as exc:
            log.info("%s: relay discovery failed: %s", self.node, exc)
            return
        now = trio.current_time()
        self.core.discovered(now)
        for entry in found[:MAX_DISCOVERED]:
            self._add_relay(entry, Source.DISCOVERED, now)

    # ================================================================== addresses
    def _update_advertising(self) -> None:
        hide = self.config.hide_unreachable_addrs and self.core.seeking
        if hide != self._hiding:
            self._hiding = hide
            self.node.addresses_changed()

    def _advertisable(self, addrs: list[Multiaddr]) -> list[Multiaddr]:
        """While private: private, relayed and AutoNAT-v2-reachable addresses only."""
        if not self._hiding:
            return addrs
        policy = self.node.config.address_policy
        return [a for a in addrs if a.is_relayed or not policy.is_public(a)
                or self.autonat.address_reachability(a) is Reachability.PUBLIC]

    def __repr__(self) -> str:
        return f"<Flare on {self.node.label}: {self._state.phase.value}>"


def _relay_of(entry: Any) -> tuple[PeerId, Multiaddr | None]:
    """(relay, its address without /p2p/ or None) from a multiaddr, peer id or peer info."""
    if isinstance(entry, PeerId):
        return entry, None
    if isinstance(entry, (str, Multiaddr)):
        addr = Multiaddr(entry)
        if addr.is_relayed:
            raise LocalProtocolError("a relay address must not itself be relayed")
        peer = addr.peer_id
        if peer is None:
            raise LocalProtocolError("a relay address must end in /p2p/<relay id>")
        rest = addr.without_peer_id()
        return peer, rest if len(rest) else None
    peer = getattr(entry, "peer_id", None)
    if not isinstance(peer, PeerId):
        raise LocalProtocolError("not a multiaddr, peer id or peer info")
    addrs = [Multiaddr(a).without_peer_id() for a in getattr(entry, "addrs", ())]
    addrs = [a for a in addrs if not a.is_relayed and len(a)]
    return peer, addrs[0] if addrs else None


def enable_flare(node: Node, config: FlareConfig | None = None) -> Flare:
    """Turn Project Flare on for ``node``: AutoNAT, relays, DCUtR, and the flow that ties
    them together (see :mod:`flarelab.flare.orchestrator`).

    Call it before the node starts (the flow starts with it) or while it runs (the flow
    starts now); once per node.
    """
    if getattr(node, "flare", None) is not None:
        raise LocalProtocolError(f"Flare is enabled on {node} already")
    flare = Flare(node, config)
    node.flare = flare
    try:
        nursery = node.nursery
    except LocalProtocolError:  # not started yet: start with it
        node.start_hooks.append(flare.start)
    else:
        nursery.start_soon(flare.run)
    return flare
