"""PingClock: when a Yamux session pings, what counts as an answer, when silence is fatal.

Pure state, time passed in. Two reasons to ping, one ping in flight at a time:

* RTT (which window auto-tuning needs): at start, then every ``rtt_interval`` after an
  answer (go-yamux measures at start and every 30 s; rust every 10 s).
* Keepalive: after ``keepalive_interval`` with nothing received (any frame counts, as in
  go-yamux, so a busy connection is not pinged). A ping unanswered while nothing else
  arrives for ``ping_timeout`` means the connection is dead; without keepalive the sample
  is just dropped.

The RTT estimate is smoothed as go-yamux does: the mean of the last estimate and the new
sample (:attr:`PingClock.rtt`, for tracing). Window auto-tuning uses
:attr:`PingClock.min_rtt` instead, the least of the last few samples: a ping answered
late because the process or the link was busy says little about the path (on loopback
samples ranged 0.6-8 ms under load), and one such sample would otherwise steer the
windows until the next ping 30 s later.
"""

from __future__ import annotations

import math
from collections import deque

from .config import YamuxConfig
from .frames import MAX_U32

__all__ = ["PingClock"]


class PingClock:
    """The ping schedule of one session."""

    __slots__ = (
        "_config",
        "_last_recv",
        "_next_rtt_ping",
        "_ping_id",
        "_samples",
        "_sent_at",
        "rtt",
    )

    #: How many recent samples :attr:`min_rtt` looks at.
    SAMPLES = 4

    def __init__(self, config: YamuxConfig) -> None:
        self._config = config
        self.rtt: float | None = None  # smoothed, seconds
        self._samples: deque[float] = deque(maxlen=self.SAMPLES)
        self._last_recv = 0.0
        self._ping_id = 0
        self._sent_at: float | None = None  # the ping in flight
        self._next_rtt_ping = math.inf

    def start(self, now: float) -> None:
        """Start counting: silence from ``now``; the first RTT ping is due at once."""
        self._last_recv = now
        if self._config.rtt_interval is not None:
            self._next_rtt_ping = now

    def received(self, now: float) -> None:
        """Note that the peer sent something (any frame proves it alive)."""
        self._last_recv = now

    def next_deadline(self) -> float | None:
        """Return when :meth:`due` may next have something to do (None: never)."""
        cfg = self._config
        if self._sent_at is not None:
            return max(self._sent_at, self._last_recv) + cfg.ping_timeout
        deadline = self._next_rtt_ping
        if cfg.keepalive_interval is not None:
            deadline = min(deadline, self._last_recv + cfg.keepalive_interval)
        return None if deadline == math.inf else deadline

    def due(self, now: float) -> int | float | None:
        """Return a ping id to send, a float (seconds of silence: the peer is dead), or None."""
        cfg = self._config
        if self._sent_at is not None:
            if now < max(self._sent_at, self._last_recv) + cfg.ping_timeout:
                return None
            self._sent_at = None
            if cfg.keepalive_interval is not None:
                return float(now - self._last_recv)
            if cfg.rtt_interval is not None:
                self._next_rtt_ping = now + cfg.rtt_interval
            return None
        if now >= self._next_rtt_ping or (
            cfg.keepalive_interval is not None and now >= self._last_recv + cfg.keepalive_interval
        ):
            self._ping_id = (self._ping_id + 1) & MAX_U32
            self._sent_at = now
            return self._ping_id
        return None

    def answered(self, opaque: int, now: float) -> float | None:
        """Take a pong; return the RTT sample if it answers our ping (else None: ignored)."""
        if self._sent_at is None or opaque != self._ping_id:
            return None
        sample = max(0.0, now - self._sent_at)
        self.rtt = sample if self.rtt is None else (self.rtt + sample) / 2
        self._samples.append(sample)
        self._sent_at = None
        if self._config.rtt_interval is not None:
            self._next_rtt_ping = now + self._config.rtt_interval
        return sample

    @property
    def min_rtt(self) -> float | None:
        """Return the least of the last few RTT samples, in seconds (None before one)."""
        return min(self._samples) if self._samples else None
