"""The relay's books: reservations, circuits, rate limits and per-circuit budgets.

A pure core: no I/O, no trio, no tracing; time (trio's clock, in seconds) is passed in.
The hop driver (:mod:`.hop`) asks the :class:`ReservationBook` before it accepts a RESERVE
or a CONNECT and tells it when connections and circuits end; a :class:`CircuitBudget`
counts the bytes and time of one relayed connection.

Every decision names the status code to answer with and a reason a person can read. The
limits (:class:`RelayLimits`) default to go-libp2p's and rust-libp2p's:

=============================  =========================  ==============================
limit                          default                    from
=============================  =========================  ==============================
reservation TTL                1 hour                     go, rust
reservations                   128                        go, rust
reservations per IP            8                          go
circuits (all)                 16                         rust
circuits per peer              4 (as source or target)    rust
per circuit                    2 min, 128 KiB each way    go, rust
reservation rate per peer      30, one more every 2 min   rust
reservation rate per IP        60, one more every minute  rust
circuit rate per source peer   30, one more every 2 min   rust
circuit rate per source IP     60, one more every minute  rust
=============================  =========================  ==============================

A peer holds at most one reservation (a new RESERVE renews it); the reservation belongs
to the connection it was made on and dies with it. Reservations and CONNECTs that arrive
over a relayed connection are refused (PERMISSION_DENIED).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ...errors import LocalProtocolError
from .messages import Limit, Status

if TYPE_CHECKING:
    from ...identity import PeerId

__all__ = [
    "DEFAULT_CIRCUIT_LIMIT",
    "Accepted",
    "CircuitBudget",
    "CircuitOpened",
    "Rate",
    "RateLimiter",
    "Refused",
    "RelayLimits",
    "ReservationBook",
    "ReservationEntry",
]

#: 2 minutes and 128 KiB per direction, as go and rust
DEFAULT_CIRCUIT_LIMIT: Final = Limit(duration=120, data=1 << 17)


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: bursts of up to ``burst``, one more every ``interval`` seconds."""

    burst: int
    interval: float

    def __post_init__(self) -> None:
        if self.burst < 1 or self.interval <= 0:
            raise LocalProtocolError(f"a rate needs burst >= 1 and interval > 0: {self}")


@dataclass(frozen=True)
class RelayLimits:
    """What a relay grants, and to how many (see the module docstring for the defaults)."""

    reservation_ttl: float = 3600.0
    max_reservations: int = 128
    max_reservations_per_ip: int = 8
    max_circuits: int = 16
    max_circuits_per_peer: int = 4
    #: limits of each relayed connection; ``Limit()`` relays without limits
    circuit: Limit = DEFAULT_CIRCUIT_LIMIT
    reservation_rate_per_peer: Rate | None = Rate(30, 120.0)
    reservation_rate_per_ip: Rate | None = Rate(60, 60.0)
    circuit_rate_per_peer: Rate | None = Rate(30, 120.0)
    circuit_rate_per_ip: Rate | None = Rate(60, 60.0)
    #: keys each rate limiter remembers (buckets that refilled are forgotten first)
    max_rate_keys: int = 4096

    def __post_init__(self) -> None:
        if self.reservation_ttl <= 0:
            raise LocalProtocolError("reservation_ttl must be positive")
        for name in ("max_reservations", "max_reservations_per_ip", "max_circuits",
                     "max_circuits_per_peer", "max_rate_keys"):
            if getattr(self, name) < 0:
                raise LocalProtocolError(f"{name} must not be negative")


class RateLimiter:
    """Token buckets by key (a peer id, an IP), with a bounded number of keys."""

    def __init__(self, rate: Rate, *, max_keys: int = 4096) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.rate.burst), now))
        refilled = tokens + max(0.0, now - at) / self.rate.interval
        return min(float(self.rate.burst), refilled)

    def allows(self, key: Hashable, now: float) -> bool:
        """Whether ``key`` has a token now (nothing is taken)."""
        return self._tokens(key, now) >= 1.0

    def take(self, key: Hashable, now: float) -> bool:
        """Take a token for ``key``; False (and nothing taken) if it has none."""
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            return False
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._forget_full(now)
            if len(self._buckets) >= self.max_keys:
                return False  # every remembered key is mid-burst: refuse strangers too
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float) -> None:
        full = float(self.rate.burst)
        for key in [k for k in self._buckets if self._tokens(k, now) >= full]:
            del self._buckets[key]


@dataclass(frozen=True, slots=True)
class Accepted:
    """A RESERVE was granted until ``expires_at`` (trio time)."""

    expires_at: float
    renewed: bool


@dataclass(frozen=True, slots=True)
class CircuitOpened:
    """A CONNECT was granted: the circuit is counted until :meth:`close_circuit`."""

    circuit_id: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A request refused with ``status``, for ``reason``."""

    status: Status
    reason: str


@dataclass(slots=True)
class ReservationEntry:
    """One peer's reservation: from which IP, on which connection, until when."""

    peer: PeerId
    ip: str
    connection_id: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Circuit:
    src: PeerId
    dst: PeerId
    opened_at: float


@dataclass
class ReservationBook:
    """Reservations and open circuits of one relay, checked against :class:`RelayLimits`."""

    limits: RelayLimits = field(default_factory=RelayLimits)
    _reservations: dict[PeerId, ReservationEntry] = field(default_factory=dict)
    _circuits: dict[int, _Circuit] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _limiters: dict[str, RateLimiter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        limits = self.limits
        for name in ("reservation_rate_per_peer", "reservation_rate_per_ip",
                     "circuit_rate_per_peer", "circuit_rate_per_ip"):
            rate = getattr(limits, name)
            if rate is not None:
                self._limiters[name] = RateLimiter(rate, max_keys=limits.max_rate_keys)

    # ------------------------------------------------------------------ reservations
    def reserve(
        self, peer: PeerId, *, ip: str | None, connection_id: int, relayed: bool, now: float
    ) -> Accepted | Refused:
        """Decide a RESERVE from ``peer`` (at ``ip``, over connection ``connection_id``)."""
        self.expire(now)
        if relayed:
            return Refused(Status.PERMISSION_DENIED, "reservation over a relayed connection")
        if ip is None:
            return Refused(Status.RESERVATION_REFUSED, "the connection has no IP address")
        limits = self.limits
        existing = self._reservations.get(peer)
        if existing is None and len(self._reservations) >= limits.max_reservations:
            return Refused(
                Status.RESERVATION_REFUSED,
                f"the relay holds its maximum of {limits.max_reservations} reservations",
            )
        same_ip = sum(1 for r in self._reservations.values() if r.ip == ip and r.peer != peer)
        if same_ip >= limits.max_reservations_per_ip:
            return Refused(
                Status.RESERVATION_REFUSED,
                f"{limits.max_reservations_per_ip} reservations from {ip} already",
            )
        refused = self._rate_limited("reservation", peer, ip, now)
        if refused is not None:
            return Refused(Status.RESERVATION_REFUSED, refused)
        expires_at = now + limits.reservation_ttl
        self._reservations[peer] = ReservationEntry(peer, ip, connection_id, expires_at)
        return Accepted(expires_at, renewed=existing is not None)

    def reservation(self, peer: PeerId, now: float) -> ReservationEntry | None:
        """``peer``'s reservation if it has a live one."""
        entry = self._reservations.get(peer)
        if entry is None or entry.expires_at <= now:
            return None
        return entry

    def reservations(self) -> list[ReservationEntry]:
        """Every reservation held (expired ones too, until :meth:`expire` runs)."""
        return list(self._reservations.values())

    def expire(self, now: float) -> list[PeerId]:
        """Drop the reservations that lapsed; return whose."""
        gone = [p for p, r in self._reservations.items() if r.expires_at <= now]
        for peer in gone:
            del self._reservations[peer]
        return gone

    def connection_closed(self, peer: PeerId, connection_id: int) -> bool:
        """A connection ended: drop ``peer``'s reservation if it was made on it."""
        entry = self._reservations.get(peer)
        if entry is not None and entry.connection_id == connection_id:
            del self._reservations[peer]
            return True
        return False

    # ------------------------------------------------------------------ circuits
    def open_circuit(
        self, src: PeerId, dst: PeerId, *, ip: str | None, relayed: bool, now: float
    ) -> CircuitOpened | Refused:
        """Decide a CONNECT from ``src`` (at ``ip``) to ``dst``."""
        if relayed:
            return Refused(Status.PERMISSION_DENIED, "CONNECT over a relayed connection")
        if src == dst:
            return Refused(Status.PERMISSION_DENIED, "a peer cannot connect to itself")
        if self.reservation(dst, now) is None:
            return Refused(Status.NO_RESERVATION, f"{dst} holds no reservation here")
        limits = self.limits
        if len(self._circuits) >= limits.max_circuits:
            return Refused(
                Status.RESOURCE_LIMIT_EXCEEDED,
                f"the relay carries its maximum of {limits.max_circuits} circuits",
            )
        for peer, role in ((src, "source"), (dst, "target")):
            if self.circuits_of(peer) >= limits.max_circuits_per_peer:
                return Refused(
                    Status.RESOURCE_LIMIT_EXCEEDED,
                    f"the {role} {peer} already has {limits.max_circuits_per_peer} circuits",
                )
        refused = self._rate_limited("circuit", src, ip, now)
        if refused is not None:
            return Refused(Status.RESOURCE_LIMIT_EXCEEDED, refused)
        circuit_id = next(self._ids)
        self._circuits[circuit_id] = _Circuit(src, dst, now)
        return CircuitOpened(circuit_id)

    def close_circuit(self, circuit_id: int) -> None:
        """A circuit ended (or its STOP failed): it no longer counts."""
        self._circuits.pop(circuit_id, None)

    def circuits_of(self, peer: PeerId) -> int:
        """How many open circuits ``peer`` is the source or the target of."""
        return sum(1 for c in self._circuits.values() if peer in (c.src, c.dst))

    @property
    def num_circuits(self) -> int:
        """Open circuits."""
        return len(self._circuits)

    # ------------------------------------------------------------------ rates
    def _rate_limited(self, kind: str, peer: PeerId, ip: str | None, now: float) -> str | None:
        """Take a token from each of ``kind``'s limiters, or say which one is empty."""
        by_peer = self._limiters.get(f"{kind}_rate_per_peer")
        by_ip = self._limiters.get(f"{kind}_rate_per_ip")
        if by_peer is not None and not by_peer.allows(peer, now):
            return f"{kind} rate limit for {peer}"
        if by_ip is not None and ip is not None and not by_ip.allows(ip, now):
            return f"{kind} rate limit for {ip}"
        if by_peer is not None and not by_peer.take(peer, now):
            return f"{kind} rate limit: too many peers in a burst"
        if by_ip is not None and ip is not None and not by_ip.take(ip, now):
            return f"{kind} rate limit: too many addresses in a burst"
        return None


class CircuitBudget:
    """The bytes and time one relayed connection may still use.

    Directions are ``"src->dst"`` and ``"dst->src"``. :meth:`take` says how many bytes of
    a chunk may pass; fewer than asked means the data limit is hit.
    """

    DIRECTIONS: Final = ("src->dst", "dst->src")

    def __init__(self, limit: Limit, opened_at: float) -> None:
        self.limit = limit
        self.opened_at = opened_at
        self.relayed: dict[str, int] = dict.fromkeys(self.DIRECTIONS, 0)
        #: "data" or "duration" once a limit was hit
        self.limit_hit: str | None = None

    @property
    def deadline(self) -> float | None:
        """When the duration limit ends the circuit (None: no limit)."""
        if self.limit.duration == 0:
            return None
        return self.opened_at + self.limit.duration

    def take(self, direction: str, nbytes: int) -> int:
        """Account a chunk of ``nbytes`` going ``direction``; return how many may pass."""
        if direction not in self.relayed:
            raise LocalProtocolError(f"unknown circuit direction {direction!r}")
        allowed = nbytes
        if self.limit.data:
            allowed = max(0, min(nbytes, self.limit.data - self.relayed[direction]))
            if allowed < nbytes:
                self.limit_hit = "data"
        self.relayed[direction] += allowed
        return allowed

    def expired(self, now: float) -> bool:
        """Whether the duration limit has passed (and note it)."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            self.limit_hit = self.limit_hit or "duration"
            return True
        return False
