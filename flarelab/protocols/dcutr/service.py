"""HolePunchService: DCUtR on a node, in both roles.

    service = HolePunchService(node)        # registers /libp2p/dcutr (allowed on limited
                                            # connections) and watches new connections

* **B** -- the node that *received* a relayed (limited) connection: once identify has run
  on it, the service upgrades it (:meth:`HolePunchService.upgrade`, :mod:`.initiator`):
  connection reversal if A advertises public addresses, else up to three CONNECT/SYNC
  rounds, each followed by a TCP simultaneous open or a QUIC punch. The pure
  :class:`~.attempt.HolePunchUpgrade` decides; the initiator carries out its commands.
* **A** -- the node that *dialled* through the relay: it answers B's rounds on the
  ``/libp2p/dcutr`` streams B opens and dials B's addresses the moment SYNC arrives, as
  the client of the security handshake whichever way the kernel connected
  (:mod:`.receiver`). When B's connection reversal reaches A, A notes it too.

On success new streams go over the direct connection (the node prefers unlimited ones)
and the relayed connection is closed after ``relay_grace`` seconds. Every step is traced:
``dcutr.upgrade`` (B, the whole upgrade, with ``libp2p.outcome``/``libp2p.reason``),
``dcutr.attempt`` (one round on either side: attempt number, RTT, addresses both ways,
message events) and ``holepunch.dial`` (addresses tried, the winner and its transport).
Results go on the node's event bus (:mod:`.events`), into go's metric family
(:mod:`.metrics`) and into :attr:`HolePunchService.results`.

Limits: one upgrade per peer at a time and ``max_concurrent_upgrades`` in all; on A's side
two streams per peer (the current round and the next), ``max_concurrent_rounds`` in all and
``max_rounds_per_connection`` per relayed connection; CONNECTs of at most 4 KiB and 64
addresses; at most ``max_dial_addrs`` public addresses dialled per round.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ...errors import LocalProtocolError
from ...node.events import ConnectionClosed, ConnectionOpened, Event
from ...node.swarm import close_quietly
from ...tracing import spans
from .attempt import Outcome
from .config import HolePunchConfig
from .dial import DirectConnections, InboundClaims, transport_of
from .events import (
    SIDE_INITIATOR,
    SIDE_RECEIVER,
    HolePunchAttemptFailed,
    HolePunchFailed,
    HolePunchResult,
    HolePunchSucceeded,
)
from .initiator import Initiator
from .messages import DCUTR_PROTOCOL
from .metrics import HolePunchMetrics
from .receiver import Receiver

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node import Node
    from ...node.connection import Connection

__all__ = ["RELAY_CLOSE_REASON", "HolePunchService"]

log = logging.getLogger("flarelab.dcutr")

#: how many finished results :attr:`HolePunchService.results` keeps
RESULTS_KEPT = 256
#: the close reason of a relayed connection replaced by a direct one
RELAY_CLOSE_REASON = "upgraded to a direct connection (DCUtR)"


class HolePunchService:
    """DCUtR for one node (see the module docstring).

    ``rng`` drives the QUIC punch (packet contents and intervals): seed it for runs that
    repeat exactly.
    """

    def __init__(
        self,
        node: Node,
        config: HolePunchConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.config = config or HolePunchConfig()
        self.rng = rng or random.Random()
        self.tracer = node.tracer
        self.metrics = HolePunchMetrics(node.metrics.meter, node.metrics.enabled)
        #: wakes the upgrades and dials waiting for a direct connection to a peer
        self.direct = DirectConnections()
        #: inbound TCP connections A upgrades as the client while it punches
        self.claims = InboundClaims()
        #: the last results (upgrades as B, rounds as A), oldest first
        self.results: deque[HolePunchResult] = deque(maxlen=RESULTS_KEPT)
        self._initiator = Initiator(self)
        self._receiver = Receiver(self)
        self._upgrading: dict[PeerId, Connection] = {}
        self._closing_relayed: set[int] = set()
        node.set_handler(DCUTR_PROTOCOL, self._receiver.answer, allow_limited=True)
        self._remove_listener = node.events.add_listener(self._on_event)
        self._hooks: list[Callable[..., object]] | None = getattr(
            node, "inbound_role_hooks", None)
        if self._hooks is not None:
            self._hooks.append(self.claims.role_for)

    def close(self) -> None:
        """Stop serving DCUtR and watching connections (running upgrades go on)."""
        self.node.remove_handler(DCUTR_PROTOCOL)
        self._remove_listener()
        if self._hooks is not None and self.claims.role_for in self._hooks:
            self._hooks.remove(self.claims.role_for)

    # ================================================================== B
    async def upgrade(self, relayed: Connection) -> HolePunchResult:
        """Run B's side of DCUtR over ``relayed`` (an inbound limited connection).

        The service does this by itself for every inbound relayed connection (unless
        ``config.initiate`` is False); call it to do it by hand.
        """
        if not relayed.limited or relayed.direction != spans.DIRECTION_INBOUND:
            raise LocalProtocolError(
                f"only an inbound limited (relayed) connection can be upgraded, not {relayed}")
        peer = relayed.remote_peer
        running = self._upgrading.get(peer)
        if running is not None and running is not relayed:
            raise LocalProtocolError(f"a DCUtR upgrade with {peer} is running already")
        self._upgrading[peer] = relayed
        try:
            return await self._initiator.run(relayed)
        finally:
            if self._upgrading.get(peer) is relayed:
                del self._upgrading[peer]

    def upgrading(self) -> list[PeerId]:
        """The peers B-side upgrades are running with."""
        return list(self._upgrading)

    # ================================================================== connections
    def _on_event(self, event: Event) -> None:
        if isinstance(event, ConnectionOpened):
            conn = event.connection
            if not conn.limited:
                self.direct.opened(conn)
                if self._reversal_reached_us(conn):
                    with contextlib.suppress(LocalProtocolError):  # shutting down
                        self.node.nursery.start_soon(self._reversed, conn)
            elif conn.direction == spans.DIRECTION_INBOUND and self.config.initiate:
                self._spawn_upgrade(conn)
        elif isinstance(event, ConnectionClosed):
            self._receiver.forget(event.connection)

    def _spawn_upgrade(self, relayed: Connection) -> None:
        peer = relayed.remote_peer
        if peer in self._upgrading:
            log.debug("a DCUtR upgrade with %s is running already", peer)
            return
        if len(self._upgrading) >= self.config.max_concurrent_upgrades:
            log.info("not upgrading the relayed connection from %s: %d upgrades are running",
                     peer, len(self._upgrading))
            return
        if DirectConnections.existing(self.node, peer) is not None:
            return  # nothing to upgrade
        try:
            nursery = self.node.nursery
        except LocalProtocolError:
            return  # the node is shutting down
        self._upgrading[peer] = relayed
        nursery.start_soon(self._run_upgrade, relayed)

    async def _run_upgrade(self, relayed: Connection) -> None:
        try:
            await self.upgrade(relayed)
        except Exception:
            log.exception("the DCUtR upgrade with %s failed unexpectedly", relayed.remote_peer)
        finally:
            if self._upgrading.get(relayed.remote_peer) is relayed:
                del self._upgrading[relayed.remote_peer]

    def _reversal_reached_us(self, conn: Connection) -> bool:
        """A: whether ``conn`` is B's connection reversal -- an inbound direct connection
        from a peer we reached only through a relay so far."""
        peer = conn.remote_peer
        if conn.direction != spans.DIRECTION_INBOUND or self._receiver.busy_with(peer):
            return False
        conns = self.node.connections(peer)
        return any(c.limited and c.direction == spans.DIRECTION_OUTBOUND for c in conns) and \
            not any(not c.limited and c is not conn for c in conns)

    async def _reversed(self, conn: Connection) -> None:
        """A: trace and publish B's connection reversal (after the connection's own event)."""
        peer = conn.remote_peer
        relayed = next((c for c in self.node.connections(peer)
                        if c.limited and c.direction == spans.DIRECTION_OUTBOUND), None)
        if relayed is None:
            return
        now = trio.current_time()
        result = HolePunchResult(
            peer, SIDE_RECEIVER, Outcome.CONNECTION_REVERSED.value, "", 0, now, now,
            now - relayed.opened_at, conn, conn.remote_addr, transport_of(conn.remote_addr))
        with self.tracer.start_as_current_span(spans.DCUTR_UPGRADE, attributes={
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
            spans.LIBP2P_ROLE: spans.ROLE_RESPONDER,
            spans.LIBP2P_CONNECTION_ID: relayed.id,
            spans.LIBP2P_OUTCOME: result.outcome,
            spans.LIBP2P_ATTEMPT: 0,
            spans.LIBP2P_MULTIADDR: str(conn.remote_addr),
            spans.LIBP2P_TRANSPORT: result.transport or conn.transport,
        }):
            pass
        self.conclude(result, relayed)

    # ================================================================== endings
    def can_dial(self, addr: Multiaddr) -> bool:
        """Whether one of the node's transports dials ``addr``."""
        return bool(self.node.dialer.dialable([addr]))

    def conclude(self, result: HolePunchResult, relayed: Connection) -> None:
        """Keep and publish ``result``; on success schedule the relayed connection's close."""
        self.results.append(result)
        events = self.node.events
        if result.connection is not None:
            events.publish(HolePunchSucceeded(result.peer, result.side, result.outcome, result))
            self._close_relayed_later(relayed)
        elif result.side == SIDE_INITIATOR:
            events.publish(HolePunchFailed(result.peer, result.side, result.outcome,
                                           result.reason, result))
        else:
            events.publish(HolePunchAttemptFailed(result.peer, result.side, result.attempts,
                                                  result.outcome, result.reason))

    def _close_relayed_later(self, relayed: Connection) -> None:
        grace = self.config.relay_grace
        if grace is None or relayed.id in self._closing_relayed or relayed.is_closed:
            return
        try:
            nursery = self.node.nursery
        except LocalProtocolError:
            return
        self._closing_relayed.add(relayed.id)

        async def close_later() -> None:
            try:
                await trio.sleep(grace)
                if DirectConnections.existing(self.node, relayed.remote_peer) is not None:
                    await close_quietly(relayed, RELAY_CLOSE_REASON)
            finally:
                self._closing_relayed.discard(relayed.id)

        nursery.start_soon(close_later)
