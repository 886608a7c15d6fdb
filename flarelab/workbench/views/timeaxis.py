"""The time axis of a sequence diagram: trace time to diagram milliseconds, idle gaps squeezed.

A live notebook makes traces with long idle stretches (the learner reads between cells) around
short bursts of protocol (a handshake takes a few round trips). Drawn to scale, the bursts
would be slivers. :class:`TimeAxis` maps trace time (nanoseconds since the epoch) to diagram
milliseconds since the first time it saw, at scale (1 ms = 1 unit), except that a gap of more
than ``max_gap_ms`` with nothing in it is drawn ``squeezed_ms`` long and remembered as a
:class:`Gap` (the views draw it as a break, labelled with its real length).

The mapping only ever grows at its end: the position of a time already mapped never changes,
so a live view can draw items once and keep them. A time that arrives late (before the latest
one) falls between known points and is placed by linear interpolation (inside a squeezed gap
it is squeezed too). A time before the first one is placed before zero, at scale.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Final

from ...errors import LocalProtocolError

__all__ = ["Gap", "TimeAxis"]

_NS_PER_MS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Gap:
    """A squeezed idle stretch: drawn from ``y0`` to ``y1``, really ``real_ms`` long."""

    y0: float
    y1: float
    real_ms: float

    @property
    def label(self) -> str:
        """Return the real length in words: ``+1.2 s``, ``+3 min``."""
        seconds = self.real_ms / 1000
        if seconds < 120:
            return f"+{seconds:.1f} s"
        return f"+{seconds / 60:.0f} min"


class TimeAxis:
    """Map trace times (ns since the epoch) to diagram ms; long idle gaps are squeezed."""

    def __init__(self, *, max_gap_ms: float = 1000.0, squeezed_ms: float = 100.0) -> None:
        if max_gap_ms <= 0 or not 0 < squeezed_ms <= max_gap_ms:
            raise LocalProtocolError(
                f"need 0 < squeezed_ms <= max_gap_ms, not {squeezed_ms} and {max_gap_ms}")
        self.max_gap_ns = round(max_gap_ms * _NS_PER_MS)
        self.squeezed_ms = squeezed_ms
        # knots of the piecewise-linear map: real times (ns) and their diagram positions (ms)
        self._real: list[int] = []
        self._y: list[float] = []
        #: the squeezed gaps, in time order
        self.gaps: list[Gap] = []

    @property
    def origin_ns(self) -> int | None:
        """Return the first time seen (diagram 0), or None before any."""
        return self._real[0] if self._real else None

    @property
    def end(self) -> float:
        """Return the diagram position of the latest time seen (0 before any)."""
        return self._y[-1] if self._y else 0.0

    def extend(self, t_ns: int) -> float:
        """Add a time to the axis (growing it if it is the latest) and return its position."""
        real, ys = self._real, self._y
        if not real:
            real.append(t_ns)
            ys.append(0.0)
            return 0.0
        last = real[-1]
        if t_ns <= last:
            return self.position(t_ns)
        gap = t_ns - last
        if gap > self.max_gap_ns:
            y0 = ys[-1]
            y1 = y0 + self.squeezed_ms
            self.gaps.append(Gap(y0, y1, gap / _NS_PER_MS))
            real.append(t_ns)
            ys.append(y1)
            return y1
        # at scale: move the last knot if it only continues a stretch at scale
        y = ys[-1] + gap / _NS_PER_MS
        if len(real) >= 2 and self._at_scale(len(real) - 2):
            real[-1], ys[-1] = t_ns, y
        else:
            real.append(t_ns)
            ys.append(y)
        return y

    def position(self, t_ns: int) -> float:
        """Return the diagram position of a time without growing the axis."""
        real, ys = self._real, self._y
        if not real:
            return 0.0
        if t_ns <= real[0]:
            return (t_ns - real[0]) / _NS_PER_MS
        if t_ns >= real[-1]:
            return ys[-1] + (t_ns - real[-1]) / _NS_PER_MS
        i = bisect.bisect_right(real, t_ns) - 1
        r0, r1, y0, y1 = real[i], real[i + 1], ys[i], ys[i + 1]
        return y0 + (y1 - y0) * (t_ns - r0) / (r1 - r0)

    def real_ms(self, y: float) -> float:
        """Return the real time (ms since the first time) at a diagram position."""
        real, ys = self._real, self._y
        if not real:
            return y
        if y <= 0 or len(real) == 1:
            return y
        if y >= ys[-1]:
            return (real[-1] - real[0]) / _NS_PER_MS + (y - ys[-1])
        i = bisect.bisect_right(ys, y) - 1
        r0, r1, y0, y1 = real[i], real[i + 1], ys[i], ys[i + 1]
        return (r0 - real[0] + (r1 - r0) * (y - y0) / (y1 - y0)) / _NS_PER_MS

    def _at_scale(self, i: int) -> bool:
        """True if the stretch from knot ``i`` to ``i + 1`` is drawn at scale."""
        return abs((self._y[i + 1] - self._y[i]) * _NS_PER_MS
                   - (self._real[i + 1] - self._real[i])) < 1.0
