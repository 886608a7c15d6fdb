"""The Flare state machine: reachability in, relay reservations and a phase out.

A pure core (no I/O, no trio, no tracing; time passed in). The driver
(:class:`~flarelab.flare.orchestrator.Flare`) feeds it what happens -- AutoNAT's verdict,
relay candidates, reservations granted, refused or lost, DCUtR upgrades starting and
ending -- and carries out the :data:`Command` values it returns:

* ``PRIVATE`` starts the search for relays: the best candidates (configured relays first,
  then connected peers that identify as hop-capable, then discovered ones, each in the
  order they came) are reserved on, up to ``max_relays`` at once. A relay that refuses or
  drops us goes into a backoff that doubles per failure, and the next candidate takes its
  place. Too few candidates ask the discover hook.
* ``PUBLIC`` stops the search: reservations are released (unless kept) and, if
  configured, the node serves as a relay.
* ``UNKNOWN`` (confidence faded) changes nothing: reservations stay until AutoNAT says
  public, as go-libp2p's autorelay does.

The phase a reader sees (:class:`FlarePhase`) is derived, first match wins::

    not started            -> idle       (stopped after stop())
    a DCUtR upgrade runs   -> upgrading
    public                 -> public
    a reservation is held  -> reserved
    a RESERVE is in flight -> reserving
    private                -> private
    otherwise              -> probing
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING

from ..errors import LocalProtocolError
from ..protocols.autonat.reachability import Reachability

if TYPE_CHECKING:
    from ..identity import PeerId
    from ..multiaddr import Multiaddr

__all__ = [
    "Candidate",
    "Command",
    "Discover",
    "FlareCore",
    "FlarePhase",
    "FlareState",
    "Release",
    "Reserve",
    "ServeRelay",
    "Source",
]


class FlarePhase(StrEnum):
    """Where the Flare flow stands on one node."""

    IDLE = "idle"
    PROBING = "probing"
    PUBLIC = "public"
    PRIVATE = "private"
    RESERVING = "reserving"
    RESERVED = "reserved"
    UPGRADING = "upgrading"
    STOPPED = "stopped"


class Source(IntEnum):
    """Where a relay candidate came from; lower is preferred."""

    CONFIGURED = 0
    IDENTIFIED = 1
    DISCOVERED = 2


@dataclass(frozen=True)
class FlareState:
    """A snapshot of the flow on one node (what :class:`FlareStateChanged` carries)."""

    phase: FlarePhase = FlarePhase.IDLE
    reachability: Reachability = Reachability.UNKNOWN
    #: relays we hold a reservation on, in the order they were granted
    relays: tuple[PeerId, ...] = ()
    #: our circuit addresses through them (``…/p2p/RELAY/p2p-circuit``)
    circuit_addrs: tuple[Multiaddr, ...] = ()
    #: relays a RESERVE is in flight to
    reserving: tuple[PeerId, ...] = ()
    #: peers a DCUtR upgrade (B's side) runs with
    upgrading: tuple[PeerId, ...] = ()
    #: whether we serve as a relay
    relay_service: bool = False

    def describe(self) -> str:
        """Return one readable line about the state."""
        parts = [f"{self.phase.value} (reachability {self.reachability.value})"]
        if self.relays:
            parts.append("reserved on " + ", ".join(p.short() for p in self.relays))
        if self.reserving:
            parts.append("reserving on " + ", ".join(p.short() for p in self.reserving))
        if self.upgrading:
            parts.append("upgrading with " + ", ".join(p.short() for p in self.upgrading))
        if self.relay_service:
            parts.append("serving as a relay")
        return "; ".join(parts)


# ---------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Reserve:
    """Listen through ``relay`` (at ``addr``; None: wherever the peerstore says)."""

    relay: PeerId
    addr: Multiaddr | None


@dataclass(frozen=True)
class Release:
    """Stop listening through ``relay`` (drop the reservation)."""

    relay: PeerId


@dataclass(frozen=True)
class ServeRelay:
    """Start (``on``) or stop serving as a relay."""

    on: bool


@dataclass(frozen=True)
class Discover:
    """Ask the discover hook for more relay candidates."""


Command = Reserve | Release | ServeRelay | Discover


@dataclass
class Candidate:
    """A peer that could relay for us."""

    peer: PeerId
    addr: Multiaddr | None
    source: Source
    order: int
    failures: int = 0
    #: not before this time (after a refusal or a loss)
    retry_at: float = 0.0
    #: why the last attempt failed or the reservation ended
    reason: str = ""

    def key(self) -> tuple[int, int]:
        return (int(self.source), self.order)


@dataclass
class FlareCore:
    """The decisions of the Flare flow (see the module docstring)."""

    max_relays: int = 2
    max_candidates: int = 32
    backoff: float = 30.0
    backoff_max: float = 600.0
    keep_when_public: bool = False
    relay_service: bool = False
    discover_interval: float = 60.0
    can_discover: bool = False

    reachability: Reachability = Reachability.UNKNOWN
    started: bool = False
    stopped: bool = False
    #: looking for relays (from PRIVATE until PUBLIC)
    seeking: bool = False
    serving: bool = False
    candidates: dict[PeerId, Candidate] = field(default_factory=dict)
    held: dict[PeerId, tuple[Multiaddr, ...]] = field(default_factory=dict)
    reserving: list[PeerId] = field(default_factory=list)
    upgrading: list[PeerId] = field(default_factory=list)
    last_discover: float | None = None
    _order: int = 0

    def __post_init__(self) -> None:
        if self.max_relays < 0 or self.max_candidates < 1:
            raise LocalProtocolError("need max_relays >= 0 and max_candidates >= 1")

    # ------------------------------------------------------------------ the snapshot
    @property
    def phase(self) -> FlarePhase:
        """The derived phase (see the module docstring)."""
        if self.stopped:
            return FlarePhase.STOPPED
        if not self.started:
            return FlarePhase.IDLE
        if self.upgrading:
            return FlarePhase.UPGRADING
        if self.reachability is Reachability.PUBLIC:
            return FlarePhase.PUBLIC
        if self.held:
            return FlarePhase.RESERVED
        if self.reserving:
            return FlarePhase.RESERVING
        if self.reachability is Reachability.PRIVATE:
            return FlarePhase.PRIVATE
        return FlarePhase.PROBING

    @property
    def state(self) -> FlareState:
        """The current snapshot."""
        addrs = tuple(dict.fromkeys(a for addrs in self.held.values() for a in addrs))
        return FlareState(self.phase, self.reachability, tuple(self.held), addrs,
                          tuple(self.reserving), tuple(self.upgrading), self.serving)

    # ------------------------------------------------------------------ inputs
    def start(self, now: float, reachability: Reachability = Reachability.UNKNOWN
              ) -> list[Command]:
        """The flow begins (the node runs); ``reachability`` is what AutoNAT knows now."""
        if self.stopped:
            raise LocalProtocolError("a stopped Flare cannot start again")
        self.started = True
        return self.set_reachability(reachability, now)

    def stop(self) -> list[Command]:
        """The flow ends: release everything."""
        out: list[Command] = [Release(p) for p in [*self.held, *self.reserving]]
        if self.serving:
            out.append(ServeRelay(False))
        self.held.clear()
        self.reserving.clear()
        self.upgrading.clear()
        self.serving = False
        self.seeking = False
        self.stopped = True
        return out

    def set_reachability(self, reachability: Reachability, now: float) -> list[Command]:
        """AutoNAT's verdict (new or repeated)."""
        self.reachability = reachability
        out: list[Command] = []
        if reachability is Reachability.PRIVATE:
            self.seeking = True
        elif reachability is Reachability.PUBLIC:
            self.seeking = False
            if not self.keep_when_public:
                out += [Release(p) for p in [*self.held, *self.reserving]]
                self.held.clear()
                self.reserving.clear()
        want_service = self.relay_service and reachability is Reachability.PUBLIC
        if self.started and want_service != self.serving:
            self.serving = want_service
            out.append(ServeRelay(want_service))
        return out + self.tick(now)

    def add_candidate(self, peer: PeerId, addr: Multiaddr | None, source: Source,
                      now: float) -> list[Command]:
        """A peer that could relay for us; a better source upgrades a known candidate."""
        known = self.candidates.get(peer)
        if known is not None:
            if source < known.source:
                known.source = source
            if addr is not None and (known.addr is None or source <= known.source):
                known.addr = addr
            return self.tick(now)
        if len(self.candidates) >= self.max_candidates:
            worst = max((c for c in self.candidates.values()
                         if c.peer not in self.held and c.peer not in self.reserving),
                        key=Candidate.key, default=None)
            if worst is None or worst.key() <= (int(source), self._order):
                return []
            del self.candidates[worst.peer]
        self.candidates[peer] = Candidate(peer, addr, source, self._order)
        self._order += 1
        return self.tick(now)

    def remove_candidate(self, peer: PeerId, now: float) -> list[Command]:
        """``peer`` no longer offers to relay (a held reservation stays until it ends)."""
        if peer in self.held or peer in self.reserving:
            return []
        self.candidates.pop(peer, None)
        return self.tick(now)

    def reserved(self, relay: PeerId, circuit_addrs: Iterable[Multiaddr], now: float
                 ) -> list[Command]:
        """A RESERVE we asked for was granted (or its addresses changed)."""
        if relay in self.reserving:
            self.reserving.remove(relay)
        elif relay not in self.held:
            return [Release(relay)]  # released meanwhile: not wanted any more
        self.held[relay] = tuple(circuit_addrs)
        candidate = self.candidates.get(relay)
        if candidate is not None:
            candidate.failures, candidate.reason = 0, ""
        return self.tick(now)

    def reserve_failed(self, relay: PeerId, reason: str, now: float) -> list[Command]:
        """The first RESERVE on ``relay`` failed: back off from it, try the next one."""
        if relay in self.reserving:
            self.reserving.remove(relay)
        self._back_off(relay, reason, now)
        return self.tick(now)

    def reservation_lost(self, relay: PeerId, reason: str, now: float) -> list[Command]:
        """A held reservation ended (the relay connection closed, a refresh failed and it
        lapsed): release that relay, back off from it, reserve on the next one."""
        if relay not in self.held:
            return []
        del self.held[relay]
        self._back_off(relay, reason, now)
        return [Release(relay), *self.tick(now)]

    def upgrade_started(self, peer: PeerId) -> None:
        """B's side of a DCUtR upgrade began with ``peer``."""
        if peer not in self.upgrading:
            self.upgrading.append(peer)

    def upgrade_ended(self, peer: PeerId) -> None:
        """The upgrade with ``peer`` ended (either way)."""
        if peer in self.upgrading:
            self.upgrading.remove(peer)

    def discovered(self, now: float) -> None:
        """The discover hook was called (whatever it returned)."""
        self.last_discover = now

    # ------------------------------------------------------------------ decisions
    def tick(self, now: float) -> list[Command]:
        """Reserve on the best candidates that are due, up to ``max_relays``."""
        if not self.started or self.stopped or not self.seeking:
            return []
        out: list[Command] = []
        free = self.max_relays - len(self.held) - len(self.reserving)
        if free <= 0:
            return out
        busy = set(self.held) | set(self.reserving)
        ready = sorted((c for c in self.candidates.values()
                        if c.peer not in busy and c.retry_at <= now), key=Candidate.key)
        for candidate in ready[:free]:
            self.reserving.append(candidate.peer)
            out.append(Reserve(candidate.peer, candidate.addr))
        if len(ready) < free and self._discover_due(now):
            self.last_discover = now
            out.append(Discover())
        return out

    def _discover_due(self, now: float) -> bool:
        return self.can_discover and (
            self.last_discover is None or now >= self.last_discover + self.discover_interval)

    def next_wakeup(self) -> float | None:
        """When :meth:`tick` may have something new to do (a backoff or discovery ends)."""
        if not self.started or self.stopped or not self.seeking:
            return None
        if len(self.held) + len(self.reserving) >= self.max_relays:
            return None
        busy = set(self.held) | set(self.reserving)
        times = [c.retry_at for c in self.candidates.values() if c.peer not in busy]
        if self.can_discover and self.last_discover is not None:
            times.append(self.last_discover + self.discover_interval)
        return min(times, default=None)

    def _back_off(self, relay: PeerId, reason: str, now: float) -> None:
        candidate = self.candidates.get(relay)
        if candidate is None:
            return
        candidate.failures += 1
        candidate.reason = reason
        wait = min(self.backoff_max, self.backoff * 2.0 ** min(candidate.failures - 1, 32))
        candidate.retry_at = now + wait
