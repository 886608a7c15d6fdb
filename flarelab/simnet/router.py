"""A NAT router: the trio-side driver of a :class:`~flarelab.simnet.nat.NatTable`.

It joins a LAN (its own :class:`~flarelab.simnet.network.Subnet`) to its parent subnet,
translates IPv4 with the NAT table, forwards IPv6 (if its LAN has a prefix) through a
stateful firewall with the same filtering, hairpins when its behaviour allows, and answers
for its own addresses when its behaviour says its stack answers.

Tracing: the router has its own tracer provider (label = its name, e.g. "NAT A") when the
network has a tracing template. Every NAT session is a ``nat.session`` span from creation
to expiry, with ``nat.mapping_created``, ``nat.translated`` (control packets and the first
packet each way; data packets are only counted), ``nat.hairpinned`` and ``nat.answered``
events; every packet the router refuses is a short ``nat.drop`` span with a
``nat.filtered`` event saying why (at most ``drop_spans_per_second``, the rest counted).
A session span lives until the session expires, so after each of its events the router
hands the span bus (if tracing has one) a progress snapshot
(:meth:`~flarelab.tracing.bus.SpanBus.publish_progress`): live views show NAT events as
they happen.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import random
import time
from typing import TYPE_CHECKING, Final

import trio
from opentelemetry import context as otel_context
from opentelemetry.trace import Span

from ..tracing import spans
from .nat import NatBehavior, NatTable, Session, Verdict, answer_for
from .network import Link, Subnet
from .packet import Packet, format_endpoint

if TYPE_CHECKING:
    from ..tracing.provider import NodeTracing
    from .host import Host
    from .network import Attachment, Network, TimerHandle

__all__ = ["NatRouter"]

_EMPTY_CONTEXT: Final = otel_context.Context()


class NatRouter:
    """A NAT between a LAN and its parent subnet (the internet, or another router's LAN).

    Made by ``network.add_router(name, behaviour)``; put hosts behind it with
    :meth:`add_host` and routers behind it (carrier-grade NAT) with :meth:`add_router`.
    """

    def __init__(self, network: Network, name: str, behavior: NatBehavior, public_ip: str,
                 lan: str, lan6: str | None, *, lan_link: Link | None, parent: Subnet,
                 drop_spans_per_second: float = 50.0) -> None:
        self.network = network
        self.name = name
        self.behavior = behavior
        self.public_ip = public_ip
        self.parent = parent
        lan_net = ipaddress.IPv4Network(lan)
        self.lan_ip = next(iter(lan_net.hosts())).compressed
        self.lan = Subnet(network, f"{name} LAN", gateway=self, v4=lan, v6=lan6)
        self.lan.default_link = lan_link
        own = [self.lan._claim(self.lan_ip, 4)]
        if self.lan.v6 is not None:
            own.append(self.lan._claim(next(iter(self.lan.v6.hosts())).compressed, 6))
        self._own = frozenset((*own, public_ip))
        self._lan = self.lan._attach(self, own, Link(), self._receive_lan)
        self._wan: Attachment | None = None
        rng = network.random
        self.table = NatTable(behavior, public_ip, rng=random.Random(rng.getrandbits(64)))
        self.firewall6 = (NatTable(behavior, None, rng=random.Random(rng.getrandbits(64)),
                                   translate=False) if self.lan.v6 is not None else None)
        self._expiry: TimerHandle | None = None
        self._expiry_at = math.inf
        # tracing
        self.tracing: NodeTracing | None = None
        self._spans: dict[int, Span] = {}
        self._clock = None
        if network.tracing is not None:
            from ..tracing.provider import NodeTracing

            config = dataclasses.replace(network.tracing, label=name)
            self.tracing = NodeTracing.create(config, f"router:{public_ip}")
            self._clock = config.clock
        self.tracer = self.tracing.tracer if self.tracing is not None else spans.NO_TRACER
        self._traced = self.tracing is not None and self.tracing.enabled
        #: a live span bus to show session events on as they happen (not only at expiry)
        self._bus = network.tracing.bus if self._traced and network.tracing else None
        self._drop_rate = drop_spans_per_second
        self._drop_tokens = drop_spans_per_second
        self._drop_refill_at = 0.0
        self._drops_suppressed = 0
        #: packets this router refused (filtered, answered, or dropped for another reason)
        self.refused = 0

    # ================================================================== topology
    def add_host(self, name: str, *, ip: str | None = None, ip6: str | bool | None = None,
                 link: Link | None = None) -> Host:
        """Put a new host on this router's LAN."""
        return self.lan.add_host(name, ip=ip, ip6=ip6, link=link)

    def add_router(self, name: str, nat: NatBehavior | str = "home_router", *,
                   ip: str | None = None, lan: str | None = None, link: Link | None = None,
                   lan_link: Link | None = None) -> NatRouter:
        """Put a router behind this one (its WAN side on this router's LAN)."""
        return self.lan.add_router(name, nat, ip=ip, lan=lan, link=link, lan_link=lan_link)

    def sessions(self) -> list[Session]:
        """The live NAT sessions (IPv4 translations, then IPv6 firewall entries)."""
        now = trio.current_time()
        out = []
        for table in (self.table, self.firewall6):
            if table is not None:
                table.expire(now)
                self._ended(table)
                out += table.sessions()
        return out

    # ================================================================== packets
    def _receive_wan(self, packet: Packet) -> None:
        if packet.ttl <= 1:
            self._drop(packet, "TTL expired")
            return
        dst = packet.dst[0]
        now = trio.current_time()
        if dst == self.public_ip:
            self._apply(self.table, self.table.inbound(packet, now), packet, "inbound")
        elif self.firewall6 is not None and ":" in dst and self.lan.route(dst) is not None:
            self._apply(self.firewall6, self.firewall6.inbound(packet, now), packet, "inbound")
        else:
            self._drop(packet, f"no route to {dst} behind {self.name}")

    def _receive_lan(self, packet: Packet) -> None:
        if packet.ttl <= 1:
            self._drop(packet, "TTL expired")
            return
        dst = packet.dst[0]
        now = trio.current_time()
        if dst in self._own:
            if dst == self.public_ip and self.behavior.hairpinning:
                self._hairpin(packet, now)
            else:
                self._answer_local(packet)
        elif ":" not in dst:
            if ":" in packet.src[0] or self.lan.v4 is None:
                self._drop(packet, "bad source address")
            elif self.lan.v4 is not None and ipaddress.IPv4Address(dst) in self.lan.v4:
                self._drop(packet, f"no host {dst} on {self.lan.name}")
            else:
                self._apply(self.table, self.table.outbound(packet, now), packet, "outbound")
        elif self.firewall6 is not None:
            self._apply(self.firewall6, self.firewall6.outbound(packet, now), packet, "outbound")
        else:
            self._drop(packet, f"{self.name} has no IPv6 uplink")

    def _hairpin(self, packet: Packet, now: float) -> None:
        table = self.table
        first = table.outbound(packet, now)
        if first.action != "forward" or first.packet is None:
            self._apply(table, first, packet, "outbound")
            return
        self._session_events(first, packet, "outbound", hairpin=True)
        second = table.inbound(first.packet, now, hairpin=True)
        if second.action != "forward" or second.packet is None:
            self._apply(table, second, first.packet, "inbound")
            return
        self._session_events(second, first.packet, "inbound", hairpin=True)
        self.network._capture("hairpinned", self.name, packet)
        self._forward(second.packet, packet, self._lan)
        self._ended(table)

    def _answer_local(self, packet: Packet) -> None:
        answer = answer_for(packet)
        self.refused += 1
        self.network.stats.refused += 1
        self.network._capture("answered", self.name, packet, "for the router itself")
        if answer is not None:
            self.network.transmit(answer, self._lan)

    def _apply(self, table: NatTable, verdict: Verdict, packet: Packet, direction: str) -> None:
        """Carry out a verdict of ``table`` on ``packet`` (trace, forward, answer or drop)."""
        if verdict.action == "forward":
            assert verdict.packet is not None
            self._session_events(verdict, packet, direction)
            self.network._capture("translated", self.name, packet)
            out_side = self._wan if direction == "outbound" else self._lan
            assert out_side is not None
            self._forward(verdict.packet, packet, out_side)
        elif verdict.action == "answer":
            assert verdict.packet is not None
            self.refused += 1
            self.network.stats.refused += 1
            self.network._capture("answered", self.name, packet, verdict.reason)
            self._session_events(verdict, packet, direction)
            assert self._wan is not None
            self.network.transmit(verdict.packet, self._wan)
        else:
            self._drop(packet, verdict.reason)
        self._ended(table)

    def _forward(self, out: Packet, arrived: Packet, side: Attachment) -> None:
        out.ttl = arrived.ttl - 1
        self.network.transmit(out, side)

    def _drop(self, packet: Packet, reason: str) -> None:
        self.refused += 1
        self.network.stats.refused += 1
        self.network._capture("filtered", self.name, packet, reason)
        if not self._traced:
            return
        now = trio.current_time()
        self._drop_tokens = min(self._drop_rate,
                                self._drop_tokens + (now - self._drop_refill_at) * self._drop_rate)
        self._drop_refill_at = now
        if self._drop_tokens < 1:
            self._drops_suppressed += 1
            return
        self._drop_tokens -= 1
        attrs: dict[str, spans.AttributeValue] = {
            spans.NETWORK_TRANSPORT: packet.proto,
            spans.LIBP2P_NAT_REMOTE: format_endpoint(packet.src),
            spans.LIBP2P_NAT_EXTERNAL: format_endpoint(packet.dst),
            spans.LIBP2P_NAT_PACKET: packet.describe(),
            spans.LIBP2P_REASON: reason,
        }
        if self._drops_suppressed:
            attrs[spans.LIBP2P_NAT_SUPPRESSED] = self._drops_suppressed
            self._drops_suppressed = 0
        span = self.tracer.start_span(spans.NAT_DROP, _EMPTY_CONTEXT, attributes=attrs)
        span.add_event(spans.NAT_FILTERED, {spans.LIBP2P_REASON: reason,
                                            spans.LIBP2P_NAT_PACKET: packet.describe()})
        span.end()

    # ================================================================== tracing
    def _session_events(self, verdict: Verdict, packet: Packet, direction: str, *,
                        hairpin: bool = False) -> None:
        session = verdict.session
        if not self._traced or session is None:
            return
        span = self._spans.get(session.id)
        if span is None:
            span = self._start_session_span(session)
        if not (verdict.notable or hairpin):
            return
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_DIRECTION: direction,
            spans.LIBP2P_NAT_PACKET: packet.describe(),
        }
        if verdict.action == "answer":
            attrs[spans.LIBP2P_REASON] = verdict.reason
            span.add_event(spans.NAT_ANSWERED, attrs)
        elif hairpin:
            span.add_event(spans.NAT_HAIRPINNED, attrs)
        else:
            span.add_event(spans.NAT_TRANSLATED, attrs)
        if self._bus is not None:  # notable packets only: a few per session
            self._bus.publish_progress(span)

    def _start_session_span(self, session: Session) -> Span:
        attrs: dict[str, spans.AttributeValue] = {
            spans.NETWORK_TRANSPORT: session.proto,
            spans.LIBP2P_NAT_INTERNAL: (format_endpoint(session.internal)
                                        if session.internal else "router"),
            spans.LIBP2P_NAT_EXTERNAL: format_endpoint(session.external),
            spans.LIBP2P_NAT_REMOTE: format_endpoint(session.remote),
            spans.LIBP2P_NAT_ORIGIN: session.origin,
            spans.LIBP2P_NAT_PORT_PRESERVED: session.port_preserved,
            spans.LIBP2P_REASON: session.reason,
        }
        span = self.tracer.start_span(spans.NAT_SESSION, _EMPTY_CONTEXT, attributes=attrs)
        span.add_event(spans.NAT_MAPPING_CREATED, {spans.LIBP2P_REASON: session.reason})
        self._spans[session.id] = span
        return span

    def _ended(self, table: NatTable) -> None:
        """End the spans of sessions that expired, schedule the next expiry check."""
        expired = table.take_expired()
        if expired and self._traced:
            for session in expired:
                self._end_span(session, at=session.expires)
        when = table.next_expiry()
        if when is not None and when < self._expiry_at and self.network.running:
            self.network.cancel(self._expiry)  # one live entry, as for TCP timers
            self._expiry_at = when
            self._expiry = self.network.call_at(when, self._on_expiry_timer, None)

    def _on_expiry_timer(self, _: object) -> None:
        self._expiry, self._expiry_at = None, math.inf
        now = trio.current_time()
        for table in (self.table, self.firewall6):
            if table is not None:
                table.expire(now)
                self._ended(table)

    def _end_span(self, session: Session, *, at: float | None = None) -> None:
        span = self._spans.pop(session.id, None)
        if span is None:
            return
        span.set_attribute(spans.LIBP2P_CLOSE_REASON, session.end_reason or "closed")
        span.set_attribute(spans.LIBP2P_NAT_PACKETS_OUT, session.packets_out)
        span.set_attribute(spans.LIBP2P_NAT_PACKETS_IN, session.packets_in)
        span.set_attribute(spans.LIBP2P_BYTES_SENT, session.bytes_out)
        span.set_attribute(spans.LIBP2P_BYTES_RECEIVED, session.bytes_in)
        span.end(self._ns_at(at) if at is not None else None)

    def _ns_at(self, when: float) -> int:
        """Nanoseconds since the epoch at trio time ``when``, on the tracer's clock."""
        base = self._clock() if self._clock is not None else time.time_ns()
        return base - round((trio.current_time() - when) * 1e9)

    def _shutdown(self) -> None:
        for table in (self.table, self.firewall6):
            if table is not None:
                for session in table.clear("network closed"):
                    self._end_span(session)
        if self.tracing is not None:
            self.tracing.shutdown()

    def __repr__(self) -> str:
        return (f"<NatRouter {self.name} {self.public_ip} {self.behavior.name} "
                f"LAN {self.lan.v4}>")
