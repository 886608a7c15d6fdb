"""B's side of DCUtR: drive one :class:`~.attempt.HolePunchUpgrade` over a relayed connection.

The machine decides; this module carries out its commands: the connection-reversal dial,
the ``/libp2p/dcutr`` stream of each round (CONNECT out and in, SYNC out), the RTT/2 wait
and the punch. A direct connection that opens by itself at any point (A's dial arriving
first, a reversal of A's own) ends the upgrade at once. Spans: ``dcutr.upgrade`` around
everything, ``dcutr.attempt`` per round, ``holepunch.dial`` per dial.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import Span

from ...errors import (
    FlarelabError,
    LocalProtocolError,
    ProtocolNotSupportedError,
    RemoteProtocolError,
)
from ...tracing import spans
from ...wire import StreamReader
from .addresses import AddressChoice, nat_hint, our_addresses, reversal_addresses, their_addresses
from .attempt import (
    AttemptRecord,
    Command,
    ConnectReceived,
    ConnectSent,
    DialDirect,
    DialTime,
    DirectConnectionSeen,
    ExchangeFailed,
    Finish,
    HolePunchUpgrade,
    Input,
    OpenRound,
    Outcome,
    Phase,
    Punch,
    PunchFinished,
    ReversalFinished,
    SendSync,
    Start,
    SyncSent,
    Wait,
)
from .dial import DirectConnections, hole_punch, reversal_dial, transport_of
from .events import SIDE_INITIATOR, HolePunchAttemptFailed, HolePunchResult, HolePunchStarted
from .messages import DCUTR_PROTOCOL, MAX_MESSAGE_SIZE
from .protocol import exchange_connect, send_sync

if TYPE_CHECKING:
    from ...node.connection import Connection, NetStream
    from .service import HolePunchService

__all__ = [
    "LOCAL_ADDRS_ATTRIBUTE",
    "REMOTE_ADDRS_ATTRIBUTE",
    "REVERSAL_ADDRS_ATTRIBUTE",
    "Initiator",
    "annotate_attempt",
]

#: ``dcutr.attempt`` attributes: the addresses we offered, and those the peer offered
LOCAL_ADDRS_ATTRIBUTE = "dcutr.local_addrs"
REMOTE_ADDRS_ATTRIBUTE = "dcutr.remote_addrs"
#: ``dcutr.upgrade`` attribute: A's public addresses B tried to dial directly
REVERSAL_ADDRS_ATTRIBUTE = "dcutr.reversal_addrs"


def _now() -> float:
    return trio.current_time()


class Initiator:
    """Runs B's upgrades for a :class:`~.service.HolePunchService`."""

    def __init__(self, service: HolePunchService) -> None:
        self.service = service
        self.node = service.node
        self.config = service.config
        self.tracer = service.tracer

    def _machine(self) -> HolePunchUpgrade:
        cfg = self.config
        return HolePunchUpgrade(
            max_attempts=cfg.max_attempts, reversal_timeout=cfg.reversal_timeout,
            exchange_timeout=cfg.exchange_timeout, punch_timeout=cfg.punch_timeout)

    async def run(self, relayed: Connection) -> HolePunchResult:
        """Upgrade ``relayed``; publish and return the result."""
        peer = relayed.remote_peer
        machine = self._machine()
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
            spans.LIBP2P_ROLE: spans.ROLE_INITIATOR,
            spans.LIBP2P_CONNECTION_ID: relayed.id,
            spans.LIBP2P_MULTIADDR: str(relayed.remote_addr),
        }
        with self.tracer.start_as_current_span(spans.DCUTR_UPGRADE, attributes=attrs) as span:
            started = _now()
            self.node.events.publish(HolePunchStarted(peer, SIDE_INITIATOR, relayed))
            async with trio.open_nursery() as nursery:
                drive = trio.CancelScope()

                async def watch() -> None:
                    while True:
                        conn = await self.service.direct.wait(peer)
                        if machine.phase not in (Phase.REVERSING, Phase.PUNCHING):
                            break  # (the dials of those phases see it themselves)
                    inbound = conn.direction == spans.DIRECTION_INBOUND
                    if machine.phase is Phase.IDLE:
                        machine.handle(Start((), direct=inbound), _now())
                    elif not machine.done:
                        machine.handle(DirectConnectionSeen(
                            inbound, conn.remote_addr, transport_of(conn.remote_addr)), _now())
                    drive.cancel()

                nursery.start_soon(watch)
                with drive:
                    await self._drive(machine, relayed, span)
                nursery.cancel_scope.cancel()
            if not machine.done:  # pragma: no cover - the machine always finishes
                raise LocalProtocolError(f"the DCUtR upgrade stopped in {machine.phase}")
            result = self._result(machine, relayed, started)
            _annotate_upgrade(span, result)
        self.service.metrics.record_finished(
            side=SIDE_INITIATOR, attempts=result.attempts, outcome=result.outcome,
            ours=machine.our_addrs,
            theirs=machine.current.their_addrs if machine.current else (),
            direct=result.address if result.ok else None, elapsed=result.elapsed)
        self.service.conclude(result, relayed)
        return result

    async def _prepare(self, relayed: Connection, span: Span) -> Start:
        """What B knows once identify ran on the relayed connection."""
        node, cfg, peer = self.node, self.config, relayed.remote_peer
        # identify tells A's addresses for the reversal (and whether A speaks DCUtR); with
        # no reversal to try, B starts at once, as rust-libp2p does: one RTT sooner
        if node.identify is not None and cfg.connection_reversal:
            with trio.move_on_after(cfg.identify_timeout), contextlib.suppress(
                    FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError):
                await node.identify.wait_identified(relayed)
        now = _now()
        protocols = node.peerstore.protocols(peer)
        speaks = (DCUTR_PROTOCOL in protocols) if protocols else None
        reversal = AddressChoice(())
        if cfg.connection_reversal:
            reversal = reversal_addresses(
                node.peerstore.addrs(peer, now), peer=peer, policy=node.config.address_policy,
                can_dial=self.service.can_dial, limit=cfg.max_dial_addrs)
            if reversal:
                span.set_attribute(REVERSAL_ADDRS_ATTRIBUTE, [str(a) for a in reversal.addrs])
        ours = our_addresses(node, now, trust_unconfirmed=cfg.trust_unconfirmed_observations,
                             limit=cfg.max_offered_addrs)
        existing = DirectConnections.existing(node, peer)
        direct = None if existing is None else existing.direction == spans.DIRECTION_INBOUND
        return Start(ours.addrs, reversal.addrs, ours.reason, speaks, direct)

    async def _drive(self, machine: HolePunchUpgrade, relayed: Connection, span: Span) -> None:
        peer = relayed.remote_peer
        commands = _feed(machine, await self._prepare(relayed, span))
        while commands:
            command = commands.pop(0)
            if isinstance(command, DialDirect):
                result = await reversal_dial(
                    self.node, peer, command.addrs, deadline=command.deadline,
                    direct=self.service.direct, tracer=self.tracer)
                self.service.metrics.record_direct_dial(ok=result.ok)
                conn = result.connection
                if conn is not None and conn.direction == spans.DIRECTION_INBOUND:
                    # A reached us first: not our dial's doing
                    commands += _feed(machine, DirectConnectionSeen(
                        True, result.address, result.transport))
                else:
                    commands += _feed(machine, ReversalFinished(
                        result.ok, result.reason, result.address, result.transport))
            elif isinstance(command, OpenRound):
                commands += await self._attempt(machine, command, relayed)
            elif isinstance(command, Finish):
                return
            else:  # pragma: no cover - the machine never sends these outside an attempt
                raise LocalProtocolError(f"unexpected command {command!r}")

    async def _attempt(self, machine: HolePunchUpgrade, command: OpenRound,
                       relayed: Connection) -> list[Command]:
        """One CONNECT/SYNC round and its punch; return the command that follows it."""
        peer = relayed.remote_peer
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
            spans.LIBP2P_ROLE: spans.ROLE_INITIATOR,
            spans.LIBP2P_ATTEMPT: command.attempt,
            spans.LIBP2P_PROTOCOL: DCUTR_PROTOCOL,
            LOCAL_ADDRS_ATTRIBUTE: [str(a) for a in command.addrs],
        }
        with self.tracer.start_as_current_span(
            spans.DCUTR_ATTEMPT, attributes=attrs, record_exception=False,
            set_status_on_exception=False,
        ) as span:
            stream: NetStream | None = None
            try:
                stream, commands = await self._exchange(machine, command, relayed, span)
                while commands and not isinstance(commands[0], (OpenRound, Finish)):
                    step = commands.pop(0)
                    if isinstance(step, SendSync):
                        assert stream is not None
                        commands += await self._sync(machine, stream, command.deadline, span)
                        await close_stream(stream)  # as go: the stream's work is done
                        stream = None
                    elif isinstance(step, Wait):
                        await trio.sleep_until(step.until)
                        commands += _feed(machine, DialTime())
                    elif isinstance(step, Punch):
                        punch = await hole_punch(
                            self.node, peer, step.addrs, initiator=False,
                            deadline=step.deadline, direct=self.service.direct,
                            attempt=step.attempt, punch_quic=True, rng=self.service.rng,
                            interval=self.config.punch_interval,
                            packet_size=self.config.punch_packet_size, tracer=self.tracer)
                        commands += _feed(machine, PunchFinished(
                            punch.ok, punch.reason, punch.timed_out, punch.address,
                            punch.transport))
            finally:
                record = machine.attempts[command.attempt - 1]
                if stream is not None:
                    with trio.CancelScope(shield=True):
                        if record.outcome is Outcome.NO_SUITABLE_ADDRESS:
                            await close_stream(stream)  # no SYNC: A hears a clean end
                        else:
                            await reset_stream(stream)
                annotate_attempt(span, record)
            if record.outcome is not None and not record.outcome.direct:
                self.node.events.publish(HolePunchAttemptFailed(
                    peer, SIDE_INITIATOR, record.number, record.outcome.value, record.reason))
            return commands

    async def _exchange(
        self, machine: HolePunchUpgrade, command: OpenRound, relayed: Connection, span: Span
    ) -> tuple[NetStream | None, list[Command]]:
        """Open the stream and trade CONNECTs; feed the machine what happened."""
        peer = relayed.remote_peer
        stream: NetStream | None = None
        failure: ExchangeFailed | None = None
        with trio.move_on_at(command.deadline) as scope:
            try:
                # lazily (0-RTT): CONNECT goes out with the protocol proposal, one round
                # trip sooner; a peer without DCUtR refuses it just the same
                stream = await relayed.new_stream(DCUTR_PROTOCOL, lazy=True)
                reader = StreamReader(stream, chunk=MAX_MESSAGE_SIZE)
                exchange = await exchange_connect(stream, reader, command.addrs, span=span,
                                                  peer=peer)
            except ProtocolNotSupportedError:
                failure = ExchangeFailed(Outcome.FAILED, "A does not speak /libp2p/dcutr")
            except RemoteProtocolError as exc:
                spans.mark_error(span, exc)
                failure = ExchangeFailed(Outcome.PROTOCOL_ERROR, exc.message)
            except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                why = "the relayed connection closed" if relayed.is_closed else \
                    f"the DCUtR stream broke ({exc})"
                failure = ExchangeFailed(Outcome.FAILED, why)
        if scope.cancelled_caught:
            failure = ExchangeFailed(
                Outcome.TIMEOUT,
                f"A did not answer CONNECT within {self.config.exchange_timeout:g} s")
        if failure is not None:
            return stream, _feed(machine, failure)
        _feed(machine, ConnectSent(), exchange.sent_at)
        choice = their_addresses(
            exchange.connect.addrs, peer=peer, policy=self.node.config.address_policy,
            ours=AddressChoice(command.addrs).keys, can_dial=self.service.can_dial, who="A",
            limit=self.config.max_dial_addrs)
        return stream, _feed(
            machine, ConnectReceived(exchange.connect.addrs, choice.addrs, choice.reason),
            exchange.received_at)

    async def _sync(self, machine: HolePunchUpgrade, stream: NetStream, deadline: float,
                    span: Span) -> list[Command]:
        with trio.move_on_at(deadline) as scope:
            try:
                await send_sync(stream, span=span)
            except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                return _feed(machine, ExchangeFailed(Outcome.FAILED,
                                                     f"could not send SYNC ({exc})"))
        if scope.cancelled_caught:
            return _feed(machine, ExchangeFailed(
                Outcome.TIMEOUT, "SYNC could not be sent in time (the stream is blocked)"))
        return _feed(machine, SyncSent())

    def _result(self, machine: HolePunchUpgrade, relayed: Connection, started: float
                ) -> HolePunchResult:
        assert machine.outcome is not None and machine.finished_at is not None
        peer = relayed.remote_peer
        conn = DirectConnections.existing(self.node, peer) if machine.outcome.direct else None
        last = machine.current
        reason = machine.reason
        if machine.outcome is Outcome.FAILED and last is not None and last.their_addrs:
            hint = nat_hint(machine.our_addrs, self.node.listen_addrs(), last.their_addrs,
                            self.node.peerstore.addrs(peer, _now()), "A")
            reason = f"{reason} ({hint})" if hint else reason
        address = machine.address or (conn.remote_addr if conn else None)
        return HolePunchResult(
            peer, SIDE_INITIATOR, machine.outcome.value, reason, len(machine.attempts),
            started, machine.finished_at, machine.finished_at - relayed.opened_at, conn,
            address, machine.transport or transport_of(address),
            last.rtt_ms if last is not None else None, tuple(machine.attempts))


def _feed(machine: HolePunchUpgrade, event: Input, when: float | None = None) -> list[Command]:
    """Hand ``event`` to the machine unless it finished meanwhile (a direct connection
    that opened by itself ends the upgrade at once)."""
    if machine.done:
        return []
    return machine.handle(event, _now() if when is None else when)


def _annotate_upgrade(span: Span, result: HolePunchResult) -> None:
    span.set_attribute(spans.LIBP2P_OUTCOME, result.outcome)
    span.set_attribute(spans.LIBP2P_ATTEMPT, result.attempts)
    if result.reason:
        span.set_attribute(spans.LIBP2P_REASON, result.reason)
    if result.address is not None:
        span.set_attribute(spans.LIBP2P_MULTIADDR, str(result.address))
        span.set_attribute(spans.LIBP2P_TRANSPORT, result.transport or "")
    if result.rtt_ms is not None:
        span.set_attribute(spans.LIBP2P_RTT_MS, result.rtt_ms)


def annotate_attempt(span: Span, record: AttemptRecord) -> None:
    """Put what one round found out on its ``dcutr.attempt`` span."""
    if record.rtt is not None:
        span.set_attribute(spans.LIBP2P_RTT_MS, record.rtt * 1000.0)
    if record.our_addrs:
        span.set_attribute(LOCAL_ADDRS_ATTRIBUTE, [str(a) for a in record.our_addrs])
    if record.their_addrs:
        span.set_attribute(REMOTE_ADDRS_ATTRIBUTE, [str(a) for a in record.their_addrs])
    if record.outcome is not None:
        span.set_attribute(spans.LIBP2P_OUTCOME, record.outcome.value)
    if record.reason:
        span.set_attribute(spans.LIBP2P_REASON, record.reason)
    if record.address is not None:
        span.set_attribute(spans.LIBP2P_MULTIADDR, str(record.address))
        span.set_attribute(spans.LIBP2P_TRANSPORT, record.transport or "")


async def close_stream(stream: NetStream) -> None:
    """Close ``stream`` (EOF to the peer), quietly, within a second."""
    with contextlib.suppress(Exception), trio.move_on_after(1.0):
        await stream.aclose()


async def reset_stream(stream: NetStream) -> None:
    """Reset ``stream``, quietly, within a second."""
    with contextlib.suppress(Exception), trio.move_on_after(1.0):
        await stream.reset()
