"""The ``p2p-circuit`` transport: dial through relays, listen through reservations.

Install it on a node (it serves the stop protocol from then on)::

    relay_transport = RelayTransport.install(node)
    await node.listen("/ip4/203.0.113.7/tcp/4001/p2p/RELAY/p2p-circuit")   # reserve
    conn = await node.connect("/ip4/203.0.113.7/tcp/4001/p2p/RELAY/p2p-circuit/p2p/TARGET")

**Dialling** ``<relay address>/p2p/RELAY/p2p-circuit[/p2p/TARGET]`` connects to the relay
(directly: never over a limited connection), sends hop CONNECT, and hands the relayed
stream to the node as a :class:`~flarelab.transports.base.RawConnection` with
``limited=True``; the node upgrades it with Noise and a muxer as usual (we are the
initiator), and only protocols that allow limited connections run over it. An address
without ``/p2p/TARGET`` is dialled for the peer the dialer expects (identify announces
circuit addresses that way).

**Listening** on ``<relay address>/p2p/RELAY/p2p-circuit`` (or just ``/p2p/RELAY/p2p-circuit``
for a relay the peerstore knows) keeps a reservation there: :meth:`Node.listen` returns
once the first RESERVE is granted (and raises what refused it); afterwards the
:class:`RelayListener` refreshes it before it expires and re-reserves when the connection
to the relay is lost (with backoff), as :class:`~.keeper.ReservationKeeper` schedules. The
circuit addresses are advertised through ``node.extra_addrs["relay:<RELAY>"]`` and
``node.addresses_changed()`` (which pushes identify); a relay listener binds no address of
its own, so its ``addrs`` is empty. Relayed connections that arrive over the stop
protocol from a relay we listen through are upgraded as inbound connections (we are
the responder); from any other relay they are refused with NO_RESERVATION.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ...errors import DialError, FlarelabError, LocalProtocolError
from ...identity import PeerId
from ...multiaddr import Multiaddr
from ...transports.base import ConnectionHandler, Listener, RawConnection, Transport
from ...wire import with_leftover
from .client import Reservation, open_circuit, reserve
from .keeper import ReservationKeeper
from .messages import HOP_PROTOCOL, STOP_PROTOCOL, Limit
from .stop import accept_stop

if TYPE_CHECKING:
    from ...node import Node
    from ...node.connection import Connection, NetStream

__all__ = ["CIRCUIT_TRANSPORT", "RelayClientConfig", "RelayListener", "RelayTransport",
           "split_circuit_addr"]

log = logging.getLogger("flarelab.relay")

#: ``RawConnection.transport`` of relayed connections
CIRCUIT_TRANSPORT = "p2p-circuit"


@dataclass(frozen=True)
class RelayClientConfig:
    """How a node uses relays."""

    #: time the relay has to answer a RESERVE or a CONNECT
    reply_timeout: float = 10.0
    #: time a relay has to send its STOP CONNECT once it opened the stream
    stop_timeout: float = 10.0
    #: refresh a reservation after this fraction of its lifetime (rust: 3/4)
    refresh_fraction: float = 0.75
    #: first and longest wait between failed reservation attempts
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    #: the UTC clock that reservation expirations are read in
    unix_time: Callable[[], float] = field(default=time.time)


def split_circuit_addr(addr: Multiaddr) -> tuple[Multiaddr, PeerId, PeerId | None] | None:
    """Split ``<relay addr>/p2p/RELAY/p2p-circuit[/p2p/TARGET]``.

    Returns (relay address without its /p2p/ part, possibly empty; relay; target or None),
    or None if ``addr`` is not such an address (no relay id, nested circuits, other
    protocols after the circuit).
    """
    names = addr.protocol_names()
    if names.count("p2p-circuit") != 1:
        return None
    index = names.index("p2p-circuit")
    if index == 0 or names[index - 1] != "p2p" or "p2p" in names[: index - 1]:
        return None
    if names[index + 1 :] not in ((), ("p2p",)):
        return None
    head = addr.decapsulate("/p2p-circuit")
    try:
        relay, target = head.peer_id, addr.peer_id
    except ValueError:  # a /p2p/ value that is no valid peer id
        return None
    if relay is None:  # pragma: no cover - guarded by the names check
        return None
    return head.without_peer_id(), relay, target


class RelayTransport(Transport):
    """Dial through relays and listen through reservations (see the module docstring)."""

    name = CIRCUIT_TRANSPORT

    def __init__(self, node: Node, config: RelayClientConfig | None = None) -> None:
        self.node = node
        self.config = config or RelayClientConfig()
        self.tracer = node.tracer
        self._listeners: dict[PeerId, RelayListener] = {}

    @classmethod
    def install(cls, node: Node, config: RelayClientConfig | None = None) -> RelayTransport:
        """Add the transport to ``node`` and serve the stop protocol (once per node)."""
        for transport in node.transports:
            if isinstance(transport, RelayTransport):
                return transport
        transport = cls(node, config)
        node.transports.append(transport)
        node.set_handler(STOP_PROTOCOL, transport._serve_stop)
        return transport

    # ------------------------------------------------------------------ Transport
    def can_dial(self, addr: Multiaddr) -> bool:
        return split_circuit_addr(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        parts = split_circuit_addr(addr)
        return parts is not None and parts[2] is None

    async def dial(
        self, addr: Multiaddr, *, expected_peer: PeerId | None = None
    ) -> RawConnection:
        parts = split_circuit_addr(addr)
        if parts is None:
            raise LocalProtocolError(f"{addr} is not a circuit relay address")
        relay_addr, relay, target = parts
        if target is None:
            target = expected_peer
        if target is None:
            raise LocalProtocolError(f"{addr} names no peer to connect to through the relay")
        if expected_peer is not None and target != expected_peer:
            raise LocalProtocolError(f"{addr} names {target}, not the expected {expected_peer}")
        if target in (relay, self.node.peer_id):
            raise LocalProtocolError(f"cannot relay to {target} through {relay}")
        conn = await self._relay_connection(relay, relay_addr)
        stream, limit = await open_circuit(
            conn, target, reply_timeout=self.config.reply_timeout, tracer=self.tracer,
            lazy=self._knows_hop(relay),
        )
        base = _relay_base(conn, relay)
        return RawConnection(
            stream=stream,
            local_addr=conn.local_addr,
            remote_addr=base.encapsulate(f"/p2p-circuit/p2p/{target}"),
            is_initiator=True,
            transport=CIRCUIT_TRANSPORT,
            details=_details(relay, limit),
            limited=True,
        )

    async def listen(
        self,
        addr: Multiaddr,
        handler: ConnectionHandler,
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        parts = split_circuit_addr(addr)
        if parts is None or parts[2] is not None:
            raise LocalProtocolError(f"cannot listen on {addr}: expected …/p2p/RELAY/p2p-circuit")
        relay_addr, relay, _ = parts
        if relay == self.node.peer_id:
            raise LocalProtocolError("a node cannot listen through itself")
        if relay in self._listeners:
            raise LocalProtocolError(f"already listening through {relay}")
        listener = RelayListener(self, relay, relay_addr, handler)
        self._listeners[relay] = listener
        try:
            await listener.run(task_status=task_status)
        finally:
            if self._listeners.get(relay) is listener:
                del self._listeners[relay]

    # ------------------------------------------------------------------ helpers
    def listeners(self) -> list[RelayListener]:
        """The relays we listen through."""
        return list(self._listeners.values())

    def _knows_hop(self, relay: PeerId) -> bool:
        return HOP_PROTOCOL in self.node.peerstore.protocols(relay)

    async def _relay_connection(self, relay: PeerId, relay_addr: Multiaddr) -> Connection:
        """A direct (never limited) connection to ``relay``."""
        addrs = [relay_addr.with_peer_id(relay)] if len(relay_addr) else []
        try:
            conn = await self.node.connect(relay, addrs, allow_limited=False)
        except DialError as exc:
            raise DialError(f"could not reach the relay {relay}: {exc}", peer=relay) from exc
        if conn.limited:  # pragma: no cover - the dialer skips relayed addresses for this
            raise DialError(f"only a limited connection to the relay {relay}", peer=relay)
        return conn

    async def _serve_stop(self, stream: NetStream) -> None:
        """Serve the stop protocol: accept relayed connections from relays we listen on."""
        relay = stream.remote_peer
        accepted = await accept_stop(
            stream,
            accepting=lambda r: r in self._listeners and not stream.connection.limited,
            reply_timeout=self.config.stop_timeout,
            tracer=self.tracer,
        )
        listener = self._listeners.get(relay)
        if accepted is None or listener is None:
            return
        msg, reader = accepted
        base = _relay_base(stream.connection, relay)
        raw = RawConnection(
            stream=with_leftover(stream, reader.take_buffer()),  # type: ignore[arg-type]
            local_addr=stream.connection.local_addr,
            remote_addr=base.encapsulate(f"/p2p-circuit/p2p/{msg.peer.peer_id}"),
            is_initiator=False,
            transport=CIRCUIT_TRANSPORT,
            details=_details(relay, msg.limit),
            limited=True,
        )
        # the relayed connection lives as long as this handler: the stream is its wire
        await listener.handler(raw)


def _relay_base(conn: Connection, relay: PeerId) -> Multiaddr:
    """How we name the relay in circuit addresses: the address of our connection to it."""
    addr = conn.remote_addr
    return addr.with_peer_id(relay) if not addr.is_relayed else Multiaddr(f"/p2p/{relay}")


def _details(relay: PeerId, limit: Limit | None) -> dict[str, object]:
    limit = limit or Limit()
    return {"relay": str(relay), "limit_duration": limit.duration, "limit_data": limit.data}


class RelayListener(Listener):
    """Keeps a reservation on one relay and advertises our circuit addresses through it."""

    def __init__(
        self,
        transport: RelayTransport,
        relay: PeerId,
        relay_addr: Multiaddr,
        handler: ConnectionHandler,
    ) -> None:
        self.transport = transport
        self.node = transport.node
        self.relay = relay
        self.relay_addr = relay_addr
        self.handler = handler
        #: a relay listener binds no address; its circuit addresses are in node.extra_addrs
        self.addrs: list[Multiaddr] = []
        config = transport.config
        self.keeper = ReservationKeeper(
            refresh_fraction=config.refresh_fraction,
            backoff_initial=config.backoff_initial,
            backoff_max=config.backoff_max,
        )
        self.reservation: Reservation | None = None
        self.connection: Connection | None = None
        #: what made the last attempt fail (None after a success)
        self.last_error: BaseException | None = None
        #: how many reservations were granted (the first, refreshes and re-reservations)
        self.granted = 0
        self._scope = trio.CancelScope()
        self._changed = trio.Event()

    @property
    def key(self) -> str:
        """This listener's entry in ``node.extra_addrs``."""
        return f"relay:{self.relay}"

    @property
    def circuit_addrs(self) -> list[Multiaddr]:
        """The circuit addresses advertised now (empty while no reservation is held)."""
        return list(self.node.extra_addrs.get(self.key, ()))

    async def wait_changed(self) -> None:
        """Wait until the reservation is next granted, lost or lapses (for tests, the UI)."""
        await self._changed.wait()

    async def aclose(self) -> None:
        """Stop keeping the reservation and withdraw its addresses."""
        self._scope.cancel()
        self._withdraw()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ the keeper loop
    async def run(self, *, task_status: trio.TaskStatus[Listener]) -> None:
        """Reserve (raising if the first attempt fails), then keep the reservation."""
        with self._scope:
            try:
                await self._attempt(first=True)
                task_status.started(self)
                while True:
                    now = trio.current_time()
                    if self.keeper.lapsed(now):
                        log.info("reservation on %s lapsed", self.relay)
                        self._withdraw()
                    if self.keeper.due(now):
                        await self._attempt(first=False)
                        continue
                    await self._wait(self.keeper.next_wakeup())
            finally:
                self.keeper.close()
                self._withdraw()

    async def _wait(self, until: float | None) -> None:
        """Sleep until ``until``; a closing relay connection ends the reservation sooner."""
        conn = self.connection
        with trio.move_on_at(until if until is not None else float("inf")):
            if conn is None or conn.is_closed:
                await trio.sleep_forever()
            await conn.closed.wait()
        if conn is not None and conn.is_closed and self.connection is conn:
            log.info("lost the connection to the relay %s; reserving again", self.relay)
            self.connection = None
            self.keeper.lost(trio.current_time())
            self._withdraw()

    async def _attempt(self, *, first: bool) -> None:
        """Send one RESERVE (connecting to the relay first if needed)."""
        node, config = self.node, self.transport.config
        self.keeper.attempt(trio.current_time())
        try:
            conn = self.connection
            if conn is None or conn.is_closed:
                conn = await self.transport._relay_connection(self.relay, self.relay_addr)
            rsvp = await reserve(
                conn, local_peer=node.peer_id, reply_timeout=config.reply_timeout,
                tracer=self.transport.tracer, unix_time=config.unix_time,
                lazy=self.transport._knows_hop(self.relay),
            )
            lifetime = rsvp.expire - config.unix_time()
            if lifetime <= 0:
                raise DialError(f"the reservation on {self.relay} expired on arrival")
        except (FlarelabError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            now = trio.current_time()
            self.last_error = exc
            self.keeper.failed(now)
            log.info("reservation on %s failed: %s", self.relay, exc)
            if not self.keeper.advertised(now):
                self._withdraw()
            if first:
                raise
            return
        self.connection, self.reservation, self.last_error = conn, rsvp, None
        self.granted += 1
        self.keeper.granted(trio.current_time(), lifetime)
        self._advertise(rsvp.circuit_addrs(fallback=(_relay_base(conn, self.relay),)))

    def _advertise(self, addrs: list[Multiaddr]) -> None:
        if self.node.extra_addrs.get(self.key) != addrs:
            self.node.extra_addrs[self.key] = addrs
            self.node.addresses_changed()
        self._notify()

    def _withdraw(self) -> None:
        if self.node.extra_addrs.pop(self.key, None) is not None:
            self.node.addresses_changed()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def __repr__(self) -> str:
        return f"<RelayListener via {self.relay.short()} {self.keeper.state.value}>"
