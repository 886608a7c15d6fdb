"""Reachability: can peers on the internet dial us? A pure state machine, time passed in.

A :class:`ReachabilityTracker` keeps a status -- ``unknown``, ``public`` or ``private`` --
and a confidence from 0 to ``max_confidence`` (3, as go-libp2p's AutoNAT v1), and learns
from AutoNAT answers, each an :class:`Observation`:

* ``PUBLIC``: a server dialled us back; ``PRIVATE``: its dial-back failed;
* ``FAILED``: no usable answer (the server erred, timed out or broke the protocol).
  A server that *refused* to dial (rate limit, no address it may dial) tells us nothing and
  is not an observation at all.

The rules (:data:`TRANSITIONS` is the table; :meth:`ReachabilityTracker.observe` applies it):

* From ``unknown``, the status settles only after *more than* ``max_confidence`` agreeing
  answers in a row (the spec's "more than 3 peers"), with full confidence. A contradicting
  answer restarts the count; a failed probe does not break it.
* A settled status gains confidence with each agreeing answer (up to the maximum) and loses
  one with each contradicting or failed answer. A contradicting answer at confidence 0 flips
  the status; the new status starts with the confidence its run of agreeing answers earned
  (so from full confidence it takes four answers in a row to flip, and the flip is firm).
  A failed answer at confidence 0 makes the status ``unknown`` again.
* When our addresses change, full confidence drops by one so that the next probe comes at
  the retry interval, not the refresh interval (as go).

AutoNAT v2 tracks every address on its own with the same machine
(:class:`AddressReachability`); :func:`aggregate` turns the per-address states into one.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ...errors import LocalProtocolError
from ...multiaddr import Multiaddr

__all__ = [
    "DEFAULT_MAX_CONFIDENCE",
    "TRANSITIONS",
    "AddressReachability",
    "Observation",
    "Reachability",
    "ReachabilityChange",
    "ReachabilityTracker",
    "aggregate",
]

DEFAULT_MAX_CONFIDENCE: Final = 3
#: observations kept per tracker for views and debugging
HISTORY: Final = 16


class Reachability(StrEnum):
    """Whether peers on the internet can dial us (or one of our addresses)."""

    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


class Observation(StrEnum):
    """What one AutoNAT answer says."""

    PUBLIC = "public"  # the server's dial-back reached us
    PRIVATE = "private"  # the server's dial-back failed
    FAILED = "failed"  # no usable answer (error, timeout, protocol violation)

    @property
    def reachability(self) -> Reachability:
        """The status this observation argues for (UNKNOWN for FAILED)."""
        return _ARGUES[self]


_ARGUES: Final = {
    Observation.PUBLIC: Reachability.PUBLIC,
    Observation.PRIVATE: Reachability.PRIVATE,
    Observation.FAILED: Reachability.UNKNOWN,
}

#: (status, observation) -> rule; the rules are :class:`ReachabilityTracker` methods
TRANSITIONS: Final[dict[tuple[Reachability, Observation], str]] = {
    (Reachability.UNKNOWN, Observation.PUBLIC): "vote",
    (Reachability.UNKNOWN, Observation.PRIVATE): "vote",
    (Reachability.UNKNOWN, Observation.FAILED): "ignore",
    (Reachability.PUBLIC, Observation.PUBLIC): "gain",
    (Reachability.PUBLIC, Observation.PRIVATE): "doubt",
    (Reachability.PUBLIC, Observation.FAILED): "fade",
    (Reachability.PRIVATE, Observation.PRIVATE): "gain",
    (Reachability.PRIVATE, Observation.PUBLIC): "doubt",
    (Reachability.PRIVATE, Observation.FAILED): "fade",
}


@dataclass(frozen=True, slots=True)
class ReachabilityChange:
    """The status changed from ``previous`` to ``current`` (with ``confidence``)."""

    previous: Reachability
    current: Reachability
    confidence: int


class ReachabilityTracker:
    """The reachability of the node (AutoNAT v1) or of one address (v2)."""

    def __init__(self, max_confidence: int = DEFAULT_MAX_CONFIDENCE) -> None:
        if max_confidence < 0:
            raise LocalProtocolError("max_confidence must be >= 0")
        self.max_confidence = max_confidence
        self.status = Reachability.UNKNOWN
        self.confidence = 0
        #: the last PUBLIC/PRIVATE observation and how many came in a row
        self.streak_of: Observation | None = None
        self.streak = 0
        #: when the status last changed, and when the last observation came (None: never)
        self.changed_at: float | None = None
        self.observed_at: float | None = None
        self.history: deque[tuple[float, Observation]] = deque(maxlen=HISTORY)

    def observe(self, observation: Observation, now: float) -> ReachabilityChange | None:
        """Learn from one answer; return the change it caused, if any."""
        self.observed_at = now
        self.history.append((now, observation))
        if observation is not Observation.FAILED:
            if observation is self.streak_of:
                self.streak += 1
            else:
                self.streak_of, self.streak = observation, 1
        previous = self.status
        getattr(self, "_" + TRANSITIONS[(self.status, observation)])(observation)
        if self.status is previous:
            return None
        self.changed_at = now
        return ReachabilityChange(previous, self.status, self.confidence)

    # ------------------------------------------------------------------ the rules
    def _vote(self, observation: Observation) -> None:
        if self.streak > self.max_confidence:
            self.status = observation.reachability
            self.confidence = self.max_confidence

    def _ignore(self, observation: Observation) -> None:
        pass

    def _gain(self, observation: Observation) -> None:
        self.confidence = min(self.confidence + 1, self.max_confidence)

    def _doubt(self, observation: Observation) -> None:
        if self.confidence > 0:
            self.confidence -= 1
            return
        self.status = observation.reachability
        self.confidence = min(self.streak - 1, self.max_confidence)

    def _fade(self, observation: Observation) -> None:
        if self.confidence > 0:
            self.confidence -= 1
            return
        self.status = Reachability.UNKNOWN
        self.streak_of, self.streak = None, 0

    # ------------------------------------------------------------------ other inputs
    def addresses_changed(self) -> None:
        """Our addresses changed: drop full confidence by one, so we re-check sooner."""
        if self.status is not Reachability.UNKNOWN and self.confidence == self.max_confidence:
            self.confidence -= 1

    @property
    def settled(self) -> bool:
        """True when the status is known with full confidence."""
        return self.status is not Reachability.UNKNOWN and self.confidence >= self.max_confidence

    def __repr__(self) -> str:
        return f"<ReachabilityTracker {self.status.value} confidence={self.confidence}>"


class AddressReachability:
    """One :class:`ReachabilityTracker` per address (AutoNAT v2), at most ``max_addresses``.

    When full, a new address evicts the one observed least recently.
    """

    def __init__(self, *, max_confidence: int = DEFAULT_MAX_CONFIDENCE,
                 max_addresses: int = 64) -> None:
        self.max_confidence = max_confidence
        self.max_addresses = max(1, max_addresses)
        self._trackers: OrderedDict[Multiaddr, ReachabilityTracker] = OrderedDict()

    def tracker(self, addr: Multiaddr) -> ReachabilityTracker:
        """The tracker of ``addr`` (created if new)."""
        addr = addr.without_peer_id()
        tracker = self._trackers.get(addr)
        if tracker is None:
            if len(self._trackers) >= self.max_addresses:
                oldest = min(self._trackers, key=lambda a: self._trackers[a].observed_at or 0.0)
                del self._trackers[oldest]
            tracker = ReachabilityTracker(self.max_confidence)
            self._trackers[addr] = tracker
        return tracker

    def get(self, addr: Multiaddr) -> ReachabilityTracker | None:
        """The tracker of ``addr``, or None if it was never tested."""
        return self._trackers.get(addr.without_peer_id())

    def observe(self, addr: Multiaddr, observation: Observation,
                now: float) -> ReachabilityChange | None:
        """Learn from one answer about ``addr``."""
        return self.tracker(addr).observe(observation, now)

    def status(self, addr: Multiaddr) -> Reachability:
        """The status of ``addr`` (UNKNOWN if never tested)."""
        tracker = self.get(addr)
        return Reachability.UNKNOWN if tracker is None else tracker.status

    def forget(self, keep: Iterable[Multiaddr]) -> list[Multiaddr]:
        """Drop every address not in ``keep``; return those dropped."""
        wanted = {a.without_peer_id() for a in keep}
        gone = [a for a in self._trackers if a not in wanted]
        for addr in gone:
            del self._trackers[addr]
        return gone

    def addresses_changed(self) -> None:
        """Our addresses changed: re-check every settled address sooner."""
        for tracker in self._trackers.values():
            tracker.addresses_changed()

    def with_status(self, status: Reachability) -> list[Multiaddr]:
        """Addresses whose status is ``status``."""
        return [a for a, t in self._trackers.items() if t.status is status]

    def items(self) -> list[tuple[Multiaddr, ReachabilityTracker]]:
        """(address, tracker) for every tracked address."""
        return list(self._trackers.items())

    def __len__(self) -> int:
        return len(self._trackers)


def aggregate(trackers: Iterable[ReachabilityTracker]) -> tuple[Reachability, int]:
    """The node's reachability from its addresses': public if any address is public,
    private if every tested address is private, else unknown; with the confidence of the
    address that decides it."""
    states = [(t.status, t.confidence) for t in trackers]
    public = [c for s, c in states if s is Reachability.PUBLIC]
    if public:
        return Reachability.PUBLIC, max(public)
    if states and all(s is Reachability.PRIVATE for s, _ in states):
        return Reachability.PRIVATE, min(c for _, c in states)
    return Reachability.UNKNOWN, 0
