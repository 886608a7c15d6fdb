"""Events the AutoNAT service publishes on the node's event bus.

Named subject + past-tense verb, like the node's own events; subscribe with
``node.events.subscribe(ReachabilityChanged)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...node.events import Event

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from .reachability import Observation, Reachability

__all__ = ["AddressReachabilityChanged", "ReachabilityChanged", "ReachabilityProbed"]


@dataclass(frozen=True)
class ReachabilityChanged(Event):
    """The node's reachability changed (unknown / public / private)."""

    reachability: Reachability
    previous: Reachability
    confidence: int


@dataclass(frozen=True)
class AddressReachabilityChanged(Event):
    """AutoNAT v2 settled (or lost) the reachability of one of our addresses."""

    addr: Multiaddr
    reachability: Reachability
    previous: Reachability
    confidence: int


@dataclass(frozen=True)
class ReachabilityProbed(Event):
    """A probe finished: ``server`` answered ``status`` about ``addr`` (v2) or our
    addresses (v1). ``observation`` is None when the answer tells nothing (a refusal)."""

    server: PeerId
    version: int
    status: str
    observation: Observation | None
    addr: Multiaddr | None = None
