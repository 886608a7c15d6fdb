"""Our addresses as other peers see them (identify's ``observedAddr``), trusted by quorum.

One peer's word is cheap: a peer can claim anything, and a NAT may show different
observers different mappings. An observed address is *confirmed* once
``threshold`` distinct observers reported it recently; an observer is counted by its IP
group (the /24 of an IPv4 address, the /56 of an IPv6 one, as go-libp2p does) or, for labs
and tests where everyone shares an IP, by its peer id. Confirmations fade after ``ttl``
seconds without a fresh report. A plain object; time is passed in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..identity import PeerId
    from ..multiaddr import Multiaddr

__all__ = ["ObservedAddrManager", "ObservedAddress"]


@dataclass
class ObservedAddress:
    """One address of ours as observed, with who reported it and when."""

    addr: Multiaddr
    observers: dict[str, float] = field(default_factory=dict)  # observer key -> last report
    confirmed: bool = False


class ObservedAddrManager:
    """Counts distinct observers per observed address."""

    def __init__(
        self,
        *,
        threshold: int = 4,
        group_by: str = "ip-group",
        ttl: float = 30 * 60.0,
        max_addresses: int = 64,
        max_observers: int = 64,
    ) -> None:
        if group_by not in ("ip-group", "peer"):
            raise ValueError(f"group_by must be 'ip-group' or 'peer', not {group_by!r}")
        self.threshold = max(1, threshold)
        self.group_by = group_by
        self.ttl = ttl
        self.max_addresses = max_addresses
        self.max_observers = max_observers
        self._addrs: dict[Multiaddr, ObservedAddress] = {}

    def _observer_key(self, observer: PeerId, observer_addr: Multiaddr | None) -> str:
        if self.group_by == "peer" or observer_addr is None:
            return f"peer:{observer}"
        ip = observer_addr.ip_address
        if ip is None:
            return f"peer:{observer}"
        prefix = 24 if ip.version == 4 else 56
        net = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
        return f"net:{net}"

    def record(
        self, observed: Multiaddr, observer: PeerId, observer_addr: Multiaddr | None, now: float
    ) -> Multiaddr | None:
        """Note that ``observer`` saw us at ``observed``; return it if it just became confirmed."""
        observed = observed.without_peer_id()
        self._expire(now)
        entry = self._addrs.get(observed)
        if entry is None:
            if len(self._addrs) >= self.max_addresses:
                stalest = min(
                    self._addrs.values(), key=lambda e: max(e.observers.values(), default=0.0)
                )
                del self._addrs[stalest.addr]
            entry = ObservedAddress(observed)
            self._addrs[observed] = entry
        key = self._observer_key(observer, observer_addr)
        if key not in entry.observers and len(entry.observers) >= self.max_observers:
            return None
        entry.observers[key] = now
        if not entry.confirmed and len(entry.observers) >= self.threshold:
            entry.confirmed = True
            return observed
        return None

    def _expire(self, now: float) -> None:
        for addr, entry in list(self._addrs.items()):
            entry.observers = {k: t for k, t in entry.observers.items() if now - t < self.ttl}
            if not entry.observers:
                del self._addrs[addr]
            elif len(entry.observers) < self.threshold:
                entry.confirmed = False

    def confirmed(self, now: float) -> list[Multiaddr]:
        """Addresses that enough distinct observers reported recently."""
        self._expire(now)
        return [e.addr for e in self._addrs.values() if e.confirmed]

    def all(self, now: float) -> list[ObservedAddress]:
        """Every observation still remembered (confirmed or not), for views and debugging."""
        self._expire(now)
        return list(self._addrs.values())
