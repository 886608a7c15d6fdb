"""The whole Flare flow in the real kernel-NAT lab (root): AutoNAT, reservation, DCUtR.

Each test builds a :meth:`Topology.standard` lab (a relay, three AutoNAT servers, A and B
behind NAT routers) and runs :func:`flarelab.lab.flare_run.run_flare_lab`: fresh A and B
per trial, flushed conntrack. Home routers go direct over TCP and QUIC; over IPv6 the
routers are stateful firewalls and the punch goes through too; symmetric NATs fail with a
reason a learner can read; without hole punching A cannot reach B at all; a js-libp2p
relay serves flarelab's A and B just as well; the CLI runs it end to end. After each test
nothing of the lab is left (namespaces, and with them the routers' nftables tables).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lab_helpers
import pytest
import trio

from flarelab.flare.report import FlareTrial, summarize
from flarelab.lab import Lab, NatKind, Topology
from flarelab.lab.flare_js import js_available
from flarelab.lab.flare_nodes import FlareLabSettings
from flarelab.lab.flare_run import (
    check_no_direct_path,
    describe_trials,
    infrastructure,
    run_flare_lab,
)

pytestmark = [*lab_helpers.needs_lab, pytest.mark.slow]
PREFIX = lab_helpers.TEST_PREFIX
HOME, SYM = NatKind.HOME_ROUTER, NatKind.SYMMETRIC
#: the lab ids the tests of this module built
BUILT: list[str] = []


def _lab(topology: Topology) -> Lab:
    lab = Lab(topology, prefix=PREFIX)
    BUILT.append(lab.id)
    return lab


def _leftovers(lab_id: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    return [line.split()[0] for line in names.splitlines() if f"-{lab_id}-" in line]


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After each test: no namespace of the labs it built (their nft tables went with them),
    and no flarelab nftables table in the machine's own namespace."""
    BUILT.clear()
    yield
    for lab_id in BUILT:
        assert _leftovers(lab_id) == [], f"lab {lab_id} left namespaces behind"
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=False).stdout
    assert "flarelab" not in tables


def _report(trials: list[FlareTrial]) -> str:
    return "\n".join(describe_trials(trials))


def _all_direct(trials: list[FlareTrial], transport: str, *, ipv6: bool = False) -> None:
    report = _report(trials)
    assert trials and all(t.direct and t.outcome == "success" for t in trials), report
    for t in trials:
        assert t.transport == transport and t.ipv6 is ipv6
        assert t.reachability_b == "private" and t.reachability_a == "private", report
        assert t.elapsed is not None and t.elapsed < 2.0, report
        assert t.address is not None and ("/quic-v1" in t.address) == (transport == "quic")
        assert t.address.startswith("/ip6/" if ipv6 else "/ip4/203.0.113."), report
        assert {"autonat", "reserve", "relayed_dial", "upgrade", "relayed_rtt"} <= set(t.phases)


async def test_home_routers_go_direct_over_tcp_and_quic() -> None:
    with trio.fail_after(90):
        async with _lab(Topology.standard(HOME, HOME)) as lab:
            async with infrastructure(lab) as infra:
                tcp = await run_flare_lab(lab, transport="tcp", trials=2, infra=infra)
                quic = await run_flare_lab(lab, transport="quic", trials=2, first_trial=2,
                                           infra=infra)
            spans = lab.spans()
    _all_direct(tcp, "tcp")
    _all_direct(quic, "quic")
    # one trace: every node's phases, labelled by host
    names = {(s.node_label, s.name) for s in spans}
    for expected in [("b", "autonat.probe"), ("s1", "autonat.dial_back"),
                     ("b", "relay.reserve"), ("relay", "relay.circuit"),
                     ("a", "relay.connect"), ("b", "dcutr.upgrade"), ("a", "dcutr.attempt"),
                     ("b", "holepunch.dial"), ("a", "holepunch.dial")]:
        assert expected in names, sorted(names)
    upgrades = [s for s in spans if s.name == "dcutr.upgrade"]
    assert len(upgrades) == 4
    assert {s.attributes["libp2p.outcome"] for s in upgrades} == {"success"}
    assert summarize([*tcp, *quic]).direct == 4


async def test_the_ipv6_firewalls_let_the_punch_through() -> None:
    with trio.fail_after(90):
        async with (_lab(Topology.standard(HOME, HOME, ipv6=True)) as lab,
                    infrastructure(lab) as infra):
            trials = await run_flare_lab(lab, transport="tcp", trials=1, family=6,
                                         infra=infra)
            trials += await run_flare_lab(lab, transport="quic", trials=1, family=6,
                                          first_trial=1, infra=infra)
    report = _report(trials)
    assert all(t.direct for t in trials), report
    # no translation: the direct connection reaches A's own address (LAN 1)
    assert all(t.address is not None and t.address.startswith("/ip6/2001:db8:1::2/")
               for t in trials), report


async def test_symmetric_nats_fail_with_a_readable_reason() -> None:
    settings = FlareLabSettings(punch_timeout=1.0)
    with trio.fail_after(90):
        async with _lab(Topology.standard(SYM, SYM)) as lab:
            trials = await run_flare_lab(lab, transport="tcp", trials=1, settings=settings)
    report = _report(trials)
    (trial,) = trials
    assert not trial.direct and trial.outcome in ("failed", "no_suitable_address"), report
    assert trial.reachability_b == "private", report
    if trial.outcome == "no_suitable_address":
        # every observer saw B at another port, so no observed address got confirmed
        assert "no public address to offer" in trial.reason, report
    else:  # offered anyway: every punch aimed at a port the NAT does not use for A
        assert "symmetric NAT" in trial.reason and "defeats hole punching" in trial.reason
    assert trial.elapsed is None


async def test_without_hole_punching_a_cannot_reach_b() -> None:
    with trio.fail_after(60):
        async with _lab(Topology.standard(HOME, HOME)) as lab:
            tcp = await check_no_direct_path(lab, transport="tcp", timeout=0.5)
            quic = await check_no_direct_path(lab, transport="quic", timeout=0.5)
    for result in (tcp, quic):
        # B's router maps B for the relay (port preserved) ...
        assert result["observed"] and result["observed"][0].startswith("/ip4/203.0.113.2/")
        # ... and still drops A's direct dials to that mapping and to B's LAN address
        targets = [a["target"] for a in result["attempts"]]
        assert any("/203.0.113.2/" in t for t in targets) and any("/192.168.2.2/" in t
                                                                 for t in targets)
        assert not any(a["connected"] for a in result["attempts"]), result
        assert all(a["error"] for a in result["attempts"]), result


@pytest.mark.skipif(js_available() is not None, reason=f"js-libp2p: {js_available()}")
async def test_a_js_libp2p_relay_serves_flarelab_peers_that_then_go_direct() -> None:
    with trio.fail_after(90):
        async with _lab(Topology.standard(HOME, HOME)) as lab:
            trials = await run_flare_lab(lab, transport="tcp", trials=1, relay="js")
            spans = lab.spans()
    _all_direct(trials, "tcp")
    # B reserved on the js relay and A reached B through it (flarelab's spans, js's relay)
    assert ("b", "relay.reserve") in {(s.node_label, s.name) for s in spans}
    assert not [s for s in spans if s.node_label == "relay"]  # the relay is js-libp2p


async def test_the_cli_runs_the_lab_end_to_end(tmp_path: Path) -> None:
    trace = tmp_path / "flare.jsonl"
    argv = [sys.executable, "-m", "flarelab.cli", "lab", "holepunch", "--trials", "2",
            "--trace", str(trace)]
    with trio.fail_after(90):
        done = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    lines = out.strip().splitlines()
    assert re.search(r"direct 2/2 \(100%\), relayed->direct median \d+ ms", lines[-1]), out
    assert sum("success" in line for line in lines if line.strip().startswith("#")) == 2, out
    assert trace.stat().st_size > 0
    match = re.search(r"namespaces built \(lab ([0-9a-f]{6})\)", out)
    assert match, out
    assert _leftovers(match.group(1)) == []
