"""Hole-punch events on the node's event bus, and the result of one upgrade.

``side`` is go-libp2p's name for the role: ``"initiator"`` for B (it received the relayed
connection and runs the upgrade), ``"receiver"`` for A (it answers B's rounds and dials
on SYNC). On B an upgrade publishes :class:`HolePunchStarted`, one
:class:`HolePunchAttemptFailed` per failed round, then :class:`HolePunchSucceeded` or
:class:`HolePunchFailed`. On A each round B starts publishes :class:`HolePunchStarted`,
then :class:`HolePunchSucceeded` or :class:`HolePunchAttemptFailed` (A cannot know whether
B will try again); when B's connection reversal reaches A, A publishes
:class:`HolePunchSucceeded` with outcome ``connection_reversed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...node.events import Event

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node.connection import Connection
    from .attempt import AttemptRecord

__all__ = [
    "SIDE_INITIATOR",
    "SIDE_RECEIVER",
    "HolePunchAttemptFailed",
    "HolePunchFailed",
    "HolePunchResult",
    "HolePunchStarted",
    "HolePunchSucceeded",
]

SIDE_INITIATOR = "initiator"  # B
SIDE_RECEIVER = "receiver"  # A


@dataclass(frozen=True)
class HolePunchResult:
    """How one upgrade (B) or one answered round (A) ended.

    ``outcome`` is a ``libp2p.outcome`` value; ``reason`` says why it did not succeed.
    ``connection`` is the direct connection (None on failure), ``address`` its remote
    address and ``transport`` ``tcp`` or ``quic-v1``. Times are trio times; ``elapsed`` is
    seconds from the relayed connection's opening to the end.
    """

    peer: PeerId
    side: str
    outcome: str
    reason: str
    attempts: int
    started_at: float
    finished_at: float
    elapsed: float
    connection: Connection | None = None
    address: Multiaddr | None = None
    transport: str | None = None
    rtt_ms: float | None = None
    records: tuple[AttemptRecord, ...] = field(default=(), compare=False)

    @property
    def ok(self) -> bool:
        """True if a direct connection came of it."""
        return self.connection is not None


@dataclass(frozen=True)
class HolePunchStarted(Event):
    """An upgrade (B) or a round (A) began over ``relayed``."""

    peer: PeerId
    side: str
    relayed: Connection
    attempt: int = 0  # A: the round number; B: 0 (the whole upgrade)


@dataclass(frozen=True)
class HolePunchAttemptFailed(Event):
    """One CONNECT/SYNC round ended without a direct connection."""

    peer: PeerId
    side: str
    attempt: int
    outcome: str
    reason: str


@dataclass(frozen=True)
class HolePunchSucceeded(Event):
    """A direct connection to ``peer`` replaced the relayed one (``result.connection``)."""

    peer: PeerId
    side: str
    outcome: str
    result: HolePunchResult

    @property
    def connection(self) -> Connection | None:
        return self.result.connection


@dataclass(frozen=True)
class HolePunchFailed(Event):
    """B gave up: no direct connection to ``peer``; ``reason`` says why."""

    peer: PeerId
    side: str
    outcome: str
    reason: str
    result: HolePunchResult
