"""Packets between NAT routers: a packet one router sent out, matched with where it arrived.

Routers trace what they do with notable packets (a SYN, a QUIC Initial, the first packet of
a flow each way): translated on its way out at one router, then translated, answered or
filtered on its way in at another. :class:`WireMatcher` pairs the two sightings of one packet
on the wire -- the same protocol, source and destination endpoints (as translated: public
ones) and description -- so the sequence diagram can draw it as an arrow from NAT to NAT:
SYNs crossing in the internet, QUIC punch packets dying at a NAT. Pure: no I/O, no time
source; bounded (the oldest waiting sightings are forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_WAITING", "Sighting", "WireKey", "WireMatcher"]

#: (protocol, source endpoint, destination endpoint, packet description)
WireKey = tuple[str, str, str, str]
#: sightings waiting for their other half, at most
MAX_WAITING: Final = 4096


@dataclass(frozen=True, slots=True)
class Sighting:
    """A router saw a packet at time ``t`` (ns): sent it out, or took it in (``status``)."""

    router: str
    t: int
    status: str = "translated"


class WireMatcher:
    """Pairs outbound and inbound sightings of the same packet (module docstring)."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self.max_waiting = max_waiting
        self._out: OrderedDict[WireKey, list[Sighting]] = OrderedDict()
        self._in: OrderedDict[WireKey, list[Sighting]] = OrderedDict()
        self._waiting = 0

    def sent(self, key: WireKey, seen: Sighting) -> tuple[Sighting, Sighting] | None:
        """A router sent ``key`` out: return (sent, arrived) if its arrival is known."""
        return self._match(self._in, self._out, key, seen, sending=True)

    def arrived(self, key: WireKey, seen: Sighting) -> tuple[Sighting, Sighting] | None:
        """A router took ``key`` in: return (sent, arrived) if its sending is known."""
        return self._match(self._out, self._in, key, seen, sending=False)

    def _match(self, other: OrderedDict[WireKey, list[Sighting]],
               mine: OrderedDict[WireKey, list[Sighting]], key: WireKey, seen: Sighting, *,
               sending: bool) -> tuple[Sighting, Sighting] | None:
        waiting = other.get(key)
        if waiting:
            fits = [s for s in waiting if s.router != seen.router
                    and (s.t >= seen.t if sending else s.t <= seen.t)]
            if fits:
                best = min(fits, key=lambda s: s.t)
                waiting.remove(best)
                self._waiting -= 1
                if not waiting:
                    del other[key]
                return (seen, best) if sending else (best, seen)
        if self._waiting >= self.max_waiting:
            self._forget_oldest()
        mine.setdefault(key, []).append(seen)
        self._waiting += 1
        return None

    def _forget_oldest(self) -> None:
        table = self._out if len(self._out) >= len(self._in) else self._in
        if table:
            _, dropped = table.popitem(last=False)
            self._waiting -= len(dropped)

    def __len__(self) -> int:
        return self._waiting
