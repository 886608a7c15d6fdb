"""The lanes of a sequence diagram: one per node, per NAT router and per untraced peer, in order.

The order tells the hole-punch story when it can: the first host behind a NAT on the left with
its router just inside it, public hosts (the relay, AutoNAT servers) in the middle, the next
host behind a NAT on the right with its router inside it, so ``A | NAT A | relay | NAT B | B``.
A message from A to the relay then crosses NAT A's lane, where the router's ``nat.*`` events
are drawn. Peers that appear only as the other side of a message (a go-libp2p node that sent
no spans) get a ``remote`` lane at the far right. A ``preferred`` order (from a topology the
caller knows) wins for the lanes it names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ["LaneInfo", "LaneKind", "order_lanes"]

LaneKind: TypeAlias = Literal["host", "nat", "remote"]


@dataclass(frozen=True, slots=True)
class LaneInfo:
    """What the layout needs to know about one lane."""

    name: str
    kind: LaneKind
    #: the order in which the lane was first seen (ties and unknowns keep it)
    seen: int
    #: for a host: the router it sits behind, if known
    behind: str | None = None


def order_lanes(lanes: Sequence[LaneInfo], preferred: Sequence[str] = ()) -> list[str]:
    """Return lane names left to right (see the module docstring)."""
    by_name = {lane.name: lane for lane in lanes}
    ordered = [name for name in dict.fromkeys(preferred) if name in by_name]
    placed = set(ordered)
    rest = sorted((lane for lane in lanes if lane.name not in placed), key=lambda x: x.seen)
    if not rest:
        return ordered
    natted = [h for h in rest if h.kind == "host" and h.behind in by_name]
    routers_used = {h.behind for h in natted}
    # a router whose hosts are placed already stays out of the groups below
    groups: list[list[str]] = []  # [host, router] pairs, in order of the hosts
    for host in natted:
        assert host.behind is not None
        pair = [host.name]
        if host.behind not in placed and not any(host.behind in g for g in groups):
            pair.append(host.behind)
        groups.append(pair)
    grouped = {name for g in groups for name in g}
    public = [x.name for x in rest if x.kind == "host" and x.name not in grouped]
    lone_routers = [x.name for x in rest
                    if x.kind == "nat" and x.name not in grouped and x.name not in routers_used]
    remote = [x.name for x in rest if x.kind == "remote"]
    left: list[str] = []
    right: list[str] = []
    for i, group in enumerate(groups):
        if i % 2 == 0:
            left = group + left if i else group  # later left groups go further out
        else:
            right = right + group[::-1]  # router inside, host outside
    middle = public + lone_routers
    return ordered + left + middle + right + remote


def behind_from_addresses(
    router_internal_ips: Mapping[str, set[str]], host_ips: Mapping[str, set[str]]
) -> dict[str, str]:
    """Return host -> router for hosts whose address a router saw on its LAN side."""
    out: dict[str, str] = {}
    for router, ips in router_internal_ips.items():
        for host, own in host_ips.items():
            if host not in out and own & ips:
                out[host] = router
    return out
