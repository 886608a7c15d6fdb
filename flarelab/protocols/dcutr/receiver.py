"""A's side of DCUtR: answer B's rounds on ``/libp2p/dcutr`` and dial the moment SYNC comes.

A serves a stream only over a limited connection that A dialled itself (B is the one that
received it). Each round: read CONNECT, answer CONNECT with our addresses, read SYNC, then
dial B's usable addresses at once as the client of the security handshake (InboundClaims
keeps that role even when B's SYN lands in our listener). B normally opens a fresh stream
per attempt; a newer stream from the same peer means B has moved on, so an older round
still dialling stops. A round that completed its exchange but not its punch leaves the
stream open for a next round, as the spec allows B to reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ...errors import FlarelabError, LimitExceededError, RemoteProtocolError
from ...tracing import spans
from ...wire import IncompleteError, StreamReader
from .addresses import AddressChoice, our_addresses, their_addresses
from .attempt import AttemptRecord, Outcome
from .dial import hole_punch
from .events import SIDE_RECEIVER, HolePunchResult, HolePunchStarted
from .initiator import annotate_attempt, reset_stream
from .messages import DCUTR_PROTOCOL, MAX_MESSAGE_SIZE, Connect
from .protocol import answer_round

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node.connection import Connection, NetStream
    from .service import HolePunchService

__all__ = ["Receiver"]

#: DCUtR streams one peer may have open with us at once (the current and the next round)
MAX_STREAMS_PER_PEER = 2


@dataclass(eq=False)
class _Answering:
    """One stream being answered; a newer stream from the peer supersedes it: its
    exchange or idle wait is cancelled and its dial stops."""

    superseded: trio.Event = field(default_factory=trio.Event)
    waiting: trio.CancelScope | None = None  # the exchange, or the wait for a next round

    def supersede(self) -> None:
        self.superseded.set()
        if self.waiting is not None:
            self.waiting.cancel()


class Receiver:
    """Answers B's DCUtR rounds for a :class:`~.service.HolePunchService`."""

    def __init__(self, service: HolePunchService) -> None:
        self.service = service
        self.node = service.node
        self.config = service.config
        self.tracer = service.tracer
        self._streams: dict[PeerId, list[_Answering]] = {}
        self._rounds: dict[int, int] = {}  # relayed connection id -> rounds answered

    def busy_with(self, peer: PeerId) -> bool:
        """True while we answer a round of ``peer``'s."""
        return bool(self._streams.get(peer))

    def forget(self, conn: Connection) -> None:
        """Drop what we counted for a closed connection."""
        self._rounds.pop(conn.id, None)

    async def answer(self, stream: NetStream) -> None:
        """The ``/libp2p/dcutr`` handler."""
        conn = stream.connection
        peer = conn.remote_peer
        if not conn.limited:
            raise RemoteProtocolError(
                "DCUtR over a direct connection: there is nothing to upgrade",
                peer=peer, protocol=DCUTR_PROTOCOL)
        if conn.direction != spans.DIRECTION_OUTBOUND:
            raise RemoteProtocolError(
                "only the peer that received the relayed connection starts DCUtR, and we did",
                peer=peer, protocol=DCUTR_PROTOCOL)
        mine = self._streams.setdefault(peer, [])
        if len(mine) >= MAX_STREAMS_PER_PEER:
            raise LimitExceededError(
                f"{len(mine)} DCUtR streams with this peer are open already",
                peer=peer, protocol=DCUTR_PROTOCOL)
        running = sum(len(s) for s in self._streams.values())
        if running >= self.config.max_concurrent_rounds:
            raise LimitExceededError(f"{running} DCUtR rounds are running (the limit)",
                                     peer=peer, protocol=DCUTR_PROTOCOL)
        for older in mine:
            older.supersede()  # B has moved on to its next round
        state = _Answering()
        mine.append(state)
        try:
            await self._serve(stream, state)
        finally:
            mine.remove(state)
            if not mine and self._streams.get(peer) is mine:
                del self._streams[peer]

    async def _serve(self, stream: NetStream, state: _Answering) -> None:
        conn = stream.connection
        cfg = self.config
        reader = StreamReader(stream, chunk=MAX_MESSAGE_SIZE)
        rounds_here = 0
        while not state.superseded.is_set():
            if rounds_here:  # the spec lets B reuse the stream for its next round
                with trio.move_on_after(cfg.exchange_timeout) as state.waiting:
                    if await reader.at_eof():
                        return
                state.waiting = None
                if reader.buffered == 0:
                    return  # B went quiet, or moved to a new stream
            served = self._rounds.get(conn.id, 0) + 1
            if served > cfg.max_rounds_per_connection:
                raise LimitExceededError(
                    f"more than {cfg.max_rounds_per_connection} DCUtR rounds over one relayed "
                    "connection", peer=conn.remote_peer, protocol=DCUTR_PROTOCOL)
            self._rounds[conn.id] = served
            rounds_here += 1
            if await self._round(stream, reader, served, state):
                return

    async def _round(self, stream: NetStream, reader: StreamReader, number: int,
                     state: _Answering) -> bool:
        """Serve one round; True if the stream is done with."""
        conn = stream.connection
        peer = conn.remote_peer
        cfg = self.config
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_REMOTE_PEER_ID: str(peer),
            spans.LIBP2P_ROLE: spans.ROLE_RESPONDER,
            spans.LIBP2P_ATTEMPT: number,
            spans.LIBP2P_PROTOCOL: DCUTR_PROTOCOL,
            spans.LIBP2P_CONNECTION_ID: conn.id,
        }
        with self.tracer.start_as_current_span(
            spans.DCUTR_ATTEMPT, attributes=attrs, record_exception=False,
            set_status_on_exception=False,
        ) as span:
            started = trio.current_time()
            record = AttemptRecord(number, started)
            self.node.events.publish(HolePunchStarted(peer, SIDE_RECEIVER, conn, number))
            ours = our_addresses(self.node, started, limit=cfg.max_offered_addrs,
                                 trust_unconfirmed=cfg.trust_unconfirmed_observations)
            record.our_addrs = ours.addrs
            chosen: list[AddressChoice] = []

            def reply(connect: Connect) -> tuple[Multiaddr, ...]:
                chosen.append(their_addresses(
                    connect.addrs, peer=peer, policy=self.node.config.address_policy,
                    ours=ours.keys, can_dial=self.service.can_dial, who="B",
                    limit=cfg.max_dial_addrs))
                return ours.addrs

            error: RemoteProtocolError | None = None
            connection: Connection | None = None
            answered = None
            try:
                with trio.CancelScope() as state.waiting, trio.fail_after(cfg.exchange_timeout):
                    answered = await answer_round(stream, reader, reply, span=span, peer=peer)
                state.waiting = None
            except trio.TooSlowError:
                what = "SYNC" if chosen else "CONNECT"
                record.outcome = Outcome.TIMEOUT
                record.reason = f"B sent no {what} within {cfg.exchange_timeout:g} s"
            except IncompleteError as exc:
                if reader.buffered or "inside" in exc.message:
                    record.outcome, record.reason, error = Outcome.PROTOCOL_ERROR, exc.message, exc
                else:
                    record.outcome = Outcome.FAILED
                    record.reason = ("B closed the stream instead of sending SYNC" if chosen
                                     else "B closed the stream before sending CONNECT")
            except RemoteProtocolError as exc:
                record.outcome, record.reason, error = Outcome.PROTOCOL_ERROR, exc.message, exc
            except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                record.outcome, record.reason = Outcome.FAILED, f"the DCUtR stream broke ({exc})"
            else:
                if answered is None:  # superseded before SYNC came
                    record.outcome = Outcome.FAILED
                    record.reason = "B began its next round on a new stream"
            if answered is not None:
                record.rtt = answered.rtt
                record.their_addrs = answered.connect.addrs
                choice = chosen[0]
                record.dial_addrs = choice.addrs
                if not ours:
                    record.outcome, record.reason = Outcome.NO_SUITABLE_ADDRESS, ours.reason
                elif not choice:
                    record.outcome, record.reason = Outcome.NO_SUITABLE_ADDRESS, choice.reason
                else:
                    punch = await hole_punch(
                        self.node, peer, choice.addrs, initiator=True,
                        deadline=trio.current_time() + cfg.punch_timeout,
                        direct=self.service.direct, attempt=number, claims=self.service.claims,
                        stop=state.superseded, resend_initial=cfg.quic_initial_resend(),
                        tracer=self.tracer)
                    record.outcome = Outcome.SUCCESS if punch.ok else (
                        Outcome.TIMEOUT if punch.timed_out else Outcome.FAILED)
                    record.reason = punch.reason
                    record.address, record.transport = punch.address, punch.transport
                    connection = punch.connection
            record.finished_at = trio.current_time()
            annotate_attempt(span, record)
            if error is not None:
                spans.mark_error(span, error)
        self._conclude(record, conn, connection)
        if error is not None:
            raise error  # the swarm resets the stream and traces it
        if record.outcome is Outcome.TIMEOUT and record.rtt is None:
            await reset_stream(stream)
        # a completed exchange whose punch failed: B may start its next round here
        return record.rtt is None or record.outcome is Outcome.SUCCESS

    def _conclude(self, record: AttemptRecord, conn: Connection,
                  connection: Connection | None) -> None:
        assert record.finished_at is not None
        outcome = record.outcome or Outcome.FAILED
        result = HolePunchResult(
            conn.remote_peer, SIDE_RECEIVER, outcome.value, record.reason, record.number,
            record.started_at, record.finished_at, record.finished_at - conn.opened_at,
            connection if outcome is Outcome.SUCCESS else None,
            record.address, record.transport, record.rtt_ms, (record,))
        self.service.metrics.record_finished(
            side=SIDE_RECEIVER, attempts=record.number, outcome=result.outcome,
            ours=record.our_addrs, theirs=record.their_addrs,
            direct=result.address if result.ok else None, elapsed=result.elapsed)
        self.service.conclude(result, conn)
