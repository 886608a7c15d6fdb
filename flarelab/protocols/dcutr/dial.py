"""``holepunch.dial``: the dials and punches of one attempt, and the connection reversal.

TCP: both sides connect from their listen port (the transports bind dials to it) to the
other's observed address at the same moment; the kernel turns the two SYNs into one
connection (a simultaneous open) or lets one side's SYN into the other's listener. Then
A is the client of the security and muxer handshakes and B the server, whoever the kernel
made the "dialler": ``node.upgrade_and_run(raw, is_initiator=<A?>)``. If B's SYN reached
A's listener, A's node must still act as the client: :class:`InboundClaims` tells its
inbound path so (the ``inbound_role_hooks`` of the node).

QUIC: only A dials (as QUIC client). B sends datagrams of random bytes from its listen
socket to A's addresses at random intervals of 10-200 ms, which opens B's NAT for A's
Initial packets; A's connection then arrives at B's listener. A's first Initial can reach
B's NAT before B's first punch has left (where the direct path is much faster than the
relayed one); B's NAT drops it, and QUIC would retransmit only after its PTO (200 ms). So
A's hole-punch dials re-send copies of their first flight on a short schedule
(``resend_initial``, :class:`~flarelab.transports.quic.config.InitialResend`) until B
answers: each copy is a ``quic.initial_resent`` event on ``holepunch.dial``.

Either way an attempt succeeds when a direct (unlimited) connection to the peer opens,
whichever side made it: :class:`DirectConnections` reports those. Every dial of an attempt
starts at once (no happy-eyeballs stagger: a TCP simultaneous open needs exact timing),
and the first connection ends the attempt; other connections that came up meanwhile are
kept (closing one could close the one the peer chose).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from opentelemetry.trace import Span, Tracer

from ...errors import DialError, FlarelabError
from ...tracing import spans
from .addresses import punch_key

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node import Node
    from ...node.connection import Connection
    from ...transports.base import RawConnection, Transport
    from ...transports.quic.config import InitialResend

__all__ = [
    "ERRORS_ATTRIBUTE",
    "INITIAL_RESENT_ATTRIBUTE",
    "INITIAL_RESENT_EVENT",
    "PACKETS_ATTRIBUTE",
    "PUNCHED_ATTRIBUTE",
    "REVERSAL_ATTRIBUTE",
    "DirectConnections",
    "InboundClaims",
    "PunchResult",
    "hole_punch",
    "reversal_dial",
    "transport_of",
]

#: span attributes of ``holepunch.dial`` beyond the ``libp2p.*`` ones
PUNCHED_ATTRIBUTE = "holepunch.punched"  # addresses B sent punch datagrams to
PACKETS_ATTRIBUTE = "holepunch.packets"  # how many punch datagrams went out
ERRORS_ATTRIBUTE = "holepunch.errors"  # "address: why it failed", per failed dial
REVERSAL_ATTRIBUTE = "holepunch.reversal"  # True for B's connection-reversal dial
INITIAL_RESENT_ATTRIBUTE = "holepunch.initial_resent"  # A's QUIC Initial copies, in all
#: span event of ``holepunch.dial``: A sent a copy of a QUIC dial's first flight again
#: (attributes: the address, and ``libp2p.quic.initial_resent`` so far for it)
INITIAL_RESENT_EVENT = spans.QUIC_INITIAL_RESENT
INITIAL_RESENT_COUNT = spans.LIBP2P_QUIC_INITIAL_RESENT


def transport_of(addr: Multiaddr | None) -> str | None:
    """``quic-v1`` or ``tcp`` for an address (None if neither)."""
    if addr is None:
        return None
    names = addr.protocol_names()
    if "quic-v1" in names:
        return "quic-v1"
    return "tcp" if "tcp" in names else None


@dataclass(frozen=True, slots=True)
class PunchResult:
    """How one attempt's dials went."""

    connection: Connection | None
    timed_out: bool = False
    reason: str = ""
    tried: tuple[Multiaddr, ...] = ()
    punched: tuple[Multiaddr, ...] = ()
    packets: int = 0

    @property
    def ok(self) -> bool:
        return self.connection is not None

    @property
    def address(self) -> Multiaddr | None:
        return None if self.connection is None else self.connection.remote_addr

    @property
    def transport(self) -> str | None:
        return transport_of(self.address)


class DirectConnections:
    """Wakes those waiting for a direct (unlimited) connection to a peer.

    The service calls :meth:`opened` for every connection the node opens.
    """

    def __init__(self) -> None:
        self._waiters: dict[PeerId, list[tuple[trio.Event, list[Connection]]]] = {}

    def opened(self, conn: Connection) -> None:
        """Note a new connection (limited ones are ignored)."""
        if conn.limited:
            return
        for event, box in self._waiters.pop(conn.remote_peer, []):
            box.append(conn)
            event.set()

    async def wait(self, peer: PeerId) -> Connection:
        """Wait for the next direct connection to ``peer`` to open."""
        entry: tuple[trio.Event, list[Connection]] = (trio.Event(), [])
        self._waiters.setdefault(peer, []).append(entry)
        try:
            await entry[0].wait()
        finally:
            waiting = self._waiters.get(peer)
            if waiting is not None and entry in waiting:
                waiting.remove(entry)
                if not waiting:
                    del self._waiters[peer]
        return entry[1][0]

    @staticmethod
    def existing(node: Node, peer: PeerId) -> Connection | None:
        """An open direct connection to ``peer``, if there is one."""
        return node.best_connection(peer, allow_limited=False)


class InboundClaims:
    """Inbound TCP connections that A must upgrade as the client (see the module docstring).

    While A punches, the IP addresses of B's TCP addresses are claimed: an inbound raw
    connection from one of them gets ``(B, is_initiator=True)`` from :meth:`role_for`. By
    IP, not by port: behind a NAT that maps each destination to a new port, B's SYN comes
    from a port B could not predict, and still reaches A's listener if A's NAT lets it in.
    """

    def __init__(self) -> None:
        self._claims: dict[str, PeerId] = {}

    @contextlib.contextmanager
    def claim(self, peer: PeerId, addrs: Sequence[Multiaddr]) -> Iterator[None]:
        """Claim the IPs of the TCP addresses in ``addrs`` for ``peer`` in the block."""
        ips = {ip for a in addrs if transport_of(a) == "tcp" and (ip := _ip(a)) is not None}
        mine = [ip for ip in ips if ip not in self._claims]
        for ip in mine:
            self._claims[ip] = peer
        try:
            yield
        finally:
            for ip in mine:
                self._claims.pop(ip, None)

    def role_for(self, raw: RawConnection) -> tuple[PeerId, bool] | None:
        """``(peer, True)`` if ``raw`` comes from a claimed IP, else None."""
        if not self._claims or raw.transport != "tcp" or raw.limited:
            return None
        ip = _ip(raw.remote_addr)
        peer = self._claims.get(ip) if ip is not None else None
        return None if peer is None else (peer, True)

    def __len__(self) -> int:
        return len(self._claims)


def _ip(addr: Multiaddr) -> str | None:
    ip = addr.ip_address
    return None if ip is None else ip.compressed


def _why(exc: BaseException) -> str:
    if isinstance(exc, (trio.TooSlowError, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, DialError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Race:
    """The dials of one attempt: the first direct connection wins."""

    def __init__(self, pending: int) -> None:
        self.pending = pending  # dial tasks still running (punch loops do not count)
        self.punching = 0
        self.winner: Connection | None = None
        self.errors: list[tuple[Multiaddr, str]] = []
        self.packets = 0
        self.resent = 0  # copies of QUIC first flights (A's hole-punch dials)
        self.stopped = False
        self.settled = trio.Event()

    def won(self, conn: Connection) -> None:
        if self.winner is None and not conn.is_closed:
            self.winner = conn
            self.settled.set()

    def failed(self, addr: Multiaddr, exc: BaseException, *, punching: bool = False) -> None:
        self.errors.append((addr, _why(exc)))
        if punching:
            self.punching -= 1
        else:
            self.pending -= 1
        if self.pending <= 0 and self.punching <= 0:
            self.settled.set()  # nothing of ours is left running


async def _race(
    node: Node,
    peer: PeerId,
    targets: Sequence[tuple[Multiaddr, Transport, bool]],  # (address, transport, punch?)
    *,
    initiator: bool,
    deadline: float,
    direct: DirectConnections,
    rng: random.Random,
    interval: tuple[float, float],
    packet_size: int,
    stop: trio.Event | None = None,
    resends: dict[Multiaddr, InitialResend] | None = None,
    tcp_from_listen_port: bool = True,
) -> tuple[_Race, bool]:
    race = _Race(sum(1 for *_, punch in targets if not punch))
    race.punching = sum(1 for *_, punch in targets if punch)

    async def watch() -> None:
        race.won(await direct.wait(peer))

    async def stopper(event: trio.Event) -> None:
        await event.wait()
        race.stopped = True
        race.settled.set()

    async def dial(addr: Multiaddr, transport: Transport) -> None:
        try:
            kwargs: dict[str, Any] = {}
            if getattr(transport, "supports_reuse_port", False):  # see reversal_dial
                kwargs["reuse_port"] = tcp_from_listen_port or transport.name != "tcp"
            if resends and addr in resends:  # A's QUIC dial: copies of its first flight
                kwargs["resend_initial"] = resends[addr]
            raw = await transport.dial(addr, expected_peer=peer, **kwargs)
            conn = await node.upgrade_and_run(raw, expected_peer=peer, is_initiator=initiator)
        except Exception as exc:
            race.failed(addr, exc)
            return
        race.won(conn)

    async def punch(addr: Multiaddr, transport: Transport) -> None:
        low, high = interval
        while True:
            try:
                await transport.punch(addr, rng.randbytes(packet_size))  # type: ignore[attr-defined]
            except (OSError, FlarelabError, ValueError, trio.ClosedResourceError) as exc:
                race.failed(addr, exc, punching=True)
                return
            race.packets += 1
            await trio.sleep(rng.uniform(low, high))

    existing = DirectConnections.existing(node, peer)
    if existing is not None:
        race.won(existing)  # it opened between the previous step and this one
        return race, False
    timed_out = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        if stop is not None:
            nursery.start_soon(stopper, stop)
        for addr, transport, is_punch in targets:
            nursery.start_soon(punch if is_punch else dial, addr, transport)
        if not targets:
            race.settled.set()
        with trio.move_on_at(deadline) as scope:
            await race.settled.wait()
        timed_out = scope.cancelled_caught and race.winner is None
        nursery.cancel_scope.cancel()
    return race, timed_out


def _reason(race: _Race, timed_out: bool, timeout: float) -> str:
    if race.stopped:
        return "stopped: the peer began its next round"
    errors = "; ".join(f"{addr}: {why}" for addr, why in race.errors[:4])
    if timed_out:
        base = f"no direct connection within {timeout:g} s"
        return f"{base} ({errors})" if errors else base
    return f"every dial failed: {errors}" if errors else "nothing to dial"


async def hole_punch(
    node: Node,
    peer: PeerId,
    addrs: Sequence[Multiaddr],
    *,
    initiator: bool,
    deadline: float,
    direct: DirectConnections,
    attempt: int,
    punch_quic: bool = False,
    claims: InboundClaims | None = None,
    stop: trio.Event | None = None,
    rng: random.Random | None = None,
    interval: tuple[float, float] = (0.010, 0.200),
    packet_size: int = 64,
    resend_initial: InitialResend | None = None,
    tracer: Tracer = spans.NO_TRACER,
) -> PunchResult:
    """Dial (and, for B over QUIC, punch) ``addrs`` until a direct connection or ``deadline``.

    ``initiator``: our role in the security handshake (A: True, B: False). ``punch_quic``:
    B's behaviour for QUIC addresses (punch instead of dial). ``claims``: A's registry of
    inbound TCP connections to upgrade as the client. ``stop``: end early when it is set.
    ``resend_initial``: A's schedule for copies of each QUIC dial's first flight.
    """
    rng = rng or random.Random()
    now = trio.current_time()
    targets = [(addr, transport, punch_quic and transport.name == "quic")
               for addr, transport in node.dialer.dialable(addrs)]
    punched = tuple(addr for addr, _, is_punch in targets if is_punch)
    attrs: dict[str, spans.AttributeValue] = {
        spans.LIBP2P_REMOTE_PEER_ID: str(peer),
        spans.LIBP2P_ATTEMPT: attempt,
        spans.LIBP2P_ROLE: spans.ROLE_INITIATOR if initiator else spans.ROLE_RESPONDER,
        spans.LIBP2P_CANDIDATES: [str(a) for a, *_ in targets],
    }
    if punched:
        attrs[PUNCHED_ATTRIBUTE] = [str(a) for a in punched]
    with tracer.start_as_current_span(spans.HOLEPUNCH_DIAL, attributes=attrs) as span:
        claimed = (claims.claim(peer, [a for a, *_ in targets]) if claims is not None
                   else contextlib.nullcontext())
        counts: dict[Multiaddr, int] = {}
        resends = _resend_plans(targets, resend_initial, span, counts)
        with claimed:
            race, timed_out = await _race(
                node, peer, targets, initiator=initiator, deadline=deadline, direct=direct,
                rng=rng, interval=interval, packet_size=packet_size, stop=stop,
                resends=resends)
        race.resent = sum(counts.values())
        result = PunchResult(
            race.winner, timed_out,
            "" if race.winner is not None else _reason(race, timed_out, deadline - now),
            tuple(a for a, *_ in targets), punched, race.packets)
        _finish_span(span, race, result)
    return result


def _resend_plans(
    targets: Sequence[tuple[Multiaddr, Transport, bool]],
    plan: InitialResend | None,
    span: Span,
    counts: dict[Multiaddr, int],
) -> dict[Multiaddr, InitialResend]:
    """One InitialResend per QUIC address A dials, each noting its copies on ``span``."""
    if plan is None or plan.count < 1:
        return {}

    def resent(addr: Multiaddr, count: int) -> None:
        counts[addr] = count
        span.add_event(INITIAL_RESENT_EVENT, {
            spans.LIBP2P_MULTIADDR: str(addr), INITIAL_RESENT_COUNT: count})

    return {addr: dataclasses.replace(plan, on_resend=partial(resent, addr))
            for addr, transport, is_punch in targets
            if transport.name == "quic" and not is_punch}


async def reversal_dial(
    node: Node,
    peer: PeerId,
    addrs: Sequence[Multiaddr],
    *,
    deadline: float,
    direct: DirectConnections,
    tracer: Tracer = spans.NO_TRACER,
) -> PunchResult:
    """B's connection reversal: dial A's public addresses directly, as an ordinary client.

    TCP dials leave from an ephemeral port, never the listen port: a failed reversal would
    otherwise leave B's NAT a conntrack entry (listen port -> A's address) for a SYN whose
    socket is gone. A's punch SYN to the same address then slips through that entry into
    B's listener before B's own punch dial: the half-open connection takes the 4-tuple (B's
    punch falls back to an ephemeral port) and B's answer, with a new sequence number, is
    out of the entry's window (a Linux NAT drops it), so every round fails.
    """
    now = trio.current_time()
    targets = [(addr, transport, False) for addr, transport in node.dialer.dialable(addrs)]
    attrs: dict[str, spans.AttributeValue] = {
        spans.LIBP2P_REMOTE_PEER_ID: str(peer),
        spans.LIBP2P_ROLE: spans.ROLE_INITIATOR,
        spans.LIBP2P_CANDIDATES: [str(a) for a, *_ in targets],
        REVERSAL_ATTRIBUTE: True,
    }
    with tracer.start_as_current_span(spans.HOLEPUNCH_DIAL, attributes=attrs) as span:
        race, timed_out = await _race(
            node, peer, targets, initiator=True, deadline=deadline, direct=direct,
            rng=random.Random(), interval=(1.0, 1.0), packet_size=0, tcp_from_listen_port=False)
        result = PunchResult(
            race.winner, timed_out,
            "" if race.winner is not None else _reason(race, timed_out, deadline - now),
            tuple(a for a, *_ in targets))
        _finish_span(span, race, result)
    return result


def _finish_span(span: Span, race: _Race, result: PunchResult) -> None:
    if result.punched:
        span.set_attribute(PACKETS_ATTRIBUTE, result.packets)
    if race.resent:
        span.set_attribute(INITIAL_RESENT_ATTRIBUTE, race.resent)
    if race.errors:
        span.set_attribute(ERRORS_ATTRIBUTE, [f"{addr}: {why}" for addr, why in race.errors])
    conn = result.connection
    if conn is not None:
        span.set_attribute(spans.LIBP2P_OUTCOME, spans.OUTCOME_SUCCESS)
        span.set_attribute(spans.LIBP2P_MULTIADDR, str(conn.remote_addr))
        span.set_attribute(spans.LIBP2P_TRANSPORT, result.transport or conn.transport)
        span.set_attribute(spans.LIBP2P_DIRECTION, conn.direction)
        span.set_attribute(spans.LIBP2P_CONNECTION_ID, conn.id)
        key = punch_key(conn.remote_addr)
        if key is not None:
            span.set_attribute(spans.NETWORK_TYPE, f"ipv{key[0]}")
    else:
        outcome = spans.OUTCOME_TIMEOUT if result.timed_out else spans.OUTCOME_FAILED
        span.set_attribute(spans.LIBP2P_OUTCOME, outcome)
        span.set_attribute(spans.LIBP2P_REASON, result.reason)
