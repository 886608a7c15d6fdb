"""The AutoNAT node service: serve v1 and v2, probe on a schedule, publish reachability.

    autonat = AutoNATService(node, AutoNATConfig(boot_delay=1.0))
    await autonat.start()                      # runs in the node's nursery
    with node.events.subscribe(ReachabilityChanged) as events:
        change = await events.next()           # ReachabilityChanged(PRIVATE, UNKNOWN, 3)

Client side, one task: at the times :class:`.schedule.ProbeSchedule` says, it picks a
server -- a connected peer that speaks the protocol (identify told us), that we reach on a
public address over an unlimited connection, and that we have not asked recently -- and
asks it about our candidate addresses: the advertised ones and every address peers observed
us at, when the address policy counts them public. v1 answers drive the node's
:class:`.reachability.ReachabilityTracker`; v2 answers drive one tracker per address (and
the node's status when v1 is off). Every probe, status change and address change is an
event on the node's bus (:mod:`.events`).

Server side: the v1 and v2 handlers (never over limited connections) and the v2 dial-back
receiver are registered when the service is made.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING

import trio

from ...errors import LocalProtocolError
from ...node.events import (
    ConnectionOpened,
    Event,
    LocalAddressesChanged,
    PeerIdentified,
    PeerProtocolsUpdated,
)
from ...tracing import spans
from .config import AutoNATConfig
from .dial_policy import probe_candidates, same_ip
from .events import AddressReachabilityChanged, ReachabilityChanged, ReachabilityProbed
from .messages import V1_PROTOCOL, V2_DIAL_BACK_PROTOCOL, V2_DIAL_REQUEST_PROTOCOL
from .metrics import AutoNATMetrics
from .reachability import (
    AddressReachability,
    Reachability,
    ReachabilityTracker,
    aggregate,
)
from .schedule import ProbeSchedule
from .v1 import V1ProbeResult, V1Server, probe_v1
from .v2 import DialBackReceiver, V2ProbeResult, V2Server, probe_v2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node.node import Node

__all__ = ["AutoNATService", "start_autonat"]

log = logging.getLogger("flarelab.autonat")

#: probe events kept for views and debugging
PROBE_HISTORY = 64


class AutoNATService:
    """AutoNAT v1 and v2, client and server, for one node (see the module docstring)."""

    def __init__(self, node: Node, config: AutoNATConfig | None = None) -> None:
        self.node = node
        self.config = cfg = config or AutoNATConfig()
        self.metrics = AutoNATMetrics(node.metrics.meter)
        self.tracker = ReachabilityTracker(cfg.max_confidence)
        self.addresses = AddressReachability(max_confidence=cfg.max_confidence,
                                             max_addresses=cfg.max_tracked_addrs)
        #: the last probes, newest last
        self.probes: deque[ReachabilityProbed] = deque(maxlen=PROBE_HISTORY)
        self.v1_server = V1Server(node, cfg, self.metrics) if cfg.server_v1 else None
        self.v2_server = V2Server(node, cfg, self.metrics) if cfg.server_v2 else None
        self.receiver = (DialBackReceiver(timeout=cfg.dial_back_timeout, tracer=node.tracer)
                         if cfg.client_v2 else None)
        self._v1: ProbeSchedule[PeerId] | None = None
        self._v2: ProbeSchedule[PeerId] | None = None
        self._derived = (Reachability.UNKNOWN, 0)
        self._wake = {1: trio.Event(), 2: trio.Event()}
        self._scope: trio.CancelScope | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._protocols: list[str] = []
        if self.v1_server is not None:
            self._register(V1_PROTOCOL, self.v1_server.handle)
        if self.v2_server is not None:
            self._register(V2_DIAL_REQUEST_PROTOCOL, self.v2_server.handle)
        if self.receiver is not None:
            self._register(V2_DIAL_BACK_PROTOCOL, self.receiver.handle)

    def _register(self, protocol: str, handler: Callable[..., object]) -> None:
        self.node.set_handler(protocol, handler)  # type: ignore[arg-type]
        self._protocols.append(protocol)

    # ================================================================== lifecycle
    async def start(self) -> None:
        """Run the service in the node's nursery until the node stops (or :meth:`aclose`)."""
        await self.node.nursery.start(self.run)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Probe on schedule until cancelled."""
        if self._scope is not None:
            raise LocalProtocolError("the AutoNAT service is already running")
        cfg = self.config
        now = trio.current_time()
        for version in (1, 2):
            schedule: ProbeSchedule[PeerId] = ProbeSchedule(
                started_at=now, boot_delay=cfg.boot_delay, retry_interval=cfg.retry_interval,
                refresh_interval=cfg.refresh_interval, min_gap=cfg.min_probe_gap,
                throttle=cfg.throttle_server_period, max_confidence=cfg.max_confidence)
            if version == 1:
                self._v1 = schedule
            else:
                self._v2 = schedule
        self._remove_listener = self.node.events.add_listener(self._on_event)
        try:
            with trio.CancelScope() as self._scope:
                task_status.started()
                if cfg.client_v1 or cfg.client_v2:
                    await self._loop()
                else:
                    await trio.sleep_forever()
        finally:
            self._remove_listener()
            self._remove_listener = None

    async def aclose(self) -> None:
        """Stop probing and serving."""
        if self._scope is not None:
            self._scope.cancel()
        for protocol in self._protocols:
            self.node.remove_handler(protocol)
        self._protocols.clear()
        await trio.lowlevel.checkpoint()

    # ================================================================== what we know
    @property
    def reachability(self) -> Reachability:
        """The node's reachability (from v1, or from the addresses' when v1 is off)."""
        return self.tracker.status if self.config.client_v1 else self._derived[0]

    @property
    def confidence(self) -> int:
        """The confidence in :attr:`reachability` (0 to ``max_confidence``)."""
        return self.tracker.confidence if self.config.client_v1 else self._derived[1]

    def address_reachability(self, addr: Multiaddr) -> Reachability:
        """What AutoNAT v2 found about ``addr`` (UNKNOWN if not tested)."""
        return self.addresses.status(addr)

    def reachable_addrs(self) -> list[Multiaddr]:
        """Our current addresses that v2 found public."""
        return [a for a in self.candidate_addrs()
                if self.addresses.status(a) is Reachability.PUBLIC]

    def unreachable_addrs(self) -> list[Multiaddr]:
        """Our current addresses that v2 found private."""
        return [a for a in self.candidate_addrs()
                if self.addresses.status(a) is Reachability.PRIVATE]

    def candidate_addrs(self) -> list[Multiaddr]:
        """Our addresses worth testing: advertised, listen and observed ones the policy calls
        public (listen addresses too: a node that is private may hide them from identify,
        and they must still be re-tested, e.g. behind an IPv6 firewall that opens later)."""
        node = self.node
        observed = [o.addr for o in node.observed_addrs.all(trio.current_time())]
        return probe_candidates([*node.advertised_addrs(), *node.listen_addrs(), *observed],
                                node.config.address_policy, limit=self.config.max_request_addrs)

    def servers(self, protocol: str) -> list[PeerId]:
        """Connected peers that speak ``protocol`` and see us from the internet: reached
        over an unlimited connection on an address the policy calls public."""
        node = self.node
        out = []
        for peer in node.connected_peers():
            if protocol not in node.peerstore.protocols(peer):
                continue
            conn = node.best_connection(peer, allow_limited=False)
            if conn is not None and node.config.address_policy.is_public(conn.remote_addr):
                out.append(peer)
        return sorted(out)

    # ================================================================== manual probes
    async def check(self, server: PeerId | None = None) -> V1ProbeResult | None:
        """Probe with v1 now (``server``, or one picked as the schedule would); record the
        answer. None if there is no server or no address to ask about."""
        schedule = self._schedule(1)
        now = trio.current_time()
        addrs = self.candidate_addrs()
        server = server or schedule.pick(self.servers(V1_PROTOCOL), now, self.config.rng)
        if server is None or not addrs:
            return None
        schedule.asked(server, now)
        result = await probe_v1(self.node, server, addrs,
                                request_timeout=self.config.v1_request_timeout,
                                tracer=self.node.tracer)
        schedule.probed(trio.current_time(), refused=result.observation is None)
        self._record_v1(result)
        return result

    async def check_address(self, addr: Multiaddr,
                            server: PeerId | None = None) -> V2ProbeResult | None:
        """Test ``addr`` with v2 now (``server``, or one picked as the schedule would);
        record the answer. None if there is no server."""
        if self.receiver is None:
            raise LocalProtocolError("AutoNAT v2 client is off (client_v2=False)")
        schedule = self._schedule(2)
        now = trio.current_time()
        server = server or schedule.pick(self.servers(V2_DIAL_REQUEST_PROTOCOL), now,
                                         self.config.rng)
        if server is None:
            return None
        schedule.asked(server, now)
        result = await probe_v2(self.node, server, [addr], self.receiver, config=self.config,
                                tracer=self.node.tracer)
        schedule.addr_probed(addr, trio.current_time(), refused=result.observation is None)
        self._record_v2(result, addr)
        return result

    def _schedule(self, version: int) -> ProbeSchedule[PeerId]:
        schedule = self._v1 if version == 1 else self._v2
        if schedule is None:
            raise LocalProtocolError("start the AutoNAT service first (await service.start())")
        return schedule

    # ================================================================== the schedule
    async def _loop(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.config.client_v1:
                nursery.start_soon(self._run_schedule, 1, self._next_v1, self._work_v1)
            if self.config.client_v2:
                nursery.start_soon(self._run_schedule, 2, self._next_v2, self._work_v2)

    async def _run_schedule(self, version: int, next_due: Callable[[], float],
                            work: Callable[[float], Awaitable[None]]) -> None:
        """Sleep until ``next_due()`` (or a wake-up), then ``work``; forever."""
        while True:
            now = trio.current_time()
            due = next_due()
            if version == 1:
                self.metrics.record_next_probe(due if math.isfinite(due) else 0.0)
            if due > now:
                with trio.move_on_at(due):
                    await self._wake[version].wait()
                self._wake[version] = trio.Event()
                continue
            await work(now)

    def _next_v1(self) -> float:
        if not self.candidate_addrs():
            return math.inf  # nothing to ask about yet: identify events wake us
        return self._schedule(1).next_due(self.tracker.status, self.tracker.confidence)

    async def _work_v1(self, now: float) -> None:
        schedule = self._schedule(1)
        server = schedule.pick(self.servers(V1_PROTOCOL), now, self.config.rng)
        schedule.tried(now, found_server=server is not None)
        if server is not None:
            await self.check(server)

    def _address_states(self) -> list[tuple[Multiaddr, Reachability, int]]:
        out = []
        for addr in self.candidate_addrs():
            tracker = self.addresses.get(addr)
            if tracker is None:
                out.append((addr, Reachability.UNKNOWN, 0))
            else:
                out.append((addr, tracker.status, tracker.confidence))
        return out

    def _next_v2(self) -> float:
        schedule = self._schedule(2)
        return min((schedule.addr_due(a, s, c) for a, s, c in self._address_states()),
                   default=math.inf)

    async def _work_v2(self, now: float) -> None:
        schedule = self._schedule(2)
        states = self._address_states()
        due = [(s is not Reachability.UNKNOWN, a) for a, s, c in states
               if schedule.addr_due(a, s, c) <= now]
        for _, addr in sorted(due, key=lambda item: item[0]):  # unknown addresses first
            now = trio.current_time()
            server = schedule.pick(self.servers(V2_DIAL_REQUEST_PROTOCOL), now, self.config.rng)
            schedule.tried(now, found_server=server is not None)
            if server is None:
                break
            await self.check_address(addr, server)
        schedule.forget_addrs(a for a, _, _ in states)

    def _on_event(self, event: Event) -> None:
        """Listen to the node's bus (synchronously): new servers, address changes."""
        if isinstance(event, PeerIdentified | PeerProtocolsUpdated):
            protocols = self.node.peerstore.protocols(event.peer)
            if self._v1 is not None and V1_PROTOCOL in protocols:
                self._v1.server_appeared(
                    status_unknown=self.tracker.status is Reachability.UNKNOWN)
                self._wake[1].set()
            if self._v2 is not None and V2_DIAL_REQUEST_PROTOCOL in protocols:
                self._v2.server_appeared(status_unknown=len(self.addresses) == 0)
                self._wake[2].set()
        elif isinstance(event, LocalAddressesChanged):
            self.tracker.addresses_changed()
            self.addresses.addresses_changed()
            self._wake[1].set()
            self._wake[2].set()
        elif isinstance(event, ConnectionOpened):
            conn = event.connection
            if (conn.direction == spans.DIRECTION_INBOUND and not conn.limited
                    and self.node.config.address_policy.is_public(conn.remote_addr)
                    and not any(same_ip(conn.remote_addr, a) for a in self.node.listen_addrs())):
                now = trio.current_time()
                for schedule in (self._v1, self._v2):
                    if schedule is not None:
                        schedule.inbound(now)

    # ================================================================== recording
    def _record_v1(self, result: V1ProbeResult) -> None:
        self.metrics.record_response_received(result.status if result.response else "error")
        self._publish_probe(ReachabilityProbed(result.server, 1, result.status,
                                               result.observation))
        if result.observation is None:
            return
        change = self.tracker.observe(result.observation, trio.current_time())
        self.metrics.record_reachability(self.tracker.status, self.tracker.confidence)
        if change is not None:
            log.info("%s: reachability %s -> %s", self.node, change.previous.value,
                     change.current.value)
            self.node.events.publish(
                ReachabilityChanged(change.current, change.previous, change.confidence))

    def _record_v2(self, result: V2ProbeResult, asked: Multiaddr) -> None:
        response = result.response
        self.metrics.record_v2_probed(
            response_status=response.status_name if response else "error",
            dial_status=response.dial_status_name if response else "",
            reachability=result.observation.value if result.observation else "none")
        self._publish_probe(ReachabilityProbed(result.server, 2, result.status,
                                               result.observation, result.addr or asked))
        if result.observation is None or result.addr is None:
            return
        change = self.addresses.observe(result.addr, result.observation, trio.current_time())
        if change is not None:
            self.node.events.publish(AddressReachabilityChanged(
                result.addr, change.current, change.previous, change.confidence))
        if not self.config.client_v1:
            derived = aggregate(t for _, t in self.addresses.items())
            previous, self._derived = self._derived, derived
            self.metrics.record_reachability(*derived)
            if derived[0] is not previous[0]:
                self.node.events.publish(ReachabilityChanged(derived[0], previous[0],
                                                             derived[1]))

    def _publish_probe(self, event: ReachabilityProbed) -> None:
        self.probes.append(event)
        self.node.events.publish(event)


async def start_autonat(node: Node, config: AutoNATConfig | None = None) -> AutoNATService:
    """Make an :class:`AutoNATService` for a running ``node`` and start it."""
    service = AutoNATService(node, config)
    await service.start()
    return service
