"""The namespace plan and the routers' rulesets, as text: no root, no kernel.

What the commands do to a real kernel is tested in test_lab_netns.py (root).
"""

from __future__ import annotations

import pytest

from flarelab.errors import LocalProtocolError
from flarelab.lab import NatKind, Topology
from flarelab.lab.errors import LabSetupError
from flarelab.lab.nat_kinds import ruleset
from flarelab.lab.netns import Command, LabNames, list_lab_namespaces, plan

NAMES = LabNames(prefix="flab", lab_id="0a1b2c")


def _netns_of(command: Command) -> str | None:
    argv = command.argv
    if argv[:2] == ("ip", "-n"):
        return argv[2]
    if argv[:3] in (("ip", "netns", "add"), ("ip", "netns", "del"), ("ip", "netns", "exec")):
        return argv[3]
    return None


@pytest.mark.parametrize("latency", [0.0, 0.01])
@pytest.mark.parametrize("ipv6", [False, True])
def test_every_command_stays_inside_the_labs_namespaces(latency: float, ipv6: bool) -> None:
    lab_plan = plan(Topology.standard(ipv6=ipv6, latency=latency), NAMES)
    assert lab_plan.namespaces[0] == "flab-0a1b2c-internet"
    assert set(lab_plan.namespaces) == {
        f"flab-0a1b2c-{name}" for name in
        ("internet", "relay", "s1", "s2", "s3", "a", "b", "nat-a", "nat-b")}
    for command in (*lab_plan.all_setup(), *lab_plan.teardown):
        netns = _netns_of(command)
        assert netns in lab_plan.namespaces, f"{command} leaves the lab"
        # a veth's far end is put into another lab namespace, never the machine's own
        if "peer" in command.argv:
            assert command.argv[command.argv.index("netns", 4) + 1] in lab_plan.namespaces
    assert [c.argv for c in lab_plan.teardown] == [
        ("ip", "netns", "del", ns) for ns in reversed(lab_plan.namespaces)]


def test_the_phases_come_in_order() -> None:
    lab_plan = plan(Topology.standard(), NAMES)
    assert all(c.argv[:3] in (("ip", "netns", "add"), ("ip", "netns", "exec"))
               for c in lab_plan.create)
    adds = [c for c in lab_plan.create if c.argv[:3] == ("ip", "netns", "add")]
    assert lab_plan.create[:len(adds)] == tuple(adds)  # namespaces first, then sysctls
    assert lab_plan.internet[0].argv == ("ip", "-n", "flab-0a1b2c-internet", "link", "add",
                                         "inet0", "type", "bridge")
    assert not lab_plan.switch_ports
    nft = [c for c in lab_plan.configure if "nft" in c.argv]
    assert [c.argv[3] for c in nft] == ["flab-0a1b2c-nat-a", "flab-0a1b2c-nat-b"]
    assert all(c.input and "flush ruleset" in c.input for c in nft)


def test_public_hosts_have_no_default_route_and_lan_hosts_go_through_their_router() -> None:
    lab_plan = plan(Topology.standard(ipv6=True), NAMES)
    routes = [c.argv for c in lab_plan.configure if "route" in c.argv]
    relay = [r for r in routes if r[2] == "flab-0a1b2c-relay"]
    assert ("ip", "-n", "flab-0a1b2c-relay", "route", "add", "203.0.113.0/24", "dev",
            "eth0") in relay
    assert not any("default" in r for r in relay)
    assert ("ip", "-n", "flab-0a1b2c-relay", "-6", "route", "add", "2001:db8:1::/64", "via",
            "2001:db8::101", "dev", "eth0") in relay
    a = [r for r in routes if r[2] == "flab-0a1b2c-a"]
    assert a == [("ip", "-n", "flab-0a1b2c-a", "route", "add", "default", "via", "192.168.1.1"),
                 ("ip", "-n", "flab-0a1b2c-a", "-6", "route", "add", "default", "via",
                  "2001:db8:1::1")]


def test_with_latency_the_switch_joins_the_internet() -> None:
    lab_plan = plan(Topology.standard(latency=0.02), NAMES)
    assert [(p.tap, p.netns, p.ifname, p.latency) for p in lab_plan.switch_ports][:2] == [
        ("tap0", "flab-0a1b2c-relay", "eth0", 0.02), ("tap1", "flab-0a1b2c-s1", "eth0", 0.02)]
    assert lab_plan.switch_ports[-1].ifname == "wan0"
    assert not any("bridge" in c.argv and "inet0" in c.argv for c in lab_plan.all_setup())
    assert lab_plan.internet[:2] == (
        Command(("ip", "-n", "flab-0a1b2c-internet", "link", "set", "tap0", "netns",
                 "flab-0a1b2c-relay"), what="switch port"),
        Command(("ip", "-n", "flab-0a1b2c-relay", "link", "set", "tap0", "name", "eth0"),
                what="switch port"))


def test_ipv4_only_labs_turn_ipv6_off() -> None:
    lab_plan = plan(Topology.standard(), NAMES)
    off = {c.argv[3] for c in lab_plan.create
           if "sysctl" in c.argv and "net.ipv6.conf.all.disable_ipv6=1" in c.argv}
    assert off == set(lab_plan.namespaces)
    assert not any("nodad" in c.argv for c in lab_plan.configure)


def test_the_script_is_readable() -> None:
    script = plan(Topology.standard(), NAMES).script()
    assert script.startswith("# setup\nip netns add flab-0a1b2c-internet\n")
    assert "<<EOF\n# flarelab lab router: home_router" in script
    assert script.rstrip().endswith("ip netns del flab-0a1b2c-internet")


def test_names_are_checked() -> None:
    with pytest.raises(LabSetupError, match="prefix"):
        LabNames(prefix="Bad-Prefix")
    with pytest.raises(LabSetupError, match="id"):
        LabNames(lab_id="xyz")
    assert len(LabNames().lab_id) == 6
    assert LabNames(prefix="flabt", lab_id="abcdef").lock_path.name == "flabt-abcdef.lock"


def test_list_lab_namespaces_groups_by_lab(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from flarelab.lab import netns

    for name in ("flab-0a1b2c-a", "flab-0a1b2c-internet", "flab-ffffff-relay", "flabx-0a1b2c-a",
                 "other", "flab-0a1b2c"):
        (tmp_path / name).touch()
    monkeypatch.setattr(netns, "NETNS_DIR", tmp_path)
    assert list_lab_namespaces("flab") == {
        "flab-0a1b2c": ["flab-0a1b2c-a", "flab-0a1b2c-internet"],
        "flab-ffffff": ["flab-ffffff-relay"]}


# ---------------------------------------------------------------------- rulesets
def test_home_router_drops_unsolicited_inbound_at_input() -> None:
    text = ruleset(NatKind.HOME_ROUTER)
    input_chain = text.split("chain input")[1].split("chain forward")[0]
    assert "type filter hook input priority filter;" in input_chain
    assert "policy drop;" in input_chain
    assert 'iifname "lan0" accept' in input_chain
    assert "ct state established,related accept" in input_chain
    assert "nd-neighbor-solicit" in input_chain  # IPv6 neighbour discovery still works
    assert 'oifname "wan0" masquerade\n' in text


def test_answering_router_lets_its_stack_answer() -> None:
    text = ruleset("answering-router")
    input_chain = text.split("chain input")[1].split("chain forward")[0]
    assert "policy accept;" in input_chain and "policy drop" not in input_chain
    assert 'oifname "wan0" masquerade\n' in text


def test_symmetric_nat_picks_random_ports() -> None:
    text = ruleset(NatKind.SYMMETRIC)
    assert 'oifname "wan0" masquerade fully-random' in text
    assert "policy drop;" in text.split("chain input")[1].split("chain forward")[0]


@pytest.mark.parametrize("kind", list(NatKind))
def test_every_kind_forwards_only_replies_inbound(kind: NatKind) -> None:
    forward = ruleset(kind).split("chain forward")[1]
    assert "type filter hook forward priority filter; policy drop;" in forward
    assert 'iifname "lan0" oifname "wan0" accept' in forward


def test_ruleset_refuses_bad_interface_names() -> None:
    with pytest.raises(LocalProtocolError, match="interface"):
        ruleset(NatKind.HOME_ROUTER, wan='wan0"; flush ruleset; "')


def test_the_lab_says_why_it_cannot_run(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from flarelab.lab import netns
    from flarelab.lab.errors import LabUnavailableError

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(LabUnavailableError, match="needs root"):
        netns.check_available()
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns, "_kernel_problem", lambda: "")
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda tool: None if tool == "conntrack" else real_which(tool) or tool)
    with pytest.raises(LabUnavailableError, match=r"conntrack \(apt-get install conntrack\)"):
        netns.check_available()
    monkeypatch.setattr(shutil, "which", real_which)
    monkeypatch.setattr(netns, "_kernel_problem",
                        lambda: "the real NAT lab cannot run here: cannot create a network "
                                "namespace: Operation not permitted")
    with pytest.raises(LabUnavailableError, match="cannot create a network namespace"):
        netns.check_available()


def test_lab_tests_skip_with_the_reason() -> None:
    import lab_helpers

    marks = {mark.name: mark for mark in lab_helpers.needs_lab}
    assert "root" in marks
    skip = marks["skipif"]
    assert skip.kwargs["reason"].startswith("real NAT lab unavailable: ")
    assert skip.args[0] == (lab_helpers.LAB_UNAVAILABLE is not None)
