"""A network's topology for drawing: hosts, NAT routers, the internet, and live connections.

:class:`TopologyModel` is pure: describe the devices (:meth:`~TopologyModel.add_host`,
:meth:`~TopologyModel.add_router`, or all at once with :func:`from_network` for a simnet
:class:`~flarelab.simnet.Network`), then tell it the connections between hosts as they are
(:meth:`~TopologyModel.set_connections`) and the dials that failed
(:meth:`~TopologyModel.add_failure`). :meth:`~TopologyModel.node_columns` and
:meth:`~TopologyModel.edge_columns` lay it out: the internet in the middle, public hosts
above it, NAT routers alternately left and right with their hosts further out, so the
picture reads like the sequence diagram (``A | NAT A | relay | NAT B | B``).

Connections are coloured by kind: ``direct`` (green), ``relayed`` (orange, dashed, through
the relay when it is known: a limited connection), ``failed`` (red, dotted: the last dial
between the two failed and no connection replaced it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from ...errors import LocalProtocolError
from .palette import CONNECTION_COLORS

if TYPE_CHECKING:
    from ...simnet import Network

__all__ = ["ConnectionKind", "Device", "Link", "TopologyModel", "from_network"]

ConnectionKind: TypeAlias = Literal["direct", "relayed", "failed"]
INTERNET: Final = "internet"
_DEVICE_STYLE: Final = {  # kind -> (marker, colour, size)
    "internet": ("hex", "#dddddd", 40),
    "router": ("square", "#555555", 26),
    "host": ("circle", "#1f4e79", 24),
}
_DASH: Final = {"link": "solid", "direct": "solid", "relayed": "dashed", "failed": "dotted"}


@dataclass(slots=True)
class Device:
    """A host or router: where it sits and what the tooltip says."""

    name: str
    kind: str
    parent: str
    detail: str = ""
    running: bool = False
    peer_id: str = ""
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True, slots=True)
class Link:
    """A connection between two hosts (``via``: the relay of a relayed one)."""

    a: str
    b: str
    kind: ConnectionKind
    via: str | None = None
    detail: str = ""


@dataclass
class TopologyModel:
    """Devices and connections; see the module docstring."""

    devices: dict[str, Device] = field(default_factory=dict)
    connections: list[Link] = field(default_factory=list)
    failures: dict[tuple[str, str], Link] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.devices.setdefault(INTERNET, Device(INTERNET, "internet", "", "the internet"))

    # ------------------------------------------------------------------ describing
    def add_host(self, name: str, *, parent: str = INTERNET, detail: str = "") -> Device:
        """Add a host on the internet or behind the router ``parent``."""
        return self._add(Device(name, "host", parent, detail))

    def add_router(self, name: str, *, parent: str = INTERNET, detail: str = "") -> Device:
        """Add a NAT router (on the internet, or behind another router)."""
        return self._add(Device(name, "router", parent, detail))

    def _add(self, device: Device) -> Device:
        if device.name in self.devices:
            raise LocalProtocolError(f"a device named {device.name!r} exists already")
        if device.parent not in self.devices:
            raise LocalProtocolError(f"no router named {device.parent!r}")
        self.devices[device.name] = device
        return device

    def set_running(self, name: str, running: bool, *, peer_id: str = "") -> None:
        """Mark a host's node as running (or not)."""
        device = self.devices[name]
        device.running = running
        if peer_id:
            device.peer_id = peer_id

    def set_connections(self, links: Iterable[Link]) -> None:
        """Replace the live connections (one entry per pair and kind is enough)."""
        unique: dict[tuple[str, str, str], Link] = {}
        for link in links:
            if link.a not in self.devices or link.b not in self.devices:
                continue
            a, b = sorted((link.a, link.b))
            unique.setdefault((a, b, link.kind), link)
        self.connections = list(unique.values())
        for link in self.connections:
            self.failures.pop(_pair(link.a, link.b), None)

    def add_failure(self, a: str, b: str, detail: str = "") -> None:
        """Record that a dial between two hosts failed."""
        if a in self.devices and b in self.devices:
            self.failures[_pair(a, b)] = Link(a, b, "failed", detail=detail)

    # ------------------------------------------------------------------ layout
    def layout(self) -> None:
        """Place every device (see the module docstring)."""
        top = [d for d in self.devices.values() if d.parent == INTERNET]
        public = [d for d in top if d.kind == "host"]
        routers = [d for d in top if d.kind == "router"]
        for i, host in enumerate(public):
            host.x, host.y = (i - (len(public) - 1) / 2) * 1.2, 1.4
        for i, router in enumerate(routers):
            side = -1 if i % 2 == 0 else 1
            rank = i // 2
            router.x, router.y = side * (1.6 + 0.5 * rank), -0.2 - 1.1 * rank
            self._place_lan(router, side)

    def _place_lan(self, router: Device, side: int) -> None:
        lan = [d for d in self.devices.values() if d.parent == router.name]
        for j, device in enumerate(lan):
            device.x = router.x + side * 1.4
            device.y = router.y + (j - (len(lan) - 1) / 2) * 0.9
            if device.kind == "router":
                self._place_lan(device, side)

    def node_columns(self) -> dict[str, list[Any]]:
        """Return the devices as columns (x, y, marker, colour, tooltip)."""
        self.layout()
        out: dict[str, list[Any]] = {k: [] for k in (
            "x", "y", "name", "kind", "marker", "color", "size", "detail", "alpha", "peer")}
        for d in self.devices.values():
            marker, color, size = _DEVICE_STYLE[d.kind]
            alpha = 1.0 if d.kind != "host" or d.running else 0.35
            for key, value in (("x", d.x), ("y", d.y), ("name", d.name), ("kind", d.kind),
                               ("marker", marker), ("color", color), ("size", size),
                               ("detail", d.detail), ("alpha", alpha), ("peer", d.peer_id)):
                out[key].append(value)
        return out

    def edge_columns(self) -> dict[str, list[Any]]:
        """Return wires and connections as multi-line columns (xs, ys, colour, dash)."""
        self.layout()
        out: dict[str, list[Any]] = {k: [] for k in (
            "xs", "ys", "kind", "color", "dash", "width", "label", "detail")}

        def add(points: list[Device], kind: str, label: str, detail: str, width: float) -> None:
            out["xs"].append([p.x for p in points])
            out["ys"].append([p.y for p in points])
            out["kind"].append(kind)
            out["color"].append(CONNECTION_COLORS[kind])
            out["dash"].append(_DASH[kind])
            out["width"].append(width)
            out["label"].append(label)
            out["detail"].append(detail)

        for d in self.devices.values():
            if d.parent:
                add([self.devices[d.parent], d], "link", f"{d.parent} \u2014 {d.name}", "", 2.0)
        for link in [*self.connections, *self.failures.values()]:
            a, b = self.devices[link.a], self.devices[link.b]
            via = self.devices.get(link.via) if link.via else None
            points = [a, via, b] if via is not None else [a, b]
            add(points, link.kind, f"{link.a} \u2194 {link.b}: {link.kind}", link.detail, 3.5)
        return out


def _pair(a: str, b: str) -> tuple[str, str]:
    first, second = sorted((a, b))
    return first, second


def from_network(network: Network) -> TopologyModel:
    """Describe a simnet network's hosts and routers (connections come later)."""
    model = TopologyModel()

    def walk(subnet: Any, parent: str) -> None:
        for attachment in subnet.attachments():
            device = attachment.device
            if device is subnet.gateway:
                continue
            addresses = " ".join(attachment.addresses)
            if hasattr(device, "lan"):  # a NAT router
                model.add_router(device.name, parent=parent,
                                 detail=f"{addresses}: {device.behavior.name} "
                                        f"({device.behavior.describe()})")
                walk(device.lan, device.name)
            else:
                model.add_host(device.name, parent=parent, detail=addresses)

    walk(network.internet, INTERNET)
    return model
