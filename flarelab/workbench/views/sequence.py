"""Span records -> a cross-peer sequence diagram: lanes, message arrows, NAT marks, phases.

:class:`SequenceBuilder` is pure (no Bokeh, no trio, no I/O): feed it span records in the
order they arrive (:meth:`~SequenceBuilder.add`, from the live span bus or a trace file) and
take what became drawable (:meth:`~SequenceBuilder.take_new`). The Bokeh view and the
standalone HTML file both draw what it produces (:mod:`flarelab.workbench.views.columns`).

* **Lanes**: one per node (``libp2p.node_label``), one per NAT router (its ``nat.*`` spans),
  one per peer that only appears as the other side of a message; ordered by
  :func:`~flarelab.workbench.views.lanes.order_lanes` (a host behind a NAT next to its
  router, which the builder learns by matching the router's LAN-side addresses with the
  nodes' own).
* **Arrows**: every ``message.sent`` event is paired with the ``message.received`` event of
  the same type and size at the peer (the span's ``libp2p.remote_peer_id``, or its
  ancestors'). Pairs are made earliest-first, and a side whose peer is not known yet (a
  responder's first negotiation) matches any peer that names it. A send with no matching
  receive is ``send_only`` and a receive with no matching send ``receive_only`` (drawn half
  way, dashed: the peer did not trace that message, or it was lost; packets that died at a
  NAT are the routers' marks); messages to or from an untraced peer are ``remote`` (drawn
  flat to its lane). Live, a message waits
  ``grace_ms`` of trace time for its other half before it is drawn alone: events reach the
  bus only when their span ends, so the two halves of a message may arrive far apart.
* **Marks**: what NAT routers did (``nat.mapping_created``, ``nat.translated``,
  ``nat.hairpinned``, ``nat.answered`` and refused packets, ``nat.drop``), and every span that
  ended in error, at its node and time. A router's session span ends only when the session
  expires, and span events reach the bus with their span's end, so a new mapping is marked
  from the session's start record at once, and the packets it translates from the progress
  records simnet's routers publish after each event
  (:meth:`~flarelab.tracing.bus.SpanBus.publish_progress`), or else when it ends.
* **Phases**: spans that are steps of the story (``noise.handshake``, ``relay.reserve``,
  ``dcutr.attempt``...), shaded on their node's lane from start to end.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from ...tracing import spans
from ...tracing.records import AttributeValue, SpanEventRecord, SpanRecord, short_peer_id
from .lanes import LaneInfo, LaneKind, behind_from_addresses, order_lanes
from .palette import family_of
from .timeaxis import TimeAxis
from .wire import Sighting, WireMatcher

__all__ = [
    "PHASE_SPANS",
    "ArrowItem",
    "ArrowStatus",
    "MarkItem",
    "PhaseItem",
    "SequenceBuilder",
    "SequenceItems",
]

ArrowStatus: TypeAlias = Literal["delivered", "send_only", "receive_only", "remote"]

#: spans shaded as phases on their node's lane
PHASE_SPANS: Final = frozenset({
    spans.TCP_DIAL, spans.QUIC_DIAL, spans.NOISE_HANDSHAKE, spans.QUIC_HANDSHAKE,
    spans.TLS_HANDSHAKE, spans.IDENTIFY_EXCHANGE, spans.PING, spans.PERF,
    spans.AUTONAT_PROBE, spans.AUTONAT_DIAL_BACK, spans.RELAY_RESERVE, spans.RELAY_CONNECT,
    spans.RELAY_CIRCUIT, spans.DCUTR_UPGRADE, spans.DCUTR_ATTEMPT, spans.HOLEPUNCH_DIAL,
    spans.QUIC_PUNCH,
})

_NAT_MARKS: Final = {
    spans.NAT_MAPPING_CREATED: "mapping",
    spans.NAT_TRANSLATED: "translated",
    spans.NAT_HAIRPINNED: "hairpinned",
    spans.NAT_ANSWERED: "answered",
    spans.NAT_FILTERED: "filtered",
}
_ROUTER_PREFIX: Final = "router:"
_UNKNOWN_PEER: Final = "unknown peer"
_MAX_PENDING: Final = 10_000  # unmatched message halves kept waiting, per builder
_NS_PER_MS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class ArrowItem:
    """One message: from ``src`` at ``t_send`` to ``dst`` at ``t_recv`` (ns; None if unknown)."""

    id: int
    src: str
    dst: str
    t_send: int | None
    t_recv: int | None
    label: str
    size: int | None
    family: str
    status: ArrowStatus
    protocol: str | None = None
    span: str = ""

    @property
    def t_first(self) -> int:
        """Return the earliest known time of the message."""
        times = [t for t in (self.t_send, self.t_recv) if t is not None]
        return min(times)


@dataclass(frozen=True, slots=True)
class MarkItem:
    """Something that happened at one lane at one time (a NAT event, an error)."""

    id: int
    lane: str
    t: int
    kind: str
    label: str
    detail: str
    direction: str | None = None


@dataclass(frozen=True, slots=True)
class PhaseItem:
    """A step of the story on one lane, from ``t0`` to ``t1`` (ns)."""

    id: int
    lane: str
    t0: int
    t1: int
    name: str
    family: str
    status: str
    detail: str


@dataclass(slots=True)
class SequenceItems:
    """Items that became drawable (or, from :meth:`SequenceBuilder.items`, all of them)."""

    arrows: list[ArrowItem] = field(default_factory=list)
    marks: list[MarkItem] = field(default_factory=list)
    phases: list[PhaseItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.arrows) + len(self.marks) + len(self.phases)

    def extend(self, other: SequenceItems) -> None:
        """Append another batch."""
        self.arrows += other.arrows
        self.marks += other.marks
        self.phases += other.phases


@dataclass(slots=True)
class _Half:
    """One side of a message: a send or a receive event, waiting for its other half."""

    node: str
    peer_id: str | None
    t: int
    label: str
    size: int | None
    family: str
    protocol: str | None
    span: str


@dataclass(slots=True)
class _SpanInfo:
    parent: tuple[str, str] | None
    remote: str | None


class SequenceBuilder:
    """Turn span records into sequence-diagram items, incrementally (see the module docstring).

    ``preferred_lanes`` fixes the order of the lanes it names (e.g. from a topology);
    ``include`` decides which messages become arrows (default: all); ``grace_ms`` is how
    long (trace time) a message half waits for its other half before it is drawn alone.
    """

    def __init__(
        self,
        *,
        preferred_lanes: Sequence[str] = (),
        include: Callable[[str, str], bool] | None = None,
        grace_ms: float = 2000.0,
        axis: TimeAxis | None = None,
        phase_spans: Iterable[str] = PHASE_SPANS,
    ) -> None:
        self.axis = axis or TimeAxis()
        self.preferred_lanes = tuple(preferred_lanes)
        self.include = include
        self.grace_ns = round(grace_ms * _NS_PER_MS)
        self.phase_spans = frozenset(phase_spans)
        self._ids = itertools.count()
        self._lanes: dict[str, LaneInfo] = {}
        self._order: list[str] = []
        #: increases whenever the lane order changes (views then redraw everything)
        self.lanes_version = 0
        self._labels: dict[str, str] = {}  # peer id -> lane name
        self._host_ips: dict[str, set[str]] = {}
        self._router_ips: dict[str, set[str]] = {}
        self._behind: dict[str, str] = {}
        self._spans: dict[tuple[str, str], _SpanInfo] = {}
        #: NAT sessions marked from their start record, and how many of their events
        #: were handled (progress records bring them while the session lives)
        self._mapped: set[tuple[str, str]] = set()
        self._nat_done: dict[tuple[str, str], int] = {}
        self._wire = WireMatcher()
        self._sends: dict[tuple[str, int | None], list[_Half]] = {}
        self._receives: dict[tuple[str, int | None], list[_Half]] = {}
        self._pending = 0
        self._latest = 0
        self._new = SequenceItems()
        self._all = SequenceItems()
        #: records fed so far
        self.records = 0
        #: message halves dropped because too many waited at once
        self.overflow = 0

    # ------------------------------------------------------------------ lanes
    @property
    def lanes(self) -> list[str]:
        """Return the lane names, left to right."""
        return list(self._order)

    def lane_kind(self, name: str) -> LaneKind:
        """Return the kind of a lane (``host``, ``nat`` or ``remote``)."""
        return self._lanes[name].kind

    def lane_index(self, name: str) -> int:
        """Return a lane's position, from 0 at the left."""
        return self._order.index(name)

    def behind(self, host: str) -> str | None:
        """Return the NAT router a host sits behind, if the trace showed it."""
        return self._behind.get(host)

    def _lane(self, name: str, kind: LaneKind) -> None:
        lane = self._lanes.get(name)
        if lane is None or (lane.kind == "remote" and kind != "remote"):
            seen = lane.seen if lane is not None else len(self._lanes)
            self._lanes[name] = LaneInfo(name, kind, seen, self._behind.get(name))
            self._reorder()

    def _reorder(self) -> None:
        order = order_lanes(list(self._lanes.values()), self.preferred_lanes)
        if order != self._order:
            self._order = order
            self.lanes_version += 1

    def _learn_addresses(self, node: str, kind: LaneKind, record: SpanRecord) -> None:
        attrs = record.attributes
        if kind == "nat":
            internal = attrs.get(spans.LIBP2P_NAT_INTERNAL)
            ip = _endpoint_ip(internal) if isinstance(internal, str) else None
            if ip is None or ip in self._router_ips.get(node, set()):
                return
            self._router_ips.setdefault(node, set()).add(ip)
        else:
            found = {ip for key in (spans.LIBP2P_LOCAL_MULTIADDR, spans.NETWORK_LOCAL_ADDRESS)
                     if (ip := _address_ip(attrs.get(key))) is not None}
            known = self._host_ips.setdefault(node, set())
            if found <= known:
                return
            known |= found
        behind = behind_from_addresses(self._router_ips, self._host_ips)
        if behind != self._behind:
            self._behind = behind
            for name, host in behind.items():
                lane = self._lanes.get(name)
                if lane is not None and lane.behind != host:
                    self._lanes[name] = LaneInfo(lane.name, lane.kind, lane.seen, host)
            self._reorder()

    # ------------------------------------------------------------------ feeding
    def add(self, record: SpanRecord) -> None:
        """Feed one span record (a start or an end record)."""
        self.records += 1
        node, kind = _node_of(record)
        self._lane(node, kind)
        peer_id = record.peer_id
        if peer_id is not None and kind == "host":
            self._labels.setdefault(peer_id, node)
        key = (record.trace_id, record.span_id)
        remote = record.attributes.get(spans.LIBP2P_REMOTE_PEER_ID)
        info = self._spans.get(key)
        parent = (record.trace_id, record.parent_id) if record.parent_id else None
        if info is None:
            self._spans[key] = _SpanInfo(parent, remote if isinstance(remote, str) else None)
        elif isinstance(remote, str):
            info.remote = remote
        self._learn_addresses(node, kind, record)
        axis = self.axis
        axis.extend(record.start_ns)
        if not record.ended:
            if kind == "nat" and record.name == spans.NAT_SESSION:
                if key not in self._nat_done:
                    self._mapping_mark(node, key, record)
                if record.events:  # a progress record: the session's events so far
                    for event in record.events:
                        axis.extend(event.time_ns)
                    self._nat_marks(node, record)
            return
        assert record.end_ns is not None
        for event in sorted(record.events, key=lambda e: e.time_ns):
            axis.extend(event.time_ns)
        axis.extend(record.end_ns)
        self._latest = max(self._latest, record.end_ns)
        if kind == "nat":
            self._nat_marks(node, record)
        else:
            self._messages(node, key, record)
            self._phase(node, record)
        if record.status == "error" and kind == "host":
            self._emit_mark(MarkItem(next(self._ids), node, record.end_ns, "error",
                                     record.name, record.description or "error"))

    def take_new(self) -> SequenceItems:
        """Return the items that became drawable since the last call."""
        new, self._new = self._new, SequenceItems()
        return new

    def items(self) -> SequenceItems:
        """Return every item made so far."""
        out = SequenceItems()
        out.extend(self._all)
        return out

    def settle(self, *, everything: bool = False) -> None:
        """Draw message halves that waited longer than ``grace_ms`` (all of them if asked)."""
        limit = None if everything else self._latest - self.grace_ns
        for table, sending in ((self._sends, True), (self._receives, False)):
            for key in list(table):
                halves = table[key]
                keep = []
                for half in halves:
                    if limit is None or half.t < limit:
                        self._emit_alone(half, sending)
                    else:
                        keep.append(half)
                self._pending -= len(halves) - len(keep)
                if keep:
                    table[key] = keep
                else:
                    del table[key]

    def feed(self, records: Iterable[SpanRecord]) -> SequenceBuilder:
        """Feed many records and settle everything: the whole trace at once."""
        for record in records:
            self.add(record)
        self.settle(everything=True)
        return self

    # ------------------------------------------------------------------ messages
    def _remote_of(self, key: tuple[str, str]) -> str | None:
        seen = 0
        info = self._spans.get(key)
        while info is not None and seen < 64:
            if info.remote is not None:
                return info.remote
            info = self._spans.get(info.parent) if info.parent is not None else None
            seen += 1
        return None

    def _messages(self, node: str, key: tuple[str, str], record: SpanRecord) -> None:
        peer_id: str | None = None
        resolved = False
        protocol = record.attributes.get(spans.LIBP2P_PROTOCOL)
        for event in record.events:
            if event.name == spans.MESSAGE_SENT:
                sending = True
            elif event.name == spans.MESSAGE_RECEIVED:
                sending = False
            else:
                continue
            if not resolved:
                peer_id, resolved = self._remote_of(key), True
            half = _half(node, peer_id, event, record.name, protocol)
            if record.name == spans.RELAY_CIRCUIT and half.label.startswith("stop."):
                # a relay's circuit span talks to both ends: stop messages go to the target
                target = record.attributes.get(spans.LIBP2P_RELAY_DST)
                if isinstance(target, str):
                    half = dataclasses.replace(half, peer_id=target)
            if self.include is not None and not self.include(half.label, half.family):
                continue
            if sending:
                self._send(half)
            else:
                self._receive(half)

    def _peer_lane(self, peer_id: str | None) -> str | None:
        if peer_id is None:
            return None
        return self._labels.get(peer_id)

    def _pairs(self, sender: _Half, receiver: _Half) -> bool:
        """True if ``sender``'s send can be ``receiver``'s receive."""
        if sender.node == receiver.node:
            return False
        to = self._peer_lane(sender.peer_id)
        if to is not None and to != receiver.node:
            return False
        if sender.peer_id is not None and to is None:
            return False  # sent to a peer whose node we do not know (yet)
        came_from = self._peer_lane(receiver.peer_id)
        if came_from is not None and came_from != sender.node:
            return False
        return not (receiver.peer_id is not None and came_from is None)

    def _send(self, half: _Half) -> None:
        key = (half.label, half.size)
        waiting = self._receives.get(key)
        if waiting:
            best = None
            for i, other in enumerate(waiting):
                if other.t >= half.t and self._pairs(half, other) and (
                        best is None or other.t < waiting[best].t):
                    best = i
            if best is not None:
                self._pending -= 1
                self._emit_pair(half, waiting.pop(best))
                if not waiting:
                    del self._receives[key]
                return
        self._wait(self._sends, key, half, sending=True)

    def _receive(self, half: _Half) -> None:
        key = (half.label, half.size)
        waiting = self._sends.get(key)
        if waiting:
            best = None
            for i, other in enumerate(waiting):
                if other.t <= half.t and self._pairs(other, half) and (
                        best is None or other.t < waiting[best].t):
                    best = i
            if best is not None:
                self._pending -= 1
                self._emit_pair(waiting.pop(best), half)
                if not waiting:
                    del self._sends[key]
                return
        self._wait(self._receives, key, half, sending=False)

    def _wait(self, table: dict[tuple[str, int | None], list[_Half]],
              key: tuple[str, int | None], half: _Half, *, sending: bool) -> None:
        if self._pending >= _MAX_PENDING:
            self.overflow += 1
            self._emit_alone(half, sending)
            return
        self._pending += 1
        table.setdefault(key, []).append(half)

    def _emit_pair(self, send: _Half, receive: _Half) -> None:
        self._emit_arrow(ArrowItem(
            next(self._ids), send.node, receive.node, send.t, receive.t, send.label, send.size,
            send.family, "delivered", send.protocol or receive.protocol, send.span))

    def _emit_alone(self, half: _Half, sending: bool) -> None:
        peer = self._peer_lane(half.peer_id)
        if peer is None and half.peer_id is None:
            others = [x.name for x in self._lanes.values()
                      if x.kind == "host" and x.name != half.node]
            if len(others) == 1:  # two nodes only: the other one it must be
                peer = others[0]
        if peer is None:
            peer = short_peer_id(half.peer_id) if half.peer_id is not None else _UNKNOWN_PEER
            self._lane(peer, "remote")
        status: ArrowStatus
        if self._lanes[peer].kind == "remote":
            status = "remote"
        else:
            status = "send_only" if sending else "receive_only"
        src, dst = (half.node, peer) if sending else (peer, half.node)
        t_send, t_recv = (half.t, None) if sending else (None, half.t)
        self._emit_arrow(ArrowItem(next(self._ids), src, dst, t_send, t_recv, half.label,
                                   half.size, half.family, status, half.protocol, half.span))

    def _emit_arrow(self, arrow: ArrowItem) -> None:
        self._new.arrows.append(arrow)
        self._all.arrows.append(arrow)

    # ------------------------------------------------------------------ marks and phases
    def _emit_mark(self, mark: MarkItem) -> None:
        self._new.marks.append(mark)
        self._all.marks.append(mark)

    def _mapping_mark(self, router: str, key: tuple[str, str], record: SpanRecord) -> None:
        """Mark a new NAT session at once: its events only reach the bus when it expires."""
        attrs = record.attributes
        self._mapped.add(key)
        self._nat_done[key] = 0
        reason = _text(attrs.get(spans.LIBP2P_REASON))
        flow = (f"{_text(attrs.get(spans.NETWORK_TRANSPORT))} "
                f"{_text(attrs.get(spans.LIBP2P_NAT_ORIGIN))}")
        detail = "; ".join(x for x in (flow, reason, _nat_ends(attrs)) if x.strip())
        self._emit_mark(MarkItem(next(self._ids), router, record.start_ns, "mapping", "",
                                 detail, "outbound"))

    def _nat_marks(self, router: str, record: SpanRecord) -> None:
        attrs = record.attributes
        key = (record.trace_id, record.span_id)
        mapped = key in self._mapped
        done = self._nat_done.get(key, 0)
        if record.ended:
            self._mapped.discard(key)
            self._nat_done.pop(key, None)
        else:
            self._nat_done[key] = len(record.events)
        for event in record.events[done:]:
            kind = _NAT_MARKS.get(event.name)
            if kind is None or (kind == "mapping" and mapped):
                continue
            ev = event.attributes
            packet = _text(ev.get(spans.LIBP2P_NAT_PACKET) or attrs.get(spans.LIBP2P_NAT_PACKET))
            reason = _text(ev.get(spans.LIBP2P_REASON))
            direction = ev.get(spans.LIBP2P_DIRECTION)
            if kind == "filtered":
                direction = "inbound"
            detail = "; ".join(x for x in (packet, reason, _nat_ends(attrs)) if x)
            label = packet if kind in ("filtered", "answered") else ""
            self._emit_mark(MarkItem(
                next(self._ids), router, event.time_ns, kind, label, detail,
                direction if isinstance(direction, str) else None))
            if kind in ("translated", "filtered", "answered"):
                self._packet(router, kind, direction, event.time_ns, attrs, packet)

    def _packet(self, router: str, kind: str, direction: object, t: int,
                attrs: Mapping[str, AttributeValue], packet: str) -> None:
        """Draw a packet that went from one router to another as an arrow between them."""
        proto, ext, remote = (attrs.get(k) for k in (
            spans.NETWORK_TRANSPORT, spans.LIBP2P_NAT_EXTERNAL, spans.LIBP2P_NAT_REMOTE))
        if not (isinstance(proto, str) and isinstance(ext, str) and isinstance(remote, str)
                and packet):
            return
        if direction == "outbound" and kind == "translated":
            pair = self._wire.sent((proto, ext, remote, packet), Sighting(router, t))
        elif direction == "inbound":
            pair = self._wire.arrived((proto, remote, ext, packet), Sighting(router, t, kind))
        else:
            return
        if pair is not None:
            sent, came = pair
            self._emit_arrow(ArrowItem(
                next(self._ids), sent.router, came.router, sent.t, came.t,
                packet if came.status == "translated" else f"{packet} ({came.status})",
                None, "nat", "delivered", None, spans.NAT_SESSION))

    def _phase(self, node: str, record: SpanRecord) -> None:
        if record.name not in self.phase_spans or record.end_ns is None:
            return
        attrs = record.attributes
        outcome = attrs.get(spans.LIBP2P_OUTCOME)
        status = "error" if record.status == "error" else (
            outcome if isinstance(outcome, str) else "ok")
        bits = [f"{k.split('.', 1)[-1]}={_text(v)}" for k, v in attrs.items()
                if k in _PHASE_DETAIL]
        if record.description:
            bits.append(record.description)
        self._all.phases.append(item := PhaseItem(
            next(self._ids), node, record.start_ns, record.end_ns, record.name,
            family_of(record.name, attrs.get(spans.LIBP2P_PROTOCOL)), status, " ".join(bits)))
        self._new.phases.append(item)


_PHASE_DETAIL: Final = frozenset({
    spans.LIBP2P_OUTCOME, spans.LIBP2P_REASON, spans.LIBP2P_RTT_MS, spans.LIBP2P_ATTEMPT,
    spans.LIBP2P_MULTIADDR, spans.LIBP2P_PROTOCOL, spans.LIBP2P_TRANSPORT,
    spans.LIBP2P_RELAY_STATUS,
})


def _nat_ends(attrs: Mapping[str, AttributeValue]) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k in (
        spans.LIBP2P_NAT_INTERNAL, spans.LIBP2P_NAT_EXTERNAL, spans.LIBP2P_NAT_REMOTE)
        if (v := attrs.get(k)) is not None)


def _node_of(record: SpanRecord) -> tuple[str, LaneKind]:
    peer_id = record.peer_id
    router = (peer_id is not None and peer_id.startswith(_ROUTER_PREFIX)) or (
        record.name.startswith("nat."))
    label = record.node_label or (short_peer_id(peer_id) if peer_id else "?")
    return label, "nat" if router else "host"


def _half(node: str, peer_id: str | None, event: SpanEventRecord, span: str,
          protocol: AttributeValue) -> _Half:
    ev = event.attributes
    label = _text(ev.get(spans.MESSAGE_TYPE)) or "message"
    size = ev.get(spans.MESSAGE_SIZE)
    proto = ev.get(spans.LIBP2P_PROTOCOL) or protocol
    proto_text = proto if isinstance(proto, str) else None
    return _Half(node, peer_id, event.time_ns, label,
                 size if isinstance(size, int) and not isinstance(size, bool) else None,
                 family_of(span, proto_text), proto_text, span)


def _text(value: AttributeValue) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


def _endpoint_ip(endpoint: str) -> str | None:
    """Return the IP of ``ip:port`` or ``[ip6]:port`` (None for ``router`` and junk)."""
    if endpoint.startswith("["):
        end = endpoint.find("]")
        return endpoint[1:end] if end > 1 else None
    ip, sep, _ = endpoint.rpartition(":")
    return ip if sep and ip else None


def _address_ip(value: AttributeValue) -> str | None:
    """Return the IP of a multiaddr text (``/ip4/1.2.3.4/tcp/1``) or a plain address."""
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("/"):
        parts = value.split("/")
        if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
            return None
        value = parts[2]
    return None if value in _UNSPECIFIED else value


_UNSPECIFIED: Final = frozenset({"", "0.0.0.0", "::"})
