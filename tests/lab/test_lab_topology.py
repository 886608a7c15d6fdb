"""The lab's description: address plan, validation, JSON, and the same topology on simnet.

No root needed: nothing here touches the kernel.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError
from flarelab.lab import LAB_ADDRESS_POLICY, NatKind, Topology, TopologyBuilder, nat_kind
from flarelab.lab.nat_kinds import simnet_behavior
from flarelab.lab.topology import LabHost, LabRouter
from flarelab.multiaddr import Multiaddr
from flarelab.simnet import PRESETS
from flarelab.simnet.host import Host as SimHost
from flarelab.simnet.router import NatRouter


def test_standard_topology_addresses() -> None:
    topology = Topology.standard("home_router", "symmetric", ipv6=True)
    assert [h.name for h in topology.public] == ["relay", "s1", "s2", "s3"]
    assert [h.ip for h in topology.public] == [
        "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]
    assert topology.public[0].ip6 == "2001:db8::1"
    nat_a, nat_b = topology.routers
    assert (nat_a.name, nat_a.kind, nat_a.wan_ip, nat_a.lan) == (
        "nat-a", NatKind.HOME_ROUTER, "203.0.113.1", "192.168.1.0/24")
    assert (nat_b.kind, nat_b.wan_ip, nat_b.wan_ip6, nat_b.lan6) == (
        NatKind.SYMMETRIC, "203.0.113.2", "2001:db8::102", "2001:db8:2::/64")
    a = topology.host("a")
    assert (a.ip, a.ip6, a.router, a.public) == ("192.168.1.2", "2001:db8:1::2", "nat-a", False)
    assert nat_a.lan_ip == "192.168.1.1" and nat_a.lan_ip6 == "2001:db8:1::1"
    assert topology.nat_of("b") is NatKind.SYMMETRIC and topology.nat_of("relay") is None
    assert topology.public_ip("a") == "203.0.113.1"
    assert topology.public_ip("relay") == "198.51.100.1"
    assert topology.router_of("relay") is None
    assert set(topology.names()) == {"relay", "s1", "s2", "s3", "a", "b", "nat-a", "nat-b"}


def test_a_side_can_be_public() -> None:
    topology = Topology.standard(None, "answering_router", servers=0)
    assert [h.name for h in topology.public] == ["relay", "a"]
    assert topology.nat_of("a") is None and topology.nat_of("b") is NatKind.ANSWERING_ROUTER


def test_builder_puts_several_hosts_on_a_lan() -> None:
    builder = TopologyBuilder()
    builder.add_router("home", "home-router").add_host("laptop").add_host("phone")
    topology = builder.build()
    assert [(h.name, h.ip) for h in topology.router("home").hosts] == [
        ("laptop", "192.168.1.2"), ("phone", "192.168.1.3")]
    assert topology.ipv6 is False and topology.host("phone").ip6 is None


def test_describe_names_everything() -> None:
    text = Topology.standard(latency=0.01).describe()
    assert "user-space switch, 10 ms per attachment" in text
    assert "nat-a [home_router]: 203.0.113.1, LAN 192.168.1.0/24" in text
    assert "    a: 192.168.1.2" in text
    assert "kernel bridge" in Topology.standard().describe()


def test_the_lab_internet_counts_as_public() -> None:
    for addr in ("/ip4/198.51.100.7/tcp/1", "/ip4/203.0.113.9/udp/1/quic-v1",
                 "/ip6/2001:db8::5/tcp/1"):
        assert LAB_ADDRESS_POLICY.is_public(Multiaddr(addr)), addr
    assert not LAB_ADDRESS_POLICY.is_public(Multiaddr("/ip4/192.168.1.2/tcp/1"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b.add_host("relay"), "used twice"),
    (lambda b: b.add_host("Bad_Name"), "bad name"),
    (lambda b: b.add_host("internet"), "bad name"),
    (lambda b: b.add_host("x" * 21), "bad name"),
])
def test_builder_refuses_bad_names(change, message: str) -> None:  # type: ignore[no-untyped-def]
    builder = TopologyBuilder()
    builder.add_host("relay")
    change(builder)
    with pytest.raises(LocalProtocolError, match=message):
        builder.build()


def test_validation_catches_inconsistent_descriptions() -> None:
    host = LabHost("a", "192.168.1.2", router="nat")
    router = LabRouter("nat", NatKind.HOME_ROUTER, "203.0.113.1", "192.168.1.0/24", hosts=(host,))
    Topology(routers=(router,))  # fine
    with pytest.raises(LocalProtocolError, match="not in the lab's internet"):
        Topology(public=(LabHost("p", "10.0.0.1"),))
    with pytest.raises(LocalProtocolError, match="not a host address"):
        Topology(routers=(LabRouter("nat", NatKind.HOME_ROUTER, "203.0.113.1", "192.168.1.0/24",
                                    hosts=(LabHost("a", "192.168.1.1", router="nat"),)),))
    with pytest.raises(LocalProtocolError, match="names router"):
        Topology(routers=(LabRouter("nat", NatKind.HOME_ROUTER, "203.0.113.1", "192.168.1.0/24",
                                    hosts=(LabHost("a", "192.168.1.2", router="x"),)),))
    with pytest.raises(LocalProtocolError, match="IPv6"):
        Topology(public=(LabHost("p", "198.51.100.1"),), ipv6=True)
    with pytest.raises(LocalProtocolError, match="used twice"):
        Topology(public=(LabHost("p", "198.51.100.1"), LabHost("q", "198.51.100.1")))
    with pytest.raises(LocalProtocolError, match="overlaps"):
        Topology(routers=(
            LabRouter("r1", NatKind.HOME_ROUTER, "203.0.113.1", "192.168.1.0/24"),
            LabRouter("r2", NatKind.HOME_ROUTER, "203.0.113.2", "192.168.1.0/25")))
    with pytest.raises(LocalProtocolError, match="latency"):
        Topology(latency=-1)
    with pytest.raises(LocalProtocolError, match="no host"):
        Topology.standard().host("nobody")


def test_nat_kinds_name_the_simnet_presets() -> None:
    for kind in NatKind:
        assert simnet_behavior(kind) is PRESETS[kind.value]
        assert kind.description
    assert nat_kind("Answering-Router") is NatKind.ANSWERING_ROUTER
    with pytest.raises(LocalProtocolError, match="known: home_router"):
        nat_kind("full_cone")


@pytest.mark.parametrize("ipv6", [False, True])
def test_json_round_trip(ipv6: bool) -> None:
    topology = Topology.standard("answering_router", None, ipv6=ipv6, latency=0.005)
    assert Topology.from_json(topology.to_json()) == topology


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda inner: st.lists(inner, max_size=4)
                              | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                              max_leaves=20).map(json.dumps)))
def test_from_json_raises_only_our_error(data: str | bytes) -> None:
    try:
        Topology.from_json(data)
    except LocalProtocolError:
        pass


async def test_the_same_topology_builds_on_simnet(autojump_clock: trio.testing.MockClock
                                                  ) -> None:
    topology = Topology.standard("home_router", "symmetric", ipv6=True, latency=0.01)
    async with topology.simnet_network(seed=1) as net:
        built = topology.build_simnet(net)
        a, relay, nat_b = built["a"], built["relay"], built["nat-b"]
        assert isinstance(a, SimHost) and isinstance(relay, SimHost)
        assert isinstance(nat_b, NatRouter)
        assert a.addresses == ["192.168.1.2", "2001:db8:1::2"]
        assert relay.addresses == ["198.51.100.1", "2001:db8::1"]
        assert nat_b.public_ip == "203.0.113.2" and nat_b.behavior is PRESETS["symmetric"]
        # the link latency is the lab's: a round trip A -> relay -> A crosses 4 attachments
        listener = relay.listen_tcp(7000)
        start = trio.current_time()
        stream = await a.connect_tcp("198.51.100.1", 7000)
        assert trio.current_time() - start == pytest.approx(0.04, abs=0.005)
        await stream.aclose()
        await listener.aclose()


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


_VALID = Topology.standard("home_router", "symmetric", ipv6=True).to_dict()
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["198.51.100.9", "2001:db8::9", "symmetric"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=8)


@given(st.sampled_from(_paths(_VALID)[1:]), _JSON_VALUES)
def test_a_corrupted_description_raises_only_our_error(path: tuple[object, ...],
                                                        value: object) -> None:
    data = json.loads(json.dumps(_VALID))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        topology = Topology.from_json(json.dumps(data))
    except LocalProtocolError:
        return
    assert Topology.from_json(topology.to_json()) == topology
