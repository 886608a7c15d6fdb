"""The real lab (root): it builds, isolates, answers as each NAT kind should, runs nodes, and
always tears down -- after errors, on cancellation, and after a run that was killed.

Skipped, with the reason, where the lab cannot run (not root, tools missing). Every lab here
uses the test prefix, so cleanup of stale labs never touches another run's labs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

import lab_helpers
import pytest
import trio

from flarelab.lab import Lab, LabProcess, NatKind, Topology
from flarelab.lab.errors import LabSetupError
from flarelab.lab.netns import LOCK_DIR, Command, cleanup_stale, list_lab_namespaces
from flarelab.lab.probes import listen_server, ping_node, reach, serve_node

pytestmark = lab_helpers.needs_lab
PREFIX = lab_helpers.TEST_PREFIX


def _namespaces(stem: str) -> list[str]:
    return list_lab_namespaces(PREFIX).get(stem, [])


async def _probe_all(agent: LabProcess, targets: Sequence[str], transports: Sequence[str],
                     *, port: int) -> dict[tuple[str, str], str]:
    """Probe every target over every transport at once; return the outcomes."""
    outcomes: dict[tuple[str, str], str] = {}

    async def one(target: str, transport: str) -> None:
        probe = functools.partial(reach, ip=target, port=port, transport=transport, timeout=0.5)
        outcomes[target, transport] = (await agent.call(probe))["outcome"]

    async with trio.open_nursery() as nursery:
        for target in targets:
            for transport in transports:
                nursery.start_soon(one, target, transport)
    return outcomes


async def test_a_lab_builds_runs_and_leaves_nothing_behind() -> None:
    topology = Topology.standard("home_router", "symmetric", ipv6=True)
    with trio.fail_after(60):
        async with Lab(topology, prefix=PREFIX) as lab:
            stem = lab.names.stem
            assert sorted(_namespaces(stem)) == sorted(lab.plan.namespaces)
            assert lab.names.lock_path.exists()
            where = await lab.run("a", functools.partial(lab_helpers.describe, extra="x"))
            assert where["host"] == "a" and where["public_ip"] == "203.0.113.1"
            assert where["router"] == "nat-a"
            addresses = (await lab.exec("b", "ip", "-brief", "addr")).stdout.decode()
            assert "192.168.2.2/24" in addresses and "2001:db8:2::2/64" in addresses
            run_dir = lab.run_dir
            assert (run_dir / "plan.sh").read_text().startswith("# setup")
    assert _namespaces(stem) == []
    assert not lab.names.lock_path.exists()
    assert not run_dir.exists()
    assert lab.results()[0]["value"] == where


@pytest.mark.parametrize("kind", list(NatKind))
async def test_without_punching_a_cannot_reach_b(kind: NatKind) -> None:
    """B listens on TCP and UDP 4001; nothing A sends reaches it, however addressed."""
    topology = Topology.standard("home_router", kind, ipv6=True)
    nat_b, b = topology.router("nat-b"), topology.host("b")
    with trio.fail_after(60):
        async with Lab(topology, prefix=PREFIX) as lab:
            listening = await lab.start("b", functools.partial(listen_server, port=4001))
            relay = await lab.start("relay", functools.partial(listen_server, port=4001))
            agent = await lab.agent("a")
            # the relay shows that the probes work: it answers both
            targets = (nat_b.wan_ip, b.ip, b.ip6, "198.51.100.1")
            outcomes = await _probe_all(agent, targets, ("tcp", "udp"), port=4001)
            assert outcomes["198.51.100.1", "tcp"] == "connected"
            assert outcomes["198.51.100.1", "udp"] == "answered"
            assert await listening.stop() == {"tcp": 0, "udp": 0}
            assert await relay.stop() == {"tcp": 1, "udp": 1}
    answering = kind is NatKind.ANSWERING_ROUTER
    assert outcomes[nat_b.wan_ip, "tcp"] == ("refused" if answering else "timeout")
    assert outcomes[nat_b.wan_ip, "udp"] == ("refused" if answering else "timeout")
    assert outcomes[b.ip, "tcp"] == "unreachable"  # no route to anyone's LAN
    assert outcomes[b.ip, "udp"] == "timeout"
    assert outcomes[b.ip6, "tcp"] == outcomes[b.ip6, "udp"] == "timeout"  # the IPv6 firewall


def _machine_addresses() -> list[str]:
    """This machine's own global IPv4 addresses (outside every lab)."""
    words = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                           capture_output=True, text=True, check=False).stdout.split()
    return [w.split("/")[0] for i, w in enumerate(words) if i and words[i - 1] == "inet"]


async def test_the_lab_has_no_path_to_any_real_network() -> None:
    machine = _machine_addresses()
    with trio.fail_after(60):
        async with Lab(Topology.standard(), prefix=PREFIX) as lab:
            internet = (await lab.exec("internet", "ip", "-o", "addr")).stdout.decode()
            assert " inet " not in internet  # the internet namespace has no addresses
            for host in ("a", "relay"):
                targets = ("8.8.8.8", "10.0.0.1", *machine[:2])
                outcomes = await _probe_all(await lab.agent(host), targets, ("tcp",), port=53)
                assert set(outcomes.values()) <= {"unreachable", "timeout"}, outcomes


async def test_an_error_inside_the_lab_propagates_as_is_and_the_lab_is_gone() -> None:
    lab = Lab(Topology.standard(servers=0), prefix=PREFIX)

    async def fail_inside() -> None:
        async with lab:
            await lab.start("relay", functools.partial(listen_server, port=4001))
            raise ValueError("boom")

    with trio.fail_after(60), pytest.raises(ValueError, match="boom"):
        await fail_inside()
    assert _namespaces(lab.names.stem) == []


async def test_a_cancelled_lab_is_torn_down() -> None:
    lab = Lab(Topology.standard(servers=0), prefix=PREFIX)
    entered = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            async def use() -> None:
                async with lab:
                    await lab.start("relay", functools.partial(listen_server, port=4001))
                    entered.set()
                    await trio.sleep_forever()

            nursery.start_soon(use)
            await entered.wait()
            nursery.cancel_scope.cancel()
    assert _namespaces(lab.names.stem) == []


_KILLED_LAB = """
import functools, sys, trio
from flarelab.lab import Lab, Topology
from flarelab.lab.probes import listen_server
async def main():
    async with Lab(Topology.standard(servers=0, latency=0.001), prefix=sys.argv[1]) as lab:
        await lab.start("relay", functools.partial(listen_server, port=4001))
        print("up", lab.names.stem, flush=True)
        await trio.sleep_forever()
trio.run(main)
"""


async def test_a_killed_lab_is_cleaned_up_and_a_live_one_is_not() -> None:
    with trio.fail_after(90):
        async with Lab(Topology.standard(servers=0), prefix=PREFIX) as live:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", _KILLED_LAB, PREFIX], stdout=subprocess.PIPE)
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(100)
                assert chunk, "the lab in the subprocess did not come up"
                line += chunk
            stem = line.split()[1].decode()
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
            assert _namespaces(stem), "a killed lab leaves its namespaces behind"
            removed = await cleanup_stale(PREFIX)
            assert stem in removed
            assert _namespaces(stem) == []
            assert not (LOCK_DIR / f"{stem}.lock").exists()
            # the live lab was left alone and still works
            assert sorted(_namespaces(live.names.stem)) == sorted(live.plan.namespaces)
            assert (await live.run("a", lab_helpers.describe))["host"] == "a"
    assert _namespaces(live.names.stem) == []


async def test_switching_nat_kinds_and_flushing_conntrack() -> None:
    with trio.fail_after(60):
        async with Lab(Topology.standard("home_router", "home_router", servers=0),
                       prefix=PREFIX) as lab:
            await lab.start("b", functools.partial(listen_server, port=4001))
            await lab.start("relay", functools.partial(listen_server, port=4001))
            agent = await lab.agent("a")
            probe = functools.partial(reach, ip="203.0.113.2", port=4001, timeout=0.5)
            assert (await agent.call(probe))["outcome"] == "timeout"
            await lab.set_nat("nat-b", "answering_router")
            assert lab.topology.nat_of("b") is NatKind.ANSWERING_ROUTER
            assert (await agent.call(probe))["outcome"] == "refused"
            await lab.set_nat("nat-b", NatKind.HOME_ROUTER)
            assert (await agent.call(probe))["outcome"] == "timeout"
            to_relay = functools.partial(reach, ip="198.51.100.1", port=4001, timeout=0.5)
            assert (await agent.call(to_relay))["outcome"] == "connected"
            entries = await lab.conntrack("nat-a")
            assert any("dst=198.51.100.1" in e and "dport=4001" in e for e in entries)
            await lab.flush_conntrack()
            assert await lab.conntrack("nat-a") == []


@pytest.mark.parametrize("transport", ["tcp", "quic"])
async def test_nodes_run_in_the_lab_and_their_spans_come_back(transport: str) -> None:
    with trio.fail_after(90):
        async with Lab(Topology.standard(servers=0), prefix=PREFIX) as lab:
            relay = await lab.start("relay", serve_node)
            addr = next(a for a in relay.info["addrs"]
                        if a.startswith("/ip4/198.51.100.1/") and f"/{transport}" in a)
            pinged = await lab.run("a", functools.partial(ping_node, addr=addr, count=3))
            assert len(pinged["rtts_ms"]) == 3 and all(r > 0 for r in pinged["rtts_ms"])
            summary = await relay.stop()
            assert summary["peer_id"] == relay.info["peer_id"]
        spans = lab.spans()
    labels = {s.resource.get("libp2p.node_label") for s in spans}
    assert {"a", "relay"} <= labels
    pings = [s for s in spans if s.name == "ping" and s.resource["libp2p.node_label"] == "a"]
    assert len(pings) == 1 and pings[0].attributes["libp2p.rtt_ms"] > 0
    assert pings[0].attributes["libp2p.remote_peer_id"] == relay.info["peer_id"]


async def test_internet_latency_comes_from_the_user_space_switch() -> None:
    topology = Topology.standard(servers=0, latency=0.005, ipv6=True)
    with trio.fail_after(60):
        async with Lab(topology, prefix=PREFIX) as lab:
            assert lab.plan.switch_ports
            await lab.start("relay", functools.partial(listen_server, port=4001))
            # A -> nat-a -> internet -> relay: two attachments of 5 ms each way
            agent = await lab.agent("a")
            for ip in ("198.51.100.1", "2001:db8::1"):
                probe = functools.partial(reach, ip=ip, port=4001, timeout=2.0)
                result = await agent.call(probe)
                assert result["outcome"] == "connected", result
                assert 0.019 <= result["elapsed"] <= 0.08, result
            internet = (await lab.exec("internet", "ip", "-o", "link")).stdout.decode()
            assert "tap" not in internet  # every TAP was moved out to its host
        assert lab._switch is not None and lab._switch.returncode is not None


async def test_a_failing_setup_command_is_reported_and_nothing_is_left() -> None:
    lab = Lab(Topology.standard(servers=0), prefix=PREFIX)
    broken = Command(("ip", "-n", lab.names.netns("a"), "link", "set", "no-such-link", "up"),
                     what="a broken step")
    lab.plan = dataclasses.replace(lab.plan, configure=(*lab.plan.configure, broken))
    with trio.fail_after(60), pytest.raises(LabSetupError) as caught:
        await lab.__aenter__()
    assert "a broken step failed" in str(caught.value)
    assert "no-such-link" in caught.value.command and caught.value.stderr
    assert _namespaces(lab.names.stem) == []
    assert not lab.names.lock_path.exists()
