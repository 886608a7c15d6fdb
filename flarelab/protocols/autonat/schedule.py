"""When to probe next, and whom to ask: go-libp2p's AutoNAT schedule as a pure object.

* The first probe waits ``boot_delay`` after start (peers connect meanwhile), unless a
  server appears while we know nothing: then we ask it at once (as go does when identify
  completes with an AutoNAT peer).
* Then every ``retry_interval`` while the status is unknown, not fully confident or the last
  server refused; every ``refresh_interval`` once settled -- twice as long when public and
  peers keep dialling us, a fifth when not public and peers dial us anyway (as go).
* Never twice within ``min_gap``; never the same server within ``throttle``.
* With no server to ask, wait ``retry_interval`` (or until a server appears).

For AutoNAT v2 the same applies to every address separately (``addr_*`` methods).
Time is passed in; nothing here sleeps.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from .reachability import Reachability

if TYPE_CHECKING:
    from ...multiaddr import Multiaddr

__all__ = ["ProbeSchedule"]

P = TypeVar("P")

#: servers remembered in the throttle table at most (expired ones go first)
MAX_THROTTLED = 1024


class ProbeSchedule(Generic[P]):
    """The probe timetable of one AutoNAT client (v1: the node; v2: each address)."""

    def __init__(
        self, *, started_at: float, boot_delay: float, retry_interval: float,
        refresh_interval: float, min_gap: float, throttle: float, max_confidence: int,
    ) -> None:
        self.started_at = started_at
        self.boot_delay = boot_delay
        self.retry_interval = retry_interval
        self.refresh_interval = refresh_interval
        self.min_gap = min_gap
        self.throttle = throttle
        self.max_confidence = max_confidence
        self.last_try: float | None = None
        self.last_probe: float | None = None
        self.last_inbound: float | None = None
        #: the last probe got a refusal: try again at the retry interval
        self.retry = False
        #: ask as soon as the gap allows (a server appeared while we know nothing)
        self.urgent = False
        #: the last try found no server to ask
        self.idle = False
        self._asked: dict[P, float] = {}
        self._addr_probed: dict[Multiaddr, float] = {}
        self._addr_retry: set[Multiaddr] = set()

    # ------------------------------------------------------------------ intervals
    def interval(self, status: Reachability, confidence: int, *, retry: bool = False,
                 inbound_since: bool = False) -> float:
        """How long after a probe the next one is due."""
        if retry or status is Reachability.UNKNOWN or confidence < self.max_confidence:
            return self.retry_interval
        if inbound_since:
            if status is Reachability.PUBLIC:
                return self.refresh_interval * 2
            return self.refresh_interval / 5
        return self.refresh_interval

    def _gap(self) -> float:
        return -math.inf if self.last_try is None else self.last_try + self.min_gap

    def next_due(self, status: Reachability, confidence: int) -> float:
        """When the next (node-level) probe is due."""
        gap = self._gap()
        if self.urgent:
            return max(gap, self.started_at)
        if self.idle and self.last_try is not None:
            return max(gap, self.last_try + self.retry_interval)
        if self.last_probe is None:
            return max(gap, self.started_at + self.boot_delay)
        inbound = self.last_inbound is not None and self.last_inbound > self.last_probe
        wait = self.interval(status, confidence, retry=self.retry, inbound_since=inbound)
        return max(gap, self.last_probe + wait)

    # ------------------------------------------------------------------ what happened
    def tried(self, now: float, *, found_server: bool) -> None:
        """We looked for a server to ask (and found one, or none)."""
        self.last_try = now
        self.urgent = False
        self.idle = not found_server

    def probed(self, now: float, *, refused: bool = False) -> None:
        """A probe finished (``refused``: the server would not try; ask again sooner)."""
        self.last_probe = now
        self.retry = refused

    def inbound(self, now: float) -> None:
        """A peer dialled us from the internet."""
        self.last_inbound = now

    def server_appeared(self, *, status_unknown: bool) -> None:
        """A new server is available: stop idling; ask it at once if we know nothing."""
        self.idle = False
        if status_unknown:
            self.urgent = True

    # ------------------------------------------------------------------ servers
    def allowed(self, server: P, now: float) -> bool:
        """Whether ``server`` may be asked now (not asked within ``throttle``)."""
        asked = self._asked.get(server)
        return asked is None or now - asked >= self.throttle

    def asked(self, server: P, now: float) -> None:
        """Note that ``server`` was asked at ``now``."""
        if len(self._asked) >= MAX_THROTTLED:
            self._asked = {p: t for p, t in self._asked.items() if now - t < self.throttle}
            while len(self._asked) >= MAX_THROTTLED:
                del self._asked[min(self._asked, key=self._asked.__getitem__)]
        self._asked[server] = now

    def pick(self, candidates: Iterable[P], now: float, rng: random.Random) -> P | None:
        """A random server among ``candidates`` that may be asked now, or None."""
        allowed = [p for p in candidates if self.allowed(p, now)]
        return rng.choice(allowed) if allowed else None

    def free_at(self, candidates: Iterable[P]) -> float | None:
        """When the first throttled candidate may be asked again (None: no candidates)."""
        times = [self._asked[p] + self.throttle if p in self._asked else -math.inf
                 for p in candidates]
        return min(times) if times else None

    # ------------------------------------------------------------------ v2: per address
    def addr_due(self, addr: Multiaddr, status: Reachability, confidence: int) -> float:
        """When ``addr`` should be tested next."""
        gap = self._gap()
        if self.idle and self.last_try is not None:
            return max(gap, self.last_try + self.retry_interval)
        last = self._addr_probed.get(addr)
        if last is None:
            start = self.started_at if self.urgent else self.started_at + self.boot_delay
            return max(gap, start)
        inbound = self.last_inbound is not None and self.last_inbound > last
        wait = self.interval(status, confidence, retry=addr in self._addr_retry,
                             inbound_since=inbound)
        return max(gap, last + wait)

    def addr_probed(self, addr: Multiaddr, now: float, *, refused: bool = False) -> None:
        """A probe of ``addr`` finished."""
        self._addr_probed[addr] = now
        if refused:
            self._addr_retry.add(addr)
        else:
            self._addr_retry.discard(addr)

    def forget_addrs(self, keep: Iterable[Multiaddr]) -> None:
        """Forget the timetable of addresses not in ``keep``."""
        wanted = set(keep)
        self._addr_probed = {a: t for a, t in self._addr_probed.items() if a in wanted}
        self._addr_retry &= wanted
