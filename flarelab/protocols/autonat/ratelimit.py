"""Rate limits of an AutoNAT server: a pure sliding-window limiter, time passed in.

A server dials whatever its clients ask it to (within the address rules), so it limits how
often: requests per minute overall and per peer, requests one peer may have in flight at
once, and (v2) requests that need dial data. go-libp2p's defaults: v1 30 per minute and 3
per peer; v2 60 per minute, 12 per peer, 12 needing dial data, 2 in flight per peer.

Memory is bounded by the limits themselves: the limiter remembers at most
``per_minute`` accepted requests, so at most that many peers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = ["RateLimiter", "RateLimits"]

K = TypeVar("K")

#: why a request was refused, as a metric label (go's refusal_reason spirit)
GLOBAL_RATE: Final = "global rate limit"
PEER_RATE: Final = "peer rate limit"
PEER_CONCURRENCY: Final = "peer concurrency limit"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """How much a server accepts within one ``window`` (seconds)."""

    per_window: int = 30
    per_peer_per_window: int = 3
    max_in_flight_per_peer: int = 2
    dial_data_per_window: int = 12
    window: float = 60.0


class RateLimiter(Generic[K]):
    """Sliding-window request limits, keyed by peer (any hashable key)."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._requests: deque[tuple[float, K]] = deque()
        self._per_peer: dict[K, int] = {}
        self._in_flight: dict[K, int] = {}
        self._dial_data: deque[float] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - self.limits.window
        while self._requests and self._requests[0][0] <= horizon:
            _, peer = self._requests.popleft()
            left = self._per_peer[peer] - 1
            if left:
                self._per_peer[peer] = left
            else:
                del self._per_peer[peer]
        while self._dial_data and self._dial_data[0] <= horizon:
            self._dial_data.popleft()

    def acquire(self, peer: K, now: float) -> str | None:
        """Admit a request from ``peer``: None if accepted (call :meth:`release` when it is
        done), else why it was refused."""
        self._expire(now)
        limits = self.limits
        if self._in_flight.get(peer, 0) >= limits.max_in_flight_per_peer:
            return PEER_CONCURRENCY
        if len(self._requests) >= limits.per_window:
            return GLOBAL_RATE
        if self._per_peer.get(peer, 0) >= limits.per_peer_per_window:
            return PEER_RATE
        self._requests.append((now, peer))
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        self._in_flight[peer] = self._in_flight.get(peer, 0) + 1
        return None

    def release(self, peer: K) -> None:
        """A request of ``peer`` admitted by :meth:`acquire` is done."""
        left = self._in_flight.get(peer, 0) - 1
        if left > 0:
            self._in_flight[peer] = left
        else:
            self._in_flight.pop(peer, None)

    def acquire_dial_data(self, now: float) -> bool:
        """Admit one request that needs dial data (v2); False when over the limit."""
        self._expire(now)
        if len(self._dial_data) >= self.limits.dial_data_per_window:
            return False
        self._dial_data.append(now)
        return True

    def in_flight(self, peer: K) -> int:
        """Requests of ``peer`` being served now."""
        return self._in_flight.get(peer, 0)

    @property
    def tracked_peers(self) -> int:
        """Peers with requests in the window (bounded by ``per_window``)."""
        return len(self._per_peer)
