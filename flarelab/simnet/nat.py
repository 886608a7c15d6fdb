"""A NAT described by RFC 4787 (UDP) and RFC 5382 (TCP) behaviour: a pure model, no I/O.

The table holds *sessions* (what Linux calls conntrack entries): one per
(protocol, internal endpoint, remote endpoint), each with the external endpoint the NAT
gave it and its own timer. The RFC's terms map onto it like this:

* **Mapping behaviour** (RFC 4787 4.1) decides whether a new session may reuse the
  external endpoint of another session of the same internal endpoint:
  endpoint-independent (any), address-dependent (one to the same remote IP) or
  address-and-port-dependent (never).
* **Port assignment** (4.2.1): a fresh external port keeps the internal port when it is
  free (port preservation), or is random (Linux ``masquerade fully-random``), or
  sequential. *Free* depends on **port sharing**: ``exclusive`` (an external port serves
  one internal endpoint, as RFC 4787 asks) or ``per-remote`` (Linux: a port may serve
  several sessions as long as each (external, remote) pair is unique).
* **Filtering behaviour** (5): an inbound packet that matches no session exactly is
  let in when some session on its external endpoint allows it: endpoint-independent
  (any), address-dependent (one whose remote has the packet's source IP) or
  address-and-port-dependent (none: only exact matches pass).
* **Unsolicited inbound** packets are dropped (a home router's input hook) or reach the
  router's own stack, which answers (TCP RST, ICMP port unreachable) and *records a
  session for that flow*. That entry is the Linux conntrack collision measured in the real
  lab: a later outbound session to the same remote cannot take the same external port and
  is moved to another one, so the peer's hole punch aims at the wrong port.
* **Timeouts** per session and state (RFC 4787 REQ-5, RFC 5382 REQ-5, or Linux's), with
  outbound refresh always and inbound refresh as configured (REQ-6).
* **Hairpinning** (6) is the router's job (it feeds a translated packet back in);
  the flag lives here with the rest of the behaviour.

Time is passed in; randomness comes from the ``random.Random`` given to the table. The
behaviours and the named presets live in :mod:`flarelab.simnet.nat_behavior` (re-exported
here).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Literal

from ..errors import LocalProtocolError
from .nat_behavior import (
    LINUX_TIMEOUTS,
    PRESETS,
    FilteringBehavior,
    MappingBehavior,
    NatBehavior,
    NatTimeouts,
    PortAssignment,
    PortSharing,
    UnsolicitedPolicy,
)
from .packet import Endpoint, IcmpError, Packet, Proto, Segment, format_endpoint

__all__ = [
    "LINUX_TIMEOUTS",
    "PRESETS",
    "FilteringBehavior",
    "MappingBehavior",
    "NatBehavior",
    "NatTable",
    "NatTimeouts",
    "PortAssignment",
    "PortSharing",
    "Session",
    "UnsolicitedPolicy",
    "Verdict",
    "answer_for",
]


_EIM, _ADM, _APDM = (MappingBehavior.ENDPOINT_INDEPENDENT, MappingBehavior.ADDRESS_DEPENDENT,
                     MappingBehavior.ADDRESS_AND_PORT_DEPENDENT)
_EIF, _ADF, _APDF = (FilteringBehavior.ENDPOINT_INDEPENDENT, FilteringBehavior.ADDRESS_DEPENDENT,
                     FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT)

SessionOrigin = Literal["outbound", "inbound", "router"]
TcpTrack = Literal["syn", "established", "closing", "closed"]
Action = Literal["forward", "drop", "answer"]


@dataclass(eq=False, slots=True)
class Session:
    """One flow through the NAT (a conntrack entry) and the external endpoint it uses.

    ``internal`` is None for a session of the router's own stack (``origin="router"``):
    an unsolicited packet the router answered.
    """

    id: int
    proto: Proto
    internal: Endpoint | None
    external: Endpoint
    remote: Endpoint
    origin: SessionOrigin
    created: float
    expires: float
    #: why it got this external endpoint (preserved, reused, moved by a collision, ...)
    reason: str
    port_preserved: bool
    tcp: TcpTrack = "syn"
    seen_out: bool = False
    seen_in: bool = False
    packets_out: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    #: set when it ends: "expired" or "router closed"
    end_reason: str | None = None

    @property
    def replied(self) -> bool:
        """True once packets went both ways."""
        return self.seen_out and self.seen_in

    def describe(self) -> str:
        inside = format_endpoint(self.internal) if self.internal else "router"
        return (f"{self.proto} {inside} <-> {format_endpoint(self.external)} <-> "
                f"{format_endpoint(self.remote)} ({self.origin})")


@dataclass(slots=True)
class Verdict:
    """What the NAT does with one packet.

    ``forward``: send ``packet`` (translated) on. ``answer``: the router's stack sends
    ``packet`` back to the source. ``drop``: nothing; ``reason`` says why.
    ``notable``: the packet is worth a trace event (it opened or closed something, or is
    the first one a session carried that way); the data path is only counted.
    """

    action: Action
    packet: Packet | None = None
    session: Session | None = None
    created: bool = False
    reason: str = ""
    notable: bool = False


class NatTable:
    """The sessions of one NAT and the decisions made from them (pure: time passed in).

    ``external_ip`` is the NAT's public address. With ``translate=False`` the table is a
    stateful firewall (IPv6 behind a home router): external endpoints equal internal ones
    and only the filtering applies; unsolicited packets are then always dropped.
    """

    def __init__(
        self,
        behavior: NatBehavior,
        external_ip: str | None,
        *,
        rng: random.Random,
        translate: bool = True,
    ) -> None:
        if translate and external_ip is None:
            raise LocalProtocolError("a translating NAT needs an external address")
        self.behavior = behavior
        self.external_ip = external_ip
        self.translate = translate
        self._rng = rng
        self._ids = 0
        self._next_sequential = behavior.port_range[0]
        self._by_flow: dict[tuple[Proto, Endpoint, Endpoint], Session] = {}
        self._by_ext_remote: dict[tuple[Proto, Endpoint, Endpoint], Session] = {}
        self._by_external: dict[tuple[Proto, Endpoint], list[Session]] = {}
        self._by_internal: dict[tuple[Proto, Endpoint], list[Session]] = {}
        self._heap: list[tuple[float, int, Session]] = []
        self._live = 0
        self._expired: list[Session] = []

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return self._live

    def sessions(self) -> list[Session]:
        """The live sessions, oldest first (as of the last call that passed a time)."""
        return sorted(self._by_ext_remote.values(), key=lambda s: s.id)

    def find(self, proto: Proto, internal: Endpoint, remote: Endpoint) -> Session | None:
        """The session of ``internal`` with ``remote``, if one is live."""
        return self._by_flow.get((proto, internal, remote))

    def next_expiry(self) -> float | None:
        """When the next session may expire (None when there are none)."""
        return self._heap[0][0] if self._heap else None

    def take_expired(self) -> list[Session]:
        """Return the sessions that expired since the last call, and forget them."""
        out, self._expired = self._expired, []
        return out

    # ------------------------------------------------------------------ time
    def expire(self, now: float) -> None:
        """Remove the sessions whose timers ran out by ``now`` (see :meth:`take_expired`)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, session = heapq.heappop(heap)
            if session.end_reason is not None:
                continue
            if session.expires > now:
                heapq.heappush(heap, (session.expires, session.id, session))
                continue
            self._remove(session, "expired")
            self._expired.append(session)

    def clear(self, reason: str = "router closed") -> list[Session]:
        """End every session (the router is going away); return them."""
        ended = self.sessions()
        for session in ended:
            self._remove(session, reason)
        self._heap.clear()
        return ended

    # ------------------------------------------------------------------ packets
    def outbound(self, packet: Packet, now: float) -> Verdict:
        """Decide on a packet from the inside going out (translate its source)."""
        self.expire(now)
        proto = packet.proto
        if proto == "icmp":
            return self._outbound_icmp(packet)
        session = self._by_flow.get((proto, packet.src, packet.dst))
        created = False
        if session is None:
            if self._live >= self.behavior.max_sessions:
                return Verdict("drop", reason=f"session table full ({self._live} sessions)")
            choice = self._choose_external(proto, packet.src, packet.dst)
            if choice is None:
                return Verdict("drop", reason="no free external port")
            external, preserved, why = choice
            session = self._add(proto, packet.src, external, packet.dst, "outbound", now,
                                why, preserved)
            created = True
        first = not session.seen_out
        self._count(session, packet, outbound=True)
        self._refresh(session, now)
        out = Packet(proto, session.external, packet.dst, packet.payload, packet.ttl)
        return Verdict("forward", out, session, created, notable=first or _is_control(packet))

    def inbound(self, packet: Packet, now: float, *, hairpin: bool = False) -> Verdict:
        """Decide on a packet from the outside to an external endpoint of ours.

        ``hairpin``: the packet came from the inside through :meth:`outbound` (it is
        filtered like any other, but a refused one is dropped, never answered).
        """
        self.expire(now)
        proto = packet.proto
        if proto == "icmp":
            return self._inbound_icmp(packet)
        session = self._by_ext_remote.get((proto, packet.dst, packet.src))
        if session is not None and session.origin == "router":
            self._count(session, packet, outbound=False)
            answer = answer_for(packet)
            if answer is not None and answer.proto == "tcp":
                session.tcp = "closed"  # the router's own RST goes through conntrack too
            self._refresh(session, now)
            if answer is None:
                return Verdict("drop", session=session, reason="for the router's own stack")
            return Verdict("answer", answer, session,
                           reason="no socket on the router for this port")
        created = False
        if session is None:
            internal, refusal = self._filter(proto, packet)
            if internal is None:
                return self._refuse(packet, refusal, now, may_answer=not hairpin)
            other = self._by_flow.get((proto, internal, packet.src))
            if other is not None:  # conntrack cannot confirm a second entry for one flow
                return Verdict("drop", reason=(
                    f"{format_endpoint(internal)} already talks to "
                    f"{format_endpoint(packet.src)} through {format_endpoint(other.external)}"),
                    notable=True)
            if self._live >= self.behavior.max_sessions:
                return Verdict("drop", reason=f"session table full ({self._live} sessions)")
            why = f"let in by {self.behavior.filtering.value} filtering"
            session = self._add(proto, internal, packet.dst, packet.src, "inbound", now, why,
                                internal[1] == packet.dst[1])
            created = True
        assert session.internal is not None
        first = not session.seen_in
        self._count(session, packet, outbound=False)
        if self.behavior.inbound_refresh or created:
            self._refresh(session, now)
        out = Packet(proto, packet.src, session.internal, packet.payload, packet.ttl)
        return Verdict("forward", out, session, created, notable=first or _is_control(packet))

    # ------------------------------------------------------------------ internals
    def _filter(self, proto: Proto, packet: Packet) -> tuple[Endpoint | None, str]:
        """Return the internal endpoint the filter lets ``packet`` reach, or None and why."""
        candidates = [s for s in self._by_external.get((proto, packet.dst), ())
                      if s.origin != "router"]
        if not candidates:
            return None, f"no mapping for {format_endpoint(packet.dst)}"
        filtering = self.behavior.filtering
        if filtering is _EIF:
            allowed = candidates
        elif filtering is _ADF:
            allowed = [s for s in candidates if s.remote[0] == packet.src[0]]
        else:
            allowed = []
        if allowed:
            chosen = max(allowed, key=lambda s: s.id)
            assert chosen.internal is not None
            return chosen.internal, ""
        remotes = sorted({format_endpoint(s.remote) for s in candidates})
        shown = ", ".join(remotes[:3]) + (" ..." if len(remotes) > 3 else "")
        return None, (f"{filtering.value} filtering: {format_endpoint(packet.dst)} "
                      f"has only sent to {shown}")

    def _refuse(self, packet: Packet, reason: str, now: float, *, may_answer: bool) -> Verdict:
        answer = answer_for(packet)
        if (self.behavior.unsolicited is not UnsolicitedPolicy.ANSWER or not self.translate
                or not may_answer or packet.dst[0] != self.external_ip or answer is None):
            return Verdict("drop", reason=reason, notable=True)
        if self._live >= self.behavior.max_sessions:
            return Verdict("drop", reason=f"session table full ({self._live} sessions)",
                           notable=True)
        session = self._add(packet.proto, None, packet.dst, packet.src, "router", now,
                            f"answered by the router's stack ({reason})", True)
        self._count(session, packet, outbound=False)
        if answer.proto == "tcp":
            session.tcp = "closed"  # the router's own RST goes through conntrack too
        self._refresh(session, now)
        return Verdict("answer", answer, session, created=True, reason=reason, notable=True)

    def _choose_external(
        self, proto: Proto, internal: Endpoint, remote: Endpoint
    ) -> tuple[Endpoint, bool, str] | None:
        """Pick the external endpoint of a new session: (endpoint, preserved, why)."""
        if not self.translate:
            return internal, True, "not translated (firewall only)"
        ext_ip = self.external_ip
        assert ext_ip is not None
        mapping = self.behavior.mapping
        note = ""
        if mapping is not _APDM:
            same = [s for s in self._by_internal.get((proto, internal), ())
                    if mapping is _EIM or s.remote[0] == remote[0]]
            if same:
                reuse = min(same, key=lambda s: s.id).external
                if (proto, reuse, remote) not in self._by_ext_remote:
                    return (reuse, reuse[1] == internal[1],
                            f"{mapping.value} mapping: reuses {format_endpoint(reuse)}")
                note = (f"{format_endpoint(reuse)} already has a session with "
                        f"{format_endpoint(remote)}; ")
        port = internal[1]
        assignment = self.behavior.port_assignment
        if assignment is PortAssignment.PRESERVE and not note:
            low, high = self.behavior.port_range
            if low <= port <= high and self._port_free(proto, (ext_ip, port), remote):
                return (ext_ip, port), True, f"port {port} preserved"
            holder = self._holder(proto, (ext_ip, port), remote)
            note = f"port {port} taken ({holder}); " if holder else f"port {port} out of range; "
        chosen = self._allocate(proto, ext_ip, remote, sequential=assignment
                                is PortAssignment.SEQUENTIAL)
        if chosen is None:
            return None
        how = "sequential" if assignment is PortAssignment.SEQUENTIAL else "random"
        return (ext_ip, chosen), chosen == port, f"{note}{how} port {chosen}"

    def _port_free(self, proto: Proto, external: Endpoint, remote: Endpoint) -> bool:
        if self.behavior.port_sharing is PortSharing.PER_REMOTE:
            return (proto, external, remote) not in self._by_ext_remote
        return not self._by_external.get((proto, external))

    def _holder(self, proto: Proto, external: Endpoint, remote: Endpoint) -> str:
        session = self._by_ext_remote.get((proto, external, remote))
        if session is None:
            users = self._by_external.get((proto, external))
            session = users[0] if users else None
        if session is None:
            return ""
        if session.internal is None:
            return f"the router's own session with {format_endpoint(session.remote)}"
        return (f"{format_endpoint(session.internal)}'s session with "
                f"{format_endpoint(session.remote)}")

    def _allocate(self, proto: Proto, ext_ip: str, remote: Endpoint, *,
                  sequential: bool) -> int | None:
        low, high = self.behavior.port_range
        span = high - low + 1
        start = self._next_sequential - low if sequential else self._rng.randrange(span)
        for i in range(span):
            port = low + (start + i) % span
            if self._port_free(proto, (ext_ip, port), remote):
                if sequential:
                    self._next_sequential = low + (port - low + 1) % span
                return port
        return None

    def _add(self, proto: Proto, internal: Endpoint | None, external: Endpoint,
             remote: Endpoint, origin: SessionOrigin, now: float, reason: str,
             preserved: bool) -> Session:
        self._ids += 1
        session = Session(self._ids, proto, internal, external, remote, origin, now, now,
                          reason, preserved)
        if internal is not None:
            self._by_flow[(proto, internal, remote)] = session
            self._by_internal.setdefault((proto, internal), []).append(session)
        self._by_ext_remote[(proto, external, remote)] = session
        self._by_external.setdefault((proto, external), []).append(session)
        self._live += 1
        return session

    def _remove(self, session: Session, reason: str) -> None:
        session.end_reason = reason
        proto, internal = session.proto, session.internal
        if internal is not None:
            self._by_flow.pop((proto, internal, session.remote), None)
            _discard(self._by_internal, (proto, internal), session)
        self._by_ext_remote.pop((proto, session.external, session.remote), None)
        _discard(self._by_external, (proto, session.external), session)
        self._live -= 1

    def _count(self, session: Session, packet: Packet, *, outbound: bool) -> None:
        size = packet.size
        if outbound:
            session.seen_out = True
            session.packets_out += 1
            session.bytes_out += size
        else:
            session.seen_in = True
            session.packets_in += 1
            session.bytes_in += size
        payload = packet.payload
        if isinstance(payload, Segment):
            session.tcp = _track_tcp(session, payload)

    def _refresh(self, session: Session, now: float) -> None:
        t = self.behavior.timeouts
        if session.proto == "tcp":
            timeout = {"syn": t.tcp_transitory, "established": t.tcp_established,
                       "closing": t.tcp_transitory, "closed": t.tcp_closed}[session.tcp]
        else:
            timeout = t.udp if session.replied else t.udp_unreplied
        expires = now + timeout
        old = session.expires
        session.expires = expires
        if old <= now or expires < old:  # new, or sooner than the heap entry: push again
            heapq.heappush(self._heap, (expires, session.id, session))

    def _outbound_icmp(self, packet: Packet) -> Verdict:
        error = packet.payload
        if not isinstance(error, IcmpError):
            return Verdict("drop", reason="only ICMP errors are simulated")
        proto, orig_src, orig_dst = error.original
        session = self._by_flow.get((proto, orig_dst, orig_src))
        if session is None:
            return Verdict("drop", reason="ICMP error about no session")
        original = (proto, orig_src, session.external)
        out = Packet("icmp", (session.external[0], 0), packet.dst,
                     IcmpError(error.kind, original), packet.ttl)
        return Verdict("forward", out, session, notable=True)

    def _inbound_icmp(self, packet: Packet) -> Verdict:
        error = packet.payload
        if not isinstance(error, IcmpError):
            return Verdict("drop", reason="only ICMP errors are simulated")
        proto, orig_src, orig_dst = error.original
        session = self._by_ext_remote.get((proto, orig_src, orig_dst))
        if session is None or session.internal is None:
            return Verdict("drop", reason="ICMP error about no session", notable=True)
        original = (proto, session.internal, orig_dst)
        out = Packet("icmp", packet.src, (session.internal[0], 0),
                     IcmpError(error.kind, original), packet.ttl)
        return Verdict("forward", out, session, notable=True)


def _discard(index: dict[tuple[Proto, Endpoint], list[Session]],
             key: tuple[Proto, Endpoint], session: Session) -> None:
    sessions = index.get(key)
    if sessions is None:
        return
    try:
        sessions.remove(session)
    except ValueError:
        return
    if not sessions:
        del index[key]


def _is_control(packet: Packet) -> bool:
    payload = packet.payload
    return isinstance(payload, Segment) and payload.is_control


def _track_tcp(session: Session, seg: Segment) -> TcpTrack:
    """Follow a TCP session's state well enough to pick its timeout (RFC 5382 5)."""
    state = session.tcp
    if seg.rst:
        return "closed"
    if seg.syn and not seg.has_ack:
        return "syn"  # a new connection (also reusing a closed session's ports)
    if seg.fin:
        return "closed" if state == "closed" else "closing"
    if state == "syn" and session.replied and not seg.syn:
        return "established"
    return state


def answer_for(packet: Packet) -> Packet | None:
    """The router stack's answer to a packet for a port it has no socket on (or None)."""
    payload = packet.payload
    if isinstance(payload, Segment):
        seg = payload.reset_reply()
        return None if seg is None else Packet("tcp", packet.dst, packet.src, seg)
    if isinstance(payload, bytes):
        error = IcmpError("port-unreachable", (packet.proto, packet.src, packet.dst))
        return Packet("icmp", (packet.dst[0], 0), packet.src, error)
    return None
