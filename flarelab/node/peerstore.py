"""What the node knows about other peers: addresses (with TTLs), keys, protocols, agent.

A plain object with time passed in (``now`` in trio seconds), so it runs the same on the
real clock and on MockClock. Every collection a peer can grow is capped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import LocalProtocolError

if TYPE_CHECKING:
    from ..identity import PeerId, PeerRecord, PublicKey
    from ..multiaddr import Multiaddr

__all__ = ["AddrTTL", "PeerInfo", "Peerstore"]


class AddrTTL:
    """Address lifetimes in seconds, as go-libp2p's peerstore names them."""

    PERMANENT = math.inf
    #: while a connection is open (downgraded to RECENTLY_CONNECTED on disconnect); finite
    #: only so that it differs from PERMANENT
    CONNECTED = 1e9
    RECENTLY_CONNECTED = 15 * 60.0
    TEMP = 2 * 60.0
    OWN_OBSERVED = 30 * 60.0


@dataclass(slots=True)
class _AddrEntry:
    expiry: float
    ttl: float


@dataclass(eq=False)
class PeerInfo:
    """Everything known about one peer."""

    peer_id: PeerId
    addrs: dict[Multiaddr, _AddrEntry] = field(default_factory=dict)
    public_key: PublicKey | None = None
    protocols: frozenset[str] = frozenset()
    agent_version: str | None = None
    protocol_version: str | None = None
    peer_record: PeerRecord | None = None
    last_seen: float = 0.0


class Peerstore:
    """The node's memory of other peers."""

    def __init__(
        self,
        *,
        max_peers: int = 10_000,
        max_addrs_per_peer: int = 64,
        max_protocols_per_peer: int = 256,
    ) -> None:
        self.max_peers = max_peers
        self.max_addrs_per_peer = max_addrs_per_peer
        self.max_protocols_per_peer = max_protocols_per_peer
        self._peers: dict[PeerId, PeerInfo] = {}
        #: peers that must not be evicted (the node keeps its connected peers here)
        self.protected: set[PeerId] = set()

    # ------------------------------------------------------------------ peers
    def get(self, peer: PeerId) -> PeerInfo | None:
        """The record for ``peer``, or None."""
        return self._peers.get(peer)

    def info(self, peer: PeerId, now: float) -> PeerInfo:
        """The record for ``peer``, created if new (evicting an old one at the cap)."""
        info = self._peers.get(peer)
        if info is None:
            if len(self._peers) >= self.max_peers:
                self._evict_one(now)
            info = PeerInfo(peer)
            self._peers[peer] = info
        info.last_seen = max(info.last_seen, now)
        return info

    def peers(self) -> list[PeerId]:
        """Every peer we know anything about."""
        return list(self._peers)

    def remove(self, peer: PeerId) -> None:
        """Forget ``peer`` entirely."""
        self._peers.pop(peer, None)

    def _evict_one(self, now: float) -> None:
        candidates = [i for i in self._peers.values() if i.peer_id not in self.protected]
        if not candidates:
            raise LocalProtocolError(f"peerstore full ({self.max_peers} protected peers)")
        victim = min(candidates, key=lambda i: i.last_seen)
        del self._peers[victim.peer_id]

    # ------------------------------------------------------------------ addresses
    def add_addrs(self, peer: PeerId, addrs: Iterable[Multiaddr], ttl: float, now: float) -> None:
        """Remember ``addrs`` for ``peer`` for ``ttl`` seconds (never shortening a longer TTL).

        Addresses are stored without their ``/p2p/`` suffix; an address naming another peer
        is ignored. Beyond the per-peer cap, the addresses that expire soonest make room.
        """
        info = self.info(peer, now)
        expiry = now + ttl
        for addr in addrs:
            if addr.peer_id is not None:
                if addr.peer_id != peer:
                    continue
                addr = addr.without_peer_id()
            entry = info.addrs.get(addr)
            if entry is None or entry.expiry < expiry:
                info.addrs[addr] = _AddrEntry(expiry, ttl)
        if len(info.addrs) > self.max_addrs_per_peer:
            keep = sorted(info.addrs.items(), key=lambda kv: kv[1].expiry, reverse=True)
            info.addrs = dict(keep[: self.max_addrs_per_peer])

    def replace_addrs(
        self, peer: PeerId, addrs: Iterable[Multiaddr], ttl: float, now: float
    ) -> None:
        """Replace the addresses of ``peer`` that were added with ``ttl`` by ``addrs``."""
        info = self.info(peer, now)
        info.addrs = {a: e for a, e in info.addrs.items() if e.ttl != ttl}
        self.add_addrs(peer, addrs, ttl, now)

    def update_addr_ttls(self, peer: PeerId, old_ttl: float, new_ttl: float, now: float) -> None:
        """Move addresses added with ``old_ttl`` (e.g. CONNECTED) to ``new_ttl`` from now."""
        info = self._peers.get(peer)
        if info is None:
            return
        for addr, entry in list(info.addrs.items()):
            if entry.ttl == old_ttl:
                info.addrs[addr] = _AddrEntry(now + new_ttl, new_ttl)

    def addrs(self, peer: PeerId, now: float) -> list[Multiaddr]:
        """Unexpired addresses of ``peer``, longest-lived first (expired ones are dropped)."""
        info = self._peers.get(peer)
        if info is None:
            return []
        live = {a: e for a, e in info.addrs.items() if e.expiry > now}
        if len(live) != len(info.addrs):
            info.addrs = live
        return [a for a, _ in sorted(live.items(), key=lambda kv: -kv[1].expiry)]

    def clear_addrs(self, peer: PeerId) -> None:
        """Forget every address of ``peer``."""
        info = self._peers.get(peer)
        if info is not None:
            info.addrs.clear()

    # ------------------------------------------------------------------ keys, protocols, agent
    def add_public_key(self, peer: PeerId, key: PublicKey, now: float) -> None:
        """Remember ``peer``'s key; it must hash to ``peer``."""
        if not peer.matches(key):
            raise LocalProtocolError(f"public key does not belong to {peer}")
        self.info(peer, now).public_key = key

    def public_key(self, peer: PeerId) -> PublicKey | None:
        """``peer``'s public key, if known (embedded in the id or learned)."""
        info = self._peers.get(peer)
        if info is not None and info.public_key is not None:
            return info.public_key
        return peer.extract_public_key()

    def set_protocols(
        self, peer: PeerId, protocols: Iterable[str], now: float
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Replace ``peer``'s protocol list; return (added, removed)."""
        info = self.info(peer, now)
        new = frozenset(list(dict.fromkeys(protocols))[: self.max_protocols_per_peer])
        added = tuple(sorted(new - info.protocols))
        removed = tuple(sorted(info.protocols - new))
        info.protocols = new
        return added, removed

    def protocols(self, peer: PeerId) -> frozenset[str]:
        """Protocols ``peer`` said it speaks (empty if unknown)."""
        info = self._peers.get(peer)
        return info.protocols if info is not None else frozenset()

    def supports(self, peer: PeerId, protocols: Iterable[str]) -> list[str]:
        """Those of ``protocols`` that ``peer`` is known to speak, in the given order."""
        known = self.protocols(peer)
        return [p for p in protocols if p in known]

    def set_agent(
        self, peer: PeerId, agent: str | None, protocol_version: str | None, now: float
    ) -> None:
        """Remember the agent and protocol version ``peer`` announced."""
        info = self.info(peer, now)
        info.agent_version = agent
        info.protocol_version = protocol_version

    def consume_peer_record(self, record: PeerRecord, now: float) -> bool:
        """Keep ``record`` if it is newer than the one we have; return whether it was kept."""
        info = self.info(record.peer_id, now)
        if info.peer_record is not None and info.peer_record.seq >= record.seq:
            return False
        info.peer_record = record
        return True
