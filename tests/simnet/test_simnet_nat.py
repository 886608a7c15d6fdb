"""The pure NAT model against RFC 4787 (UDP) and RFC 5382 (TCP) definitions (tier 1).

No I/O and no trio: packets in, verdicts out, time passed in. Each test names the section
of RFC 4787 whose definition it checks. X is the internal host (192.168.1.2), the NAT's
external address is 203.0.113.1, and Y/Z are remote hosts.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError
from flarelab.simnet.nat import (
    PRESETS,
    FilteringBehavior,
    MappingBehavior,
    NatBehavior,
    NatTable,
    NatTimeouts,
    PortAssignment,
    PortSharing,
    UnsolicitedPolicy,
)
from flarelab.simnet.packet import ACK, FIN, RST, SYN, IcmpError, Packet, Segment

EXT = "203.0.113.1"
X = ("192.168.1.2", 4001)
X2 = ("192.168.1.3", 4001)
Y = ("198.51.100.7", 5000)
Y_OTHER_PORT = ("198.51.100.7", 6000)
Z = ("198.51.100.9", 5000)

EIM, ADM, APDM = (MappingBehavior.ENDPOINT_INDEPENDENT, MappingBehavior.ADDRESS_DEPENDENT,
                  MappingBehavior.ADDRESS_AND_PORT_DEPENDENT)
EIF, ADF, APDF = (FilteringBehavior.ENDPOINT_INDEPENDENT, FilteringBehavior.ADDRESS_DEPENDENT,
                  FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT)


def table(mapping: MappingBehavior = EIM, filtering: FilteringBehavior = APDF, *,
          seed: int = 1, **kw: object) -> NatTable:
    return NatTable(NatBehavior(mapping=mapping, filtering=filtering, **kw),  # type: ignore[arg-type]
                    EXT, rng=random.Random(seed))


def udp(src: tuple[str, int], dst: tuple[str, int], data: bytes = b"x") -> Packet:
    return Packet("udp", src, dst, data)


def tcp(src: tuple[str, int], dst: tuple[str, int], flags: int, seq: int = 100,
        ack: int = 0) -> Packet:
    return Packet("tcp", src, dst, Segment(seq, ack, flags, 65535))


def out(t: NatTable, src: tuple[str, int], dst: tuple[str, int], now: float = 0.0
        ) -> tuple[str, int]:
    """Send a UDP packet out; return the external endpoint it left from."""
    verdict = t.outbound(udp(src, dst), now)
    assert verdict.action == "forward", verdict.reason
    assert verdict.packet is not None and verdict.packet.dst == dst
    return verdict.packet.src


def inbound_ok(t: NatTable, src: tuple[str, int], dst: tuple[str, int], now: float = 0.0
               ) -> bool:
    return t.inbound(udp(src, dst), now).action == "forward"


# ---------------------------------------------------------------- mapping (RFC 4787 4.1)
def test_endpoint_independent_mapping_reuses_the_mapping_for_every_destination() -> None:
    t = table(EIM)
    assert out(t, X, Y) == out(t, X, Y_OTHER_PORT) == out(t, X, Z) == (EXT, 4001)


def test_address_dependent_mapping_depends_on_the_destination_address_only() -> None:
    t = table(ADM, port_assignment=PortAssignment.RANDOM)
    to_y = out(t, X, Y)
    assert out(t, X, Y_OTHER_PORT) == to_y
    assert out(t, X, Z) != to_y


def test_address_and_port_dependent_mapping_differs_per_destination_endpoint() -> None:
    t = table(APDM, port_assignment=PortAssignment.RANDOM)
    external = {out(t, X, dst) for dst in (Y, Y_OTHER_PORT, Z)}
    assert len(external) == 3
    assert all(ip == EXT for ip, _ in external)


# ---------------------------------------------------------------- port assignment (4.2)
def test_port_preservation_keeps_the_internal_port_while_it_is_free() -> None:
    t = table(EIM)
    assert out(t, X, Y) == (EXT, 4001)
    session = t.find("udp", X, Y)
    assert session is not None and session.port_preserved and "preserved" in session.reason
    # a second host using the same port cannot have it: no port overloading (REQ-3)
    moved = out(t, X2, Y)
    assert moved != (EXT, 4001)
    moved_session = t.find("udp", X2, Y)
    assert moved_session is not None and not moved_session.port_preserved
    assert "taken" in moved_session.reason


def test_linux_per_remote_port_sharing_reuses_a_port_toward_other_remotes() -> None:
    """Linux (conntrack) keeps the port when the (external, remote) pair is still free."""
    t = table(APDM, port_assignment=PortAssignment.PRESERVE,
              port_sharing=PortSharing.PER_REMOTE)
    assert out(t, X, Y) == (EXT, 4001)
    assert out(t, X, Z) == (EXT, 4001)  # looks endpoint-independent ...
    assert out(t, X2, Z) != (EXT, 4001)  # ... until two flows would share a tuple
    assert out(t, X2, Y_OTHER_PORT) == (EXT, 4001)


def test_random_port_assignment_does_not_preserve() -> None:
    t = table(APDM, port_assignment=PortAssignment.RANDOM, seed=7)
    ports = {out(t, X, (f"198.51.100.{i}", 1000))[1] for i in range(1, 30)}
    assert 4001 not in ports and len(ports) == 29
    assert all(1024 <= p <= 65535 for p in ports)


def test_random_ports_are_reproducible_with_the_same_seed() -> None:
    first = [out(table(APDM, port_assignment=PortAssignment.RANDOM, seed=3), X, Y)]
    again = [out(table(APDM, port_assignment=PortAssignment.RANDOM, seed=3), X, Y)]
    other = [out(table(APDM, port_assignment=PortAssignment.RANDOM, seed=4), X, Y)]
    assert first == again != other


def test_sequential_port_assignment() -> None:
    t = table(APDM, port_assignment=PortAssignment.SEQUENTIAL, port_range=(2000, 2999))
    assert [out(t, X, (f"198.51.100.{i}", 1))[1] for i in range(1, 4)] == [2000, 2001, 2002]


def test_port_range_exhaustion_drops_with_a_reason() -> None:
    t = table(APDM, port_assignment=PortAssignment.RANDOM, port_range=(3000, 3001))
    out(t, X, Y)
    out(t, X, Z)
    verdict = t.outbound(udp(X, ("198.51.100.10", 1)), 0.0)
    assert verdict.action == "drop" and "no free external port" in verdict.reason


def test_session_table_limit() -> None:
    t = table(EIM, max_sessions=2)
    out(t, X, Y)
    out(t, X, Z)
    verdict = t.outbound(udp(X, ("198.51.100.10", 1)), 0.0)
    assert verdict.action == "drop" and "table full" in verdict.reason
    assert len(t) == 2


# ---------------------------------------------------------------- filtering (RFC 4787 5)
@pytest.mark.parametrize(
    ("filtering", "from_same_endpoint", "from_same_ip_other_port", "from_other_ip"),
    [(EIF, True, True, True), (ADF, True, True, False), (APDF, True, False, False)],
)
def test_filtering_behaviours(filtering: FilteringBehavior, from_same_endpoint: bool,
                              from_same_ip_other_port: bool, from_other_ip: bool) -> None:
    t = table(EIM, filtering)
    external = out(t, X, Y)
    assert inbound_ok(t, Y, external) is from_same_endpoint
    assert inbound_ok(t, Y_OTHER_PORT, external) is from_same_ip_other_port
    assert inbound_ok(t, Z, external) is from_other_ip


def test_inbound_reply_is_translated_to_the_internal_endpoint() -> None:
    t = table(EIM, APDF)
    external = out(t, X, Y)
    verdict = t.inbound(udp(Y, external, b"reply"), 1.0)
    assert verdict.packet is not None
    assert (verdict.packet.src, verdict.packet.dst, verdict.packet.payload) == (Y, X, b"reply")


def test_filtered_packets_say_why() -> None:
    t = table(EIM, APDF)
    external = out(t, X, Y)
    refused = t.inbound(udp(Z, external), 0.0)
    assert refused.action == "drop" and refused.notable
    assert "address-and-port-dependent filtering" in refused.reason
    assert "198.51.100.7:5000" in refused.reason
    unmapped = t.inbound(udp(Z, (EXT, 9999)), 0.0)
    assert unmapped.action == "drop" and "no mapping for 203.0.113.1:9999" in unmapped.reason


def test_endpoint_independent_filtering_creates_a_session_for_the_new_remote() -> None:
    t = table(EIM, EIF)
    external = out(t, X, Y)
    verdict = t.inbound(udp(Z, external), 0.0)
    assert verdict.created and verdict.session is not None
    assert verdict.session.origin == "inbound" and verdict.session.internal == X
    # and X's answer to Z leaves through the same mapping
    assert out(t, X, Z) == external


# ---------------------------------------------------------------- timeouts (4.3, RFC 5382)
def test_udp_mapping_expires_after_the_timeout_and_outbound_refreshes_it() -> None:
    t = table(EIM, timeouts=NatTimeouts(udp=120.0, udp_unreplied=30.0))
    external = out(t, X, Y, now=0.0)
    assert inbound_ok(t, Y, external, now=10.0)  # replied: now the 120 s timer
    out(t, X, Y, now=100.0)  # outbound refresh (REQ-6)
    assert inbound_ok(t, Y, external, now=219.0)
    assert not inbound_ok(t, Y, external, now=219.0 + 120.0 + 0.1)
    assert [s.end_reason for s in t.take_expired()] == ["expired"]
    assert len(t) == 0


def test_unreplied_udp_sessions_use_the_shorter_timeout() -> None:
    t = table(EIM, EIF, timeouts=NatTimeouts(udp=120.0, udp_unreplied=30.0))
    out(t, X, Y, now=0.0)
    t.expire(29.9)
    assert len(t) == 1
    t.expire(30.0)
    assert len(t) == 0


def test_inbound_refresh_can_be_turned_off() -> None:
    t = table(EIM, EIF, inbound_refresh=False, timeouts=NatTimeouts(udp=60.0, udp_unreplied=60.0))
    external = out(t, X, Y, now=0.0)
    for now in (20.0, 40.0, 59.0):
        assert inbound_ok(t, Y, external, now=now)
    assert not inbound_ok(t, Y, external, now=60.5)


def test_tcp_timeouts_follow_the_connection_state() -> None:
    timeouts = NatTimeouts(tcp_transitory=240.0, tcp_established=7440.0, tcp_closed=10.0)
    t = table(EIM, APDF, timeouts=timeouts)
    syn = t.outbound(tcp(X, Y, SYN), 0.0)
    assert syn.session is not None and syn.session.tcp == "syn"
    assert syn.session.expires == 240.0
    t.inbound(tcp(Y, (EXT, 4001), SYN | ACK, ack=101), 0.1)
    t.outbound(tcp(X, Y, ACK, seq=101, ack=1), 0.2)
    assert syn.session.tcp == "established" and syn.session.expires == pytest.approx(7440.2)
    t.outbound(tcp(X, Y, FIN | ACK, seq=101, ack=1), 1.0)
    assert syn.session.tcp == "closing" and syn.session.expires == 241.0
    t.inbound(tcp(Y, (EXT, 4001), RST, seq=1), 2.0)
    assert syn.session.tcp == "closed" and syn.session.expires == 12.0
    t.expire(12.0)
    assert len(t) == 0


# ---------------------------------------------------------------- hairpinning (RFC 4787 6)
def test_hairpinned_packets_carry_the_external_source() -> None:
    """REQ-9: a hairpinned packet shows the sender's *external* endpoint."""
    t = table(EIM, EIF)
    x2_external = out(t, X2, Z)
    first = t.outbound(udp(X, x2_external), 0.0)
    assert first.packet is not None
    second = t.inbound(first.packet, 0.0, hairpin=True)
    assert second.action == "forward" and second.packet is not None
    assert second.packet.dst == X2
    assert second.packet.src == first.packet.src != X  # X's external endpoint


def test_hairpinned_packets_are_filtered_and_never_answered() -> None:
    t = table(EIM, APDF, unsolicited=UnsolicitedPolicy.ANSWER)
    x2_external = out(t, X2, Z)
    first = t.outbound(udp(X, x2_external), 0.0)
    assert first.packet is not None
    refused = t.inbound(first.packet, 0.0, hairpin=True)
    assert refused.action == "drop"


# ---------------------------------------------------------------- unsolicited packets
def test_dropping_unsolicited_packets_records_nothing() -> None:
    t = NatTable(PRESETS["home_router"], EXT, rng=random.Random(1))
    verdict = t.inbound(tcp(Y, (EXT, 4001), SYN), 0.0)
    assert verdict.action == "drop" and verdict.packet is None
    assert len(t) == 0
    assert out(t, X, Y) == (EXT, 4001)  # later the internal host keeps its port


def test_answering_router_resets_and_its_entry_moves_the_local_session() -> None:
    """The conntrack collision measured in the real lab (DESIGN.md, "Real NAT lab")."""
    t = NatTable(PRESETS["answering_router"], EXT, rng=random.Random(1))
    verdict = t.inbound(tcp(Y, (EXT, 4001), SYN, seq=500), 0.0)
    assert verdict.action == "answer" and verdict.created
    assert verdict.packet is not None
    reply = verdict.packet.segment
    assert verdict.packet.src == (EXT, 4001) and verdict.packet.dst == Y
    assert reply.flags == RST | ACK and reply.ack == 501
    assert verdict.session is not None and verdict.session.origin == "router"
    # X now connects to Y from 4001: the tuple (EXT:4001, Y) is taken, so it moves
    moved = t.outbound(tcp(X, Y, SYN), 0.1)
    assert moved.packet is not None and moved.packet.src[1] != 4001
    assert moved.session is not None and not moved.session.port_preserved
    assert "router's own session" in moved.session.reason
    # ... while a session to anyone else keeps the port
    assert t.outbound(tcp(X, Z, SYN), 0.2).packet.src == (EXT, 4001)  # type: ignore[union-attr]
    # and Y's next SYN is answered again, never reaching X
    again = t.inbound(tcp(Y, (EXT, 4001), SYN, seq=900), 0.3)
    assert again.action == "answer"


def test_answering_router_answers_udp_with_icmp_port_unreachable() -> None:
    t = NatTable(PRESETS["answering_router"], EXT, rng=random.Random(1))
    verdict = t.inbound(udp(Y, (EXT, 4001)), 0.0)
    assert verdict.action == "answer" and verdict.packet is not None
    error = verdict.packet.payload
    assert isinstance(error, IcmpError) and error.kind == "port-unreachable"
    assert error.original == ("udp", Y, (EXT, 4001))
    assert out(t, X, Y) != (EXT, 4001)


def test_resets_are_never_answered() -> None:
    t = NatTable(PRESETS["answering_router"], EXT, rng=random.Random(1))
    assert t.inbound(tcp(Y, (EXT, 4001), RST), 0.0).action == "drop"
    assert len(t) == 0


def test_icmp_errors_are_translated_back_to_the_internal_host() -> None:
    t = table(EIM, APDF)
    external = out(t, X, Y)
    error = Packet("icmp", ("198.51.100.7", 0), (EXT, 0),
                   IcmpError("port-unreachable", ("udp", external, Y)))
    verdict = t.inbound(error, 0.0)
    assert verdict.action == "forward" and verdict.packet is not None
    assert verdict.packet.dst == (X[0], 0)
    assert verdict.packet.payload == IcmpError("port-unreachable", ("udp", X, Y))
    stray = Packet("icmp", Z, (EXT, 0), IcmpError("port-unreachable", ("udp", (EXT, 1), Z)))
    assert t.inbound(stray, 0.0).action == "drop"


def test_one_flow_never_gets_two_external_endpoints() -> None:
    """EIF would let Z in on X's first mapping although X already talks to Z elsewhere."""
    t = table(APDM, EIF, port_assignment=PortAssignment.RANDOM)
    first = out(t, X, Y)
    out(t, X, Z)
    verdict = t.inbound(udp(Z, first), 0.0)
    assert verdict.action == "drop" and "already talks to" in verdict.reason


def test_firewall_mode_keeps_addresses_and_filters() -> None:
    inside, outside = ("2001:db8:1::2", 4001), ("2001:db8::9", 5000)
    t = NatTable(PRESETS["answering_router"], None, rng=random.Random(1), translate=False)
    assert t.outbound(udp(inside, outside), 0.0).packet.src == inside  # type: ignore[union-attr]
    assert t.inbound(udp(outside, inside), 0.0).action == "forward"
    refused = t.inbound(udp(("2001:db8::8", 1), inside), 0.0)
    assert refused.action == "drop"  # a firewall never answers for its hosts


# ---------------------------------------------------------------- presets
@pytest.mark.parametrize(
    ("name", "mapping", "filtering", "predictable", "answers"),
    [
        ("full_cone", EIM, EIF, True, False),
        ("restricted_cone", EIM, ADF, True, False),
        ("port_restricted_cone", EIM, APDF, True, False),
        ("symmetric", APDM, APDF, False, False),
        ("home_router", APDM, APDF, True, False),
        ("answering_router", APDM, APDF, True, True),
    ],
)
def test_presets(name: str, mapping: MappingBehavior, filtering: FilteringBehavior,
                 predictable: bool, answers: bool) -> None:
    nat = NatBehavior.preset(name.replace("_", "-"))
    assert (nat.mapping, nat.filtering, nat.predictable) == (mapping, filtering, predictable)
    assert (nat.unsolicited is UnsolicitedPolicy.ANSWER) is answers
    assert nat.describe()


def test_unknown_preset_and_bad_behaviour() -> None:
    with pytest.raises(LocalProtocolError, match="known"):
        NatBehavior.preset("carrier grade")
    with pytest.raises(LocalProtocolError):
        NatBehavior(mapping=EIM, filtering=EIF, port_range=(0, 10))


# ---------------------------------------------------------------- properties
_ENDPOINTS = st.tuples(st.sampled_from(["192.168.1.2", "192.168.1.3"]),
                       st.sampled_from([4001, 5000]))
_REMOTES = st.tuples(st.sampled_from(["198.51.100.7", "198.51.100.9"]),
                     st.sampled_from([80, 5000]))
_STEPS = st.lists(
    st.tuples(st.booleans(), _ENDPOINTS, _REMOTES, st.integers(0, 4001),
              st.sampled_from(["udp", "tcp"]), st.floats(0, 50)),
    max_size=40,
)


@given(preset=st.sampled_from(sorted(PRESETS)), steps=_STEPS, seed=st.integers(0, 100))
def test_random_traffic_keeps_the_table_consistent(preset: str, steps: list, seed: int) -> None:  # type: ignore[type-arg]
    """Any sequence of packets: answers translate back, tuples stay unique, ports in range."""
    behavior = PRESETS[preset].replace(timeouts=NatTimeouts(udp=60, udp_unreplied=30,
                                                            tcp_transitory=60,
                                                            tcp_established=100,
                                                            tcp_closed=5))
    t = NatTable(behavior, EXT, rng=random.Random(seed))
    now = 0.0
    for outbound, inside, remote, port, proto, dt in steps:
        now += dt
        if outbound:
            packet = (udp(inside, remote) if proto == "udp"
                      else tcp(inside, remote, SYN))
            verdict = t.outbound(packet, now)
            if verdict.action == "forward":
                assert verdict.packet is not None and verdict.session is not None
                external = verdict.packet.src
                assert external[0] == EXT
                low, high = behavior.port_range
                assert low <= external[1] <= high or external[1] == inside[1]
                # the answer to it comes back to the sender, whatever the filtering
                reply = (udp(remote, external) if proto == "udp"
                         else tcp(remote, external, SYN | ACK, ack=101))
                back = t.inbound(reply, now)
                assert back.action == "forward" and back.packet is not None
                assert back.packet.dst == inside
        else:
            packet = (udp(remote, (EXT, port)) if proto == "udp"
                      else tcp(remote, (EXT, port), SYN))
            verdict = t.inbound(packet, now)
            assert verdict.action in ("forward", "drop", "answer")
        live = t.sessions()
        tuples = [(s.proto, s.external, s.remote) for s in live]
        assert len(tuples) == len(set(tuples))
        flows = [(s.proto, s.internal, s.remote) for s in live if s.internal is not None]
        assert len(flows) == len(set(flows))
        assert all(s.expires > now for s in live)
