"""Keeping a reservation alive: when to reserve, refresh, retry, and stop advertising.

A pure core (time passed in, no I/O) for one relay a client listens through. The driver
(:class:`~.transport.RelayListener`) asks :meth:`ReservationKeeper.next_wakeup`, sleeps
until then (or until the relay connection closes), and reports what happened:

* a granted RESERVE schedules a refresh after ``refresh_fraction`` of its lifetime
  (rust-libp2p renews after 3/4);
* a failed RESERVE retries after a backoff that doubles up to ``backoff_max``; a failed
  *refresh* keeps the old reservation advertised until it lapses;
* a lost relay connection ends the reservation at once (it dies with the connection) and
  re-reserves right away, then with backoff if that fails.

The states and their transitions are one table, :data:`TRANSITIONS`::

    IDLE --attempt--> RESERVING --granted--> ACTIVE --attempt--> REFRESHING
    RESERVING --failed--> BACKOFF --attempt--> RESERVING
    REFRESHING --granted--> ACTIVE;  REFRESHING --failed--> ACTIVE (until it lapses)
    any but CLOSED --lost--> BACKOFF (retry now);  any --close--> CLOSED
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from ...errors import LocalProtocolError

__all__ = ["TRANSITIONS", "KeeperState", "ReservationKeeper"]


class KeeperState(Enum):
    """Where a kept reservation stands."""

    IDLE = "idle"  # never reserved yet
    RESERVING = "reserving"  # a RESERVE is in flight, no reservation held
    ACTIVE = "active"  # a reservation is held (and advertised while it lasts)
    REFRESHING = "refreshing"  # a RESERVE renewing the held reservation is in flight
    BACKOFF = "backoff"  # no reservation; waiting to try again
    CLOSED = "closed"  # the listener closed


_S = KeeperState
#: (state, event) -> next state; events not listed for a state are API misuse
TRANSITIONS: Final[dict[tuple[KeeperState, str], KeeperState]] = {
    (_S.IDLE, "attempt"): _S.RESERVING,
    (_S.BACKOFF, "attempt"): _S.RESERVING,
    (_S.ACTIVE, "attempt"): _S.REFRESHING,
    (_S.RESERVING, "granted"): _S.ACTIVE,
    (_S.REFRESHING, "granted"): _S.ACTIVE,
    (_S.RESERVING, "failed"): _S.BACKOFF,
    (_S.REFRESHING, "failed"): _S.ACTIVE,
    **{(state, "lost"): _S.BACKOFF for state in _S if state is not _S.CLOSED},
    **{(state, "close"): _S.CLOSED for state in _S},
}


@dataclass
class ReservationKeeper:
    """The schedule of one kept reservation (all times in trio seconds)."""

    refresh_fraction: float = 0.75
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    state: KeeperState = KeeperState.IDLE
    #: when the held reservation lapses (None: none held)
    expires_at: float | None = None
    #: when the next RESERVE is due
    due_at: float = 0.0
    #: failed attempts in a row
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.refresh_fraction < 1.0:
            raise LocalProtocolError("refresh_fraction must be between 0 and 1")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise LocalProtocolError("need 0 < backoff_initial <= backoff_max")

    def _go(self, event: str) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise LocalProtocolError(
                f"reservation keeper: {event!r} in state {self.state.value}"
            ) from None

    # ------------------------------------------------------------------ queries
    def advertised(self, now: float) -> bool:
        """Whether a reservation is held now (so its addresses may be advertised)."""
        return self.expires_at is not None and now < self.expires_at

    def due(self, now: float) -> bool:
        """Whether a RESERVE should be sent now."""
        return self.state in (_S.IDLE, _S.BACKOFF, _S.ACTIVE) and now >= self.due_at

    def next_wakeup(self) -> float | None:
        """When the driver must act next: a RESERVE is due or the held one lapses."""
        if self.state in (_S.RESERVING, _S.REFRESHING, _S.CLOSED):
            return None
        times = [self.due_at]
        if self.expires_at is not None:
            times.append(self.expires_at)
        return min(times)

    # ------------------------------------------------------------------ events
    def attempt(self, now: float) -> None:
        """A RESERVE (first, refresh or retry) is being sent."""
        self._go("attempt")

    def granted(self, now: float, lifetime: float) -> float:
        """The relay granted a reservation lasting ``lifetime`` s; return the refresh time."""
        if lifetime <= 0:
            raise LocalProtocolError("a granted reservation must have a positive lifetime")
        self._go("granted")
        self.failures = 0
        self.expires_at = now + lifetime
        self.due_at = now + lifetime * self.refresh_fraction
        return self.due_at

    def failed(self, now: float) -> float:
        """The RESERVE failed; return when to try again."""
        self._go("failed")
        self.failures += 1
        self.due_at = now + self._backoff()
        if self.expires_at is not None and self.expires_at <= now:
            self.expires_at = None
        if self.state is _S.ACTIVE and self.expires_at is None:
            self.state = _S.BACKOFF  # the refresh failed and the old one has lapsed meanwhile
        if self.expires_at is not None and self.due_at >= self.expires_at:
            # a refresh that keeps failing: one last try just before the reservation
            # lapses, then (once it has) retries go on with the backoff
            last_try = self.expires_at - self.backoff_initial
            self.due_at = last_try if last_try > now else self.expires_at
        return self.due_at

    def lapsed(self, now: float) -> bool:
        """Forget a held reservation that has expired; True if one just did."""
        if self.expires_at is not None and now >= self.expires_at:
            self.expires_at = None
            if self.state is _S.ACTIVE:
                self.state = _S.BACKOFF
            return True
        return False

    def lost(self, now: float) -> None:
        """The connection to the relay closed: the reservation is gone; retry now."""
        self._go("lost")
        self.expires_at = None
        self.due_at = now if self.failures == 0 else now + self._backoff()

    def close(self) -> None:
        """The listener closed: nothing more to do."""
        self._go("close")
        self.expires_at = None

    def _backoff(self) -> float:
        steps = max(0, self.failures - 1)
        return float(min(self.backoff_max, self.backoff_initial * 2.0**min(steps, 32)))
