"""FlareTrial and FlareSummary: what one run of the Flare flow produced, and many runs' figures.

The same types come back from the flow on simnet (:mod:`flarelab.flare.simnet_run`) and in
the real kernel-NAT lab (:mod:`flarelab.lab.flare_run`), so the CLI, the benchmark, the tests
and the notebooks read one shape. Everything is plain data (JSON-able through
:meth:`FlareTrial.to_dict`), since lab trials come back from other processes.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FlareSummary", "FlareTrial", "percentile", "summarize"]


@dataclass(frozen=True)
class FlareTrial:
    """One run of the whole flow: A dials B through a relay and the two try to go direct.

    ``outcome`` is B's ``libp2p.outcome`` (``success``, ``connection_reversed``,
    ``direct_dial``, ``no_suitable_address``, ``timeout``, ``protocol_error``, ``failed``,
    or ``not_started`` when the flow never reached DCUtR: then ``reason`` says which phase
    failed). ``elapsed`` is seconds from the relayed connection to the direct one (None
    unless ``direct``). ``phases`` holds seconds per phase (``autonat``, ``reserve``,
    ``relayed_dial``, ``upgrade``) as far as the run got.
    """

    transport: str
    nat_a: str | None
    nat_b: str | None
    outcome: str
    direct: bool
    reason: str = ""
    elapsed: float | None = None
    attempts: int = 0
    address: str | None = None
    ipv6: bool = False
    reachability_a: str = "unknown"
    reachability_b: str = "unknown"
    phases: Mapping[str, float] = field(default_factory=dict)
    trial: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the trial as JSON-able data."""
        data = asdict(self)
        data["phases"] = dict(self.phases)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlareTrial:
        """Rebuild a trial from :meth:`to_dict`'s output."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        """Return one readable line about this trial."""
        pair = f"{self.nat_a or 'public'}->{self.nat_b or 'public'}"
        family = "ip6" if self.ipv6 else "ip4"
        took = f" in {self.elapsed * 1000:.0f} ms" if self.elapsed is not None else ""
        why = f" ({self.reason})" if self.reason and not self.direct else ""
        return (f"#{self.trial} {pair} {self.transport}/{family}: {self.outcome}{took}, "
                f"{self.attempts} attempt(s){why}")


def percentile(values: Iterable[float], q: float) -> float | None:
    """Return the q-th percentile (0..100) by linear interpolation, None for no values."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


@dataclass(frozen=True)
class FlareSummary:
    """Many trials' figures: success rate, relayed-to-direct times, attempts, outcomes."""

    total: int
    direct: int
    median: float | None
    p90: float | None
    attempts: Mapping[int, int]
    outcomes: Mapping[str, int]

    @property
    def rate(self) -> float:
        """Direct connections per trial (0.0 for no trials)."""
        return self.direct / self.total if self.total else 0.0

    def line(self, label: str = "") -> str:
        """Return the one-line summary: direct/total, rate, median and p90 times."""
        median = f"{self.median * 1000:.0f} ms" if self.median is not None else "-"
        p90 = f"{self.p90 * 1000:.0f} ms" if self.p90 is not None else "-"
        head = f"{label}: " if label else ""
        return (f"{head}direct {self.direct}/{self.total} ({self.rate:.0%}), "
                f"relayed->direct median {median}, p90 {p90}")


def summarize(trials: Iterable[FlareTrial]) -> FlareSummary:
    """Return the figures of these trials."""
    items = list(trials)
    times = [t.elapsed for t in items if t.direct and t.elapsed is not None]
    return FlareSummary(
        total=len(items),
        direct=sum(t.direct for t in items),
        median=statistics.median(times) if times else None,
        p90=percentile(times, 90),
        attempts=dict(sorted(Counter(t.attempts for t in items).items())),
        outcomes=dict(Counter(t.outcome for t in items).most_common()),
    )
