"""One DCUtR upgrade as a pure state machine: B's side, from the relayed connection to the end.

B is the peer that *received* the relayed connection (A dialled it through a relay). The
machine follows relay/DCUtR.md:

1. If A advertises public addresses, B first dials them directly (connection reversal).
2. Otherwise (or if that fails) B opens ``/libp2p/dcutr``, sends CONNECT with its own
   addresses and starts a timer; A answers CONNECT with its addresses; B takes the RTT,
   sends SYNC, waits RTT/2, then dials (TCP) or punches (QUIC) while A dials on SYNC.
3. A failed punch starts a fresh CONNECT/SYNC round, up to ``max_attempts`` rounds in all,
   so one bad RTT sample spoils only one attempt.

Nothing here does I/O, reads a clock or traces: the driver feeds *inputs* with the time
(``machine.handle(ConnectReceived(...), now)``) and carries out the *commands* it gets back
(:class:`DialDirect`, :class:`OpenRound`, :class:`SendSync`, :class:`Wait`, :class:`Punch`,
:class:`Finish`).
Which input each phase accepts is the table :data:`TRANSITIONS` (a plain dict, so the docs
can draw it); anything else is the driver's bug and raises LocalProtocolError.

::

    IDLE --Start (A advertises public addresses)--> REVERSING --(ok)--> DONE: direct_dial
      |                                                  |
      | Start (no public address of A)                   | ReversalFinished (failed)
      v                                                  v
    CONNECTING <-----------------------------------------+-----------------------+
      | ConnectSent, then ConnectReceived with usable addresses                   |
      v                                                                           |
    SYNCING --SyncSent (wait RTT/2), DialTime--> PUNCHING --PunchFinished (failed, |
                                                    |        attempts left)-------+
                                                    +--PunchFinished (ok)--> DONE: success

    from any phase to DONE: DirectConnectionSeen, ExchangeFailed, the last failed punch,
    nothing of ours to offer, nothing of A's to dial

Outcomes follow the field's taxonomy (go-libp2p, punchr): ``success`` (the punch gave a
direct connection), ``direct_dial`` (our reversal dial did), ``connection_reversed`` (A
dialled us directly before any punching), ``no_suitable_address``, ``timeout`` (A did not
answer in time), ``protocol_error`` (A broke the protocol), ``failed`` (anything else:
every punch failed, A does not speak DCUtR, the relayed connection went away). Every
outcome but a success comes with a reason a learner can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from ...errors import LocalProtocolError

if TYPE_CHECKING:
    from ...multiaddr import Multiaddr

__all__ = [
    "TRANSITIONS",
    "AttemptRecord",
    "Command",
    "ConnectReceived",
    "ConnectSent",
    "DialDirect",
    "DialTime",
    "DirectConnectionSeen",
    "ExchangeFailed",
    "Finish",
    "HolePunchUpgrade",
    "Input",
    "OpenRound",
    "Outcome",
    "Phase",
    "Punch",
    "PunchFinished",
    "ReversalFinished",
    "SendSync",
    "Start",
    "SyncSent",
    "Wait",
]


class Outcome(StrEnum):
    """How an upgrade (or one attempt) ended; the values are ``libp2p.outcome``'s."""

    SUCCESS = "success"
    CONNECTION_REVERSED = "connection_reversed"
    DIRECT_DIAL = "direct_dial"
    NO_SUITABLE_ADDRESS = "no_suitable_address"
    TIMEOUT = "timeout"
    PROTOCOL_ERROR = "protocol_error"
    FAILED = "failed"

    @property
    def direct(self) -> bool:
        """True if the upgrade ended with a direct connection."""
        return self in (Outcome.SUCCESS, Outcome.DIRECT_DIAL, Outcome.CONNECTION_REVERSED)


class Phase(StrEnum):
    """Where an upgrade is."""

    IDLE = "idle"
    REVERSING = "reversing"  # dialling A's public addresses directly
    CONNECTING = "connecting"  # CONNECT sent (or about to be), waiting for A's
    SYNCING = "syncing"  # A's CONNECT received; SYNC, then RTT/2
    PUNCHING = "punching"  # dialling / punching, until a connection or the deadline
    DONE = "done"


# ---------------------------------------------------------------------- inputs
@dataclass(frozen=True, slots=True)
class Start:
    """Begin: what B knows once the relayed connection is identified.

    ``our_addrs``: the addresses B offers in CONNECT (already chosen; empty with
    ``our_addrs_reason`` saying why). ``reversal_addrs``: A's public addresses B may dial
    directly (empty: no reversal). ``speaks_dcutr``: whether A announced the protocol
    (None: unknown). ``direct``: a direct connection to A exists already (True: inbound,
    False: outbound, None: none).
    """

    our_addrs: tuple[Multiaddr, ...]
    reversal_addrs: tuple[Multiaddr, ...] = ()
    our_addrs_reason: str = ""
    speaks_dcutr: bool | None = None
    direct: bool | None = None


@dataclass(frozen=True, slots=True)
class ReversalFinished:
    """The connection-reversal dial ended (``ok``: it gave a direct connection)."""

    ok: bool
    reason: str = ""
    address: Multiaddr | None = None
    transport: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectSent:
    """Our CONNECT left (the RTT timer starts now)."""


@dataclass(frozen=True, slots=True)
class ConnectReceived:
    """A's CONNECT arrived: ``offered`` is what it sent, ``usable`` what we may dial.

    ``reason`` says why ``usable`` is empty, if it is.
    """

    offered: tuple[Multiaddr, ...]
    usable: tuple[Multiaddr, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SyncSent:
    """Our SYNC left: the RTT/2 timer starts now."""


@dataclass(frozen=True, slots=True)
class DialTime:
    """The RTT/2 timer fired (``now`` >= the ``dial_at`` of :class:`SendSync`)."""


@dataclass(frozen=True, slots=True)
class PunchFinished:
    """The dial/punch of the current attempt ended."""

    ok: bool
    reason: str = ""
    timed_out: bool = False
    address: Multiaddr | None = None
    transport: str | None = None


@dataclass(frozen=True, slots=True)
class DirectConnectionSeen:
    """A direct connection to A appeared that no dial of this phase made (``inbound``:
    A opened it)."""

    inbound: bool = True
    address: Multiaddr | None = None
    transport: str | None = None


@dataclass(frozen=True, slots=True)
class ExchangeFailed:
    """The CONNECT/SYNC exchange broke: ``outcome`` is TIMEOUT, PROTOCOL_ERROR or FAILED."""

    outcome: Outcome
    reason: str


Input = (
    Start | ReversalFinished | ConnectSent | ConnectReceived | SyncSent | DialTime
    | PunchFinished | DirectConnectionSeen | ExchangeFailed
)


# ---------------------------------------------------------------------- commands
@dataclass(frozen=True, slots=True)
class DialDirect:
    """Dial ``addrs`` directly (connection reversal) until ``deadline``."""

    addrs: tuple[Multiaddr, ...]
    deadline: float


@dataclass(frozen=True, slots=True)
class OpenRound:
    """Open a fresh ``/libp2p/dcutr`` stream and send CONNECT(``addrs``); the exchange
    must be over by ``deadline``. Report :class:`ConnectSent` when it left."""

    attempt: int
    addrs: tuple[Multiaddr, ...]
    deadline: float


@dataclass(frozen=True, slots=True)
class SendSync:
    """Send SYNC, then report :class:`SyncSent` (``rtt`` is the round trip just measured)."""

    attempt: int
    rtt: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Report :class:`DialTime` at ``until`` (RTT/2 after SYNC left)."""

    attempt: int
    until: float


@dataclass(frozen=True, slots=True)
class Punch:
    """Dial / punch ``addrs`` until a direct connection appears or ``deadline``."""

    attempt: int
    addrs: tuple[Multiaddr, ...]
    deadline: float


@dataclass(frozen=True, slots=True)
class Finish:
    """The upgrade is over."""

    outcome: Outcome
    reason: str
    attempts: int


Command = DialDirect | OpenRound | SendSync | Wait | Punch | Finish

#: phase -> the inputs it accepts (DirectConnectionSeen is accepted in every phase but DONE)
TRANSITIONS: Final[dict[Phase, frozenset[type]]] = {
    Phase.IDLE: frozenset({Start}),
    Phase.REVERSING: frozenset({ReversalFinished, DirectConnectionSeen}),
    Phase.CONNECTING: frozenset({ConnectSent, ConnectReceived, ExchangeFailed,
                                 DirectConnectionSeen}),
    Phase.SYNCING: frozenset({SyncSent, DialTime, ExchangeFailed, DirectConnectionSeen}),
    Phase.PUNCHING: frozenset({PunchFinished, DirectConnectionSeen}),
    Phase.DONE: frozenset(),
}


@dataclass
class AttemptRecord:
    """What happened in one CONNECT/SYNC round (for spans, events, metrics)."""

    number: int
    started_at: float
    our_addrs: tuple[Multiaddr, ...] = ()
    connect_sent_at: float | None = None
    rtt: float | None = None  # seconds
    their_addrs: tuple[Multiaddr, ...] = ()
    dial_addrs: tuple[Multiaddr, ...] = ()
    sync_sent_at: float | None = None
    dial_at: float | None = None
    finished_at: float | None = None
    outcome: Outcome | None = None
    reason: str = ""
    address: Multiaddr | None = None  # the direct connection's remote address, on success
    transport: str | None = None

    @property
    def rtt_ms(self) -> float | None:
        return None if self.rtt is None else self.rtt * 1000.0


@dataclass
class HolePunchUpgrade:
    """B's side of one DCUtR upgrade (see the module docstring).

    Timeouts in seconds: ``reversal_timeout`` for the direct dial, ``exchange_timeout`` for
    one CONNECT/SYNC exchange, ``punch_timeout`` for one attempt's dial/punch.
    """

    max_attempts: int = 3
    reversal_timeout: float = 5.0
    exchange_timeout: float = 10.0
    punch_timeout: float = 5.0
    peer_name: str = "A"  # how reasons name the other side

    phase: Phase = Phase.IDLE
    started_at: float | None = None
    finished_at: float | None = None
    outcome: Outcome | None = None
    reason: str = ""
    our_addrs: tuple[Multiaddr, ...] = ()
    attempts: list[AttemptRecord] = field(default_factory=list)
    reversal_addrs: tuple[Multiaddr, ...] = ()
    reversal_reason: str = ""  # why the reversal failed, when it was tried
    address: Multiaddr | None = None  # the direct connection's remote address
    transport: str | None = None
    _speaks_dcutr: bool | None = None
    _our_addrs_reason: str = ""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise LocalProtocolError(f"max_attempts must be at least 1, not {self.max_attempts}")

    # ------------------------------------------------------------------ the one entry point
    def handle(self, event: Input, now: float) -> list[Command]:
        """Apply ``event`` at time ``now``; return what the driver must do next."""
        allowed = TRANSITIONS[self.phase]
        if type(event) not in allowed:
            raise LocalProtocolError(
                f"DCUtR upgrade in phase {self.phase.value!r} cannot take "
                f"{type(event).__name__}"
            )
        handler = getattr(self, f"_on_{type(event).__name__}")
        commands: list[Command] = handler(event, now)
        return commands

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def current(self) -> AttemptRecord | None:
        """The attempt in progress (or the last one)."""
        return self.attempts[-1] if self.attempts else None

    # ------------------------------------------------------------------ handlers
    def _on_Start(self, event: Start, now: float) -> list[Command]:
        self.started_at = now
        self.our_addrs = event.our_addrs
        self.reversal_addrs = event.reversal_addrs
        self._speaks_dcutr = event.speaks_dcutr
        self._our_addrs_reason = event.our_addrs_reason
        if event.direct is not None:
            return self._direct_seen(DirectConnectionSeen(inbound=event.direct), now,
                                     already=True)
        if event.reversal_addrs:
            self.phase = Phase.REVERSING
            return [DialDirect(event.reversal_addrs, now + self.reversal_timeout)]
        return self._begin_punching(now)

    def _on_ReversalFinished(self, event: ReversalFinished, now: float) -> list[Command]:
        if event.ok:
            self.address, self.transport = event.address, event.transport
            return self._finish(Outcome.DIRECT_DIAL, "", now)
        self.reversal_reason = event.reason or "the direct dial failed"
        return self._begin_punching(now)

    def _begin_punching(self, now: float) -> list[Command]:
        name = self.peer_name
        if self._speaks_dcutr is False:
            return self._finish(
                Outcome.FAILED, f"{name} does not speak /libp2p/dcutr{self._after_reversal()}",
                now)
        if not self.our_addrs:
            why = self._our_addrs_reason or "we have no public address to offer"
            return self._finish(Outcome.NO_SUITABLE_ADDRESS, why + self._after_reversal(), now)
        return self._new_round(now)

    def _after_reversal(self) -> str:
        if not self.reversal_reason:
            return ""
        return f" (and the direct dial to {self.peer_name} failed: {self.reversal_reason})"

    def _new_round(self, now: float) -> list[Command]:
        number = len(self.attempts) + 1
        self.attempts.append(AttemptRecord(number, now, our_addrs=self.our_addrs))
        self.phase = Phase.CONNECTING
        return [OpenRound(number, self.our_addrs, now + self.exchange_timeout)]

    def _on_ConnectSent(self, event: ConnectSent, now: float) -> list[Command]:
        record = self._record()
        if record.connect_sent_at is not None:
            raise LocalProtocolError(f"CONNECT of attempt {record.number} reported twice")
        record.connect_sent_at = now
        return []

    def _on_ConnectReceived(self, event: ConnectReceived, now: float) -> list[Command]:
        record = self._record()
        if record.connect_sent_at is None:
            raise LocalProtocolError("a CONNECT arrived before ours was reported sent")
        record.rtt = max(0.0, now - record.connect_sent_at)
        record.their_addrs = event.offered
        record.dial_addrs = event.usable
        if not event.usable:
            why = event.reason or f"{self.peer_name} offered no address we can dial"
            record.outcome, record.reason, record.finished_at = (
                Outcome.NO_SUITABLE_ADDRESS, why, now)
            return self._finish(Outcome.NO_SUITABLE_ADDRESS, why, now)
        self.phase = Phase.SYNCING
        return [SendSync(record.number, record.rtt)]

    def _on_SyncSent(self, event: SyncSent, now: float) -> list[Command]:
        record = self._record()
        if record.sync_sent_at is not None:
            raise LocalProtocolError(f"SYNC of attempt {record.number} reported twice")
        assert record.rtt is not None
        record.sync_sent_at = now
        record.dial_at = now + record.rtt / 2  # the timer starts when SYNC leaves
        return [Wait(record.number, record.dial_at)]

    def _on_DialTime(self, event: DialTime, now: float) -> list[Command]:
        record = self._record()
        if record.sync_sent_at is None or record.dial_at is None:
            raise LocalProtocolError("the dial timer fired before SYNC was reported sent")
        if now + 1e-9 < record.dial_at:  # (sleep_until may round)
            raise LocalProtocolError(f"the dial timer fired {record.dial_at - now:.6f} s early")
        self.phase = Phase.PUNCHING
        return [Punch(record.number, record.dial_addrs, now + self.punch_timeout)]

    def _on_PunchFinished(self, event: PunchFinished, now: float) -> list[Command]:
        record = self._record()
        record.finished_at = now
        if event.ok:
            record.outcome = Outcome.SUCCESS
            record.address, record.transport = event.address, event.transport
            self.address, self.transport = event.address, event.transport
            return self._finish(Outcome.SUCCESS, "", now)
        record.outcome = Outcome.TIMEOUT if event.timed_out else Outcome.FAILED
        record.reason = event.reason or (
            f"no direct connection within {self.punch_timeout:g} s" if event.timed_out
            else "every dial failed")
        if record.number < self.max_attempts:
            return self._new_round(now)
        return self._finish(Outcome.FAILED, self._all_failed(), now)

    def _all_failed(self) -> str:
        n = len(self.attempts)
        last = self.attempts[-1]
        words = "attempt" if n == 1 else "attempts"
        return f"no direct connection after {n} {words}; attempt {last.number}: {last.reason}"

    def _on_DirectConnectionSeen(self, event: DirectConnectionSeen, now: float) -> list[Command]:
        return self._direct_seen(event, now, already=False)

    def _direct_seen(self, event: DirectConnectionSeen, now: float, *, already: bool
                     ) -> list[Command]:
        self.address, self.transport = event.address, event.transport
        record = self.current
        if self.phase in (Phase.SYNCING, Phase.PUNCHING) and record is not None:
            # A dialled on our SYNC and got through first: that is the punch working
            record.outcome, record.finished_at = Outcome.SUCCESS, now
            record.address, record.transport = event.address, event.transport
            return self._finish(Outcome.SUCCESS, "", now)
        if record is not None and record.outcome is None:
            record.outcome, record.finished_at = Outcome.CONNECTION_REVERSED, now
        if event.inbound:
            return self._finish(Outcome.CONNECTION_REVERSED, "", now)
        # an outbound direct connection we did not make in this upgrade
        reason = "a direct connection existed already" if already else ""
        return self._finish(Outcome.DIRECT_DIAL, reason, now)

    def _on_ExchangeFailed(self, event: ExchangeFailed, now: float) -> list[Command]:
        if event.outcome not in (Outcome.TIMEOUT, Outcome.PROTOCOL_ERROR, Outcome.FAILED):
            raise LocalProtocolError(f"an exchange cannot fail with outcome {event.outcome}")
        record = self._record()
        record.outcome, record.reason, record.finished_at = event.outcome, event.reason, now
        return self._finish(event.outcome, event.reason, now)

    # ------------------------------------------------------------------ helpers
    def _record(self) -> AttemptRecord:
        if not self.attempts:
            raise LocalProtocolError("no attempt is in progress")
        return self.attempts[-1]

    def _finish(self, outcome: Outcome, reason: str, now: float) -> list[Command]:
        self.phase = Phase.DONE
        self.outcome = outcome
        self.reason = reason
        self.finished_at = now
        return [Finish(outcome, self.reason, len(self.attempts))]
