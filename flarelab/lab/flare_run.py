"""The whole Flare flow in the real kernel-NAT lab: AutoNAT, reservation, relayed dial, DCUtR.

    from flarelab.lab import Lab, Topology
    from flarelab.lab.flare_run import run_flare_lab

    async with Lab(Topology.standard("home_router", "home_router")) as lab:
        trials = await run_flare_lab(lab, transport="quic", trials=5)
    print(summarize(trials).line())

The lab must be a :meth:`~flarelab.lab.Topology.standard` one (or any topology with hosts
``relay``, ``a`` and ``b`` and public AutoNAT servers ``s1``, ``s2``, ...). The relay and
the servers run for the whole call; every trial then takes fresh A and B nodes (new keys,
a new port) after flushing the routers' conntrack tables:

1. B joins the servers and the relay; AutoNAT says private; B reserves on the relay and
   advertises its circuit address;
2. A joins them too and dials B's circuit address: a relayed, limited connection;
3. B's DCUtR upgrades it (connection reversal if A looks public, else CONNECT/SYNC and
   a TCP simultaneous open or a QUIC punch); the trial records the outcome, the time from
   the relayed connection to the direct one, the attempts, the winning address and
   transport, the phase times, the relayed RTT and both sides' reachability.

Every node's spans land in the lab's trace file (``lab.spans()``, ``lab.trace_file``).
:func:`check_no_direct_path` is the control: without hole punching, A cannot reach B.
The node programs live in :mod:`flarelab.lab.flare_nodes`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import trio

from ..errors import LocalProtocolError
from ..flare.report import FlareTrial
from .errors import LabError, LabProcessError
from .flare_nodes import (
    FlareLabSettings,
    dial_circuit,
    dial_without_punching,
    flare_dialer,
    flare_listener,
    observed_listener,
    serve_autonat,
    serve_relay,
)
from .lab import Lab
from .proc import LabProcess, LabTask

__all__ = ["FlareLabSettings", "Infrastructure", "check_no_direct_path", "describe_trials",
           "infrastructure", "run_flare_lab"]

#: A and B take ports from here up, one per trial
FIRST_PORT: Final = 4100
#: the lab-side bound on one trial beyond B's own waits
TRIAL_SLACK: Final = 30.0

Progress = Callable[[str], None]


@dataclass
class Infrastructure:
    """The public side of the lab: the relay's and the AutoNAT servers' addresses."""

    relay: list[str]
    servers: list[list[str]]
    relay_kind: Literal["flarelab", "js"] = "flarelab"


def _servers_of(lab: Lab) -> list[str]:
    return [h.name for h in lab.topology.public if h.name.startswith("s")]


def _check_topology(lab: Lab) -> None:
    names = lab.topology.names()
    missing = [n for n in ("relay", "a", "b") if n not in names]
    if missing:
        raise LocalProtocolError(f"the Flare lab needs hosts relay, a and b (missing: "
                                 f"{', '.join(missing)}): use Topology.standard(...)")
    if not _servers_of(lab):
        raise LocalProtocolError("the Flare lab needs public AutoNAT servers s1, s2, ...")


@contextlib.asynccontextmanager
async def infrastructure(lab: Lab, settings: FlareLabSettings | None = None, *,
                         relay: Literal["flarelab", "js"] = "flarelab",
                         progress: Progress | None = None) -> AsyncIterator[Infrastructure]:
    """Run the relay (flarelab's, or a js-libp2p one) and the AutoNAT servers for the
    block; stop them at its end, so their spans are in the trace."""
    _check_topology(lab)
    settings = settings or FlareLabSettings()
    say = progress or (lambda _: None)
    tasks: list[LabTask] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            servers: list[list[str]] = []

            async def server(name: str) -> None:
                task = await lab.start(name, functools.partial(serve_autonat,
                                                               settings=settings.to_dict()))
                tasks.append(task)
                servers.append(task.info["addrs"])

            async with trio.open_nursery() as nursery:
                for name in _servers_of(lab):
                    nursery.start_soon(server, name)
                if relay == "flarelab":
                    task = await lab.start("relay", functools.partial(
                        serve_relay, settings=settings.to_dict()))
                    tasks.append(task)
                    relay_addrs: list[str] = task.info["addrs"]
            if relay == "js":
                from .flare_js import js_relay

                js = await stack.enter_async_context(js_relay(lab, "relay"))
                relay_addrs = js.addrs
            also = " (also an AutoNAT server)" if relay == "flarelab" else ""
            say(f"the {relay} relay{also} and {len(servers)} AutoNAT servers are up")
            yield Infrastructure(relay=relay_addrs, servers=servers, relay_kind=relay)
    finally:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for task in tasks:
                    nursery.start_soon(task.aclose)


async def run_flare_lab(
    lab: Lab,
    *,
    transport: Literal["tcp", "quic"] = "tcp",
    trials: int = 1,
    family: Literal[4, 6] = 4,
    on_trial: Callable[[FlareTrial], None] | None = None,
    progress: Progress | None = None,
    settings: FlareLabSettings | None = None,
    relay: Literal["flarelab", "js"] = "flarelab",
    first_trial: int = 0,
    infra: Infrastructure | None = None,
) -> list[FlareTrial]:
    """Run ``trials`` Flare flows in ``lab`` (see the module docstring); return them.

    ``on_trial`` gets each trial as it ends; ``progress`` gets one line per phase.
    ``relay="js"`` serves A and B with a js-libp2p relay. ``infra``: the relay and servers
    of an :func:`infrastructure` block to use (default: started and stopped here); give
    later calls a higher ``first_trial`` (it picks the trial's ports). Raises :class:`LabError` only
    when the lab itself fails; a flow that stops early is a trial with outcome
    ``not_started`` and a reason.
    """
    if transport not in ("tcp", "quic"):
        raise LocalProtocolError(f"transport must be tcp or quic, not {transport!r}")
    if family not in (4, 6):
        raise LocalProtocolError(f"family must be 4 or 6, not {family!r}")
    if family == 6 and not lab.topology.ipv6:
        raise LocalProtocolError("family=6 needs a dual-stack lab: Topology.standard(ipv6=True)")
    _check_topology(lab)
    base = settings or FlareLabSettings()
    # AutoNAT servers: s1... and a flarelab relay; observers: every public node
    if infra is not None:
        relay = infra.relay_kind
    answering = len(_servers_of(lab)) + (relay == "flarelab")
    base = FlareLabSettings.from_dict({
        **base.to_dict(), "transport": transport, "family": family,
        "autonat_confidence": min(base.autonat_confidence, answering - 1),
        "observers": min(base.observers, len(_servers_of(lab)) + 1)})
    say = progress or (lambda _: None)
    out: list[FlareTrial] = []
    async with contextlib.AsyncExitStack() as stack:
        if infra is None:
            infra = await stack.enter_async_context(
                infrastructure(lab, base, relay=relay, progress=say))
        agents: dict[str, LabProcess] = {}
        try:
            async with trio.open_nursery() as nursery:
                async def spawn(host: str) -> None:
                    agents[host] = await lab.agent(host)
                for host in ("a", "b"):
                    nursery.start_soon(spawn, host)
            for index in range(first_trial, first_trial + trials):
                trial_settings = FlareLabSettings.from_dict(
                    {**base.to_dict(), "port": FIRST_PORT + index % 1000})
                trial = await _trial(lab, infra, agents, trial_settings, index, say)
                out.append(trial)
                if on_trial is not None:
                    on_trial(trial)
        finally:
            with trio.CancelScope(shield=True):
                for agent in agents.values():
                    await agent.aclose()
    return out


def _nat(lab: Lab, host: str) -> str | None:
    kind = lab.topology.nat_of(host)
    return kind.value if kind is not None else None


async def _trial(lab: Lab, infra: Infrastructure, agents: dict[str, LabProcess],
                 settings: FlareLabSettings, index: int, say: Progress) -> FlareTrial:
    """One trial: fresh A and B, flushed conntrack (see the module docstring)."""
    await lab.flush_conntrack()
    common: dict[str, Any] = {"transport": settings.transport, "nat_a": _nat(lab, "a"),
                              "nat_b": _nat(lab, "b"), "ipv6": settings.family == 6,
                              "trial": index}
    punched = trio.Event()
    report: dict[str, Any] = {}

    def on_progress(data: Any) -> None:
        if isinstance(data, dict) and "holepunch" in data:
            report.update(data["holepunch"])
            punched.set()

    bound = settings.autonat_wait + settings.holepunch_wait + TRIAL_SLACK
    b_task: LabTask | None = None
    a_task: LabTask | None = None
    b_end: dict[str, Any] = {}
    a_end: dict[str, Any] = {}
    try:
        with trio.fail_after(bound):
            session = f"trial-{index}"
            a_settings = {**settings.to_dict(), "port": settings.port + 1000}
            async with trio.open_nursery() as nursery:
                async def start_a() -> None:
                    nonlocal a_task
                    a_task = await agents["a"].start(
                        functools.partial(flare_dialer, settings=a_settings,
                                          relay=infra.relay, servers=infra.servers,
                                          session=session), timeout=TRIAL_SLACK)
                nursery.start_soon(start_a)
                b_task = await agents["b"].start(
                    functools.partial(flare_listener, settings=settings.to_dict(),
                                      relay=infra.relay, servers=infra.servers),
                    timeout=settings.autonat_wait + TRIAL_SLACK, on_progress=on_progress)
            assert a_task is not None
            info = b_task.info
            phases: dict[str, float] = dict(info.get("phases", {}))
            phases.update(a_task.info.get("phases", {}))
            if "error" in info:
                say(f"trial {index}: B: {info['error']}")
                return FlareTrial(outcome="not_started", direct=False, reason=info["error"],
                                  phases=phases, reachability_b=info.get("reachability",
                                                                         "unknown"), **common)
            say(f"trial {index}: B private after {phases.get('autonat', 0):.2f} s, reserved "
                f"on the relay ({phases.get('reserve', 0) * 1000:.0f} ms)")
            dialled = await agents["a"].call(
                functools.partial(dial_circuit, session=session, circuit=info["circuit"]),
                timeout=TRIAL_SLACK)
            phases["relayed_dial"] = dialled["relayed_dial"]
            say(f"trial {index}: A dialled B through the relay "
                f"({phases['relayed_dial'] * 1000:.0f} ms)")
            with trio.move_on_after(settings.holepunch_wait + 5.0):
                await punched.wait()
            a_end = await a_task.stop() or {}  # A first: it looks at its direct connection
            b_end = await b_task.stop() or {}
    except LabProcessError as exc:
        say(f"trial {index}: {exc}")
        return FlareTrial(outcome="not_started", direct=False, reason=str(exc), **common)
    except trio.TooSlowError:
        return FlareTrial(outcome="not_started", direct=False,
                          reason=f"the trial took over {bound:g} s", **common)
    finally:
        with trio.CancelScope(shield=True):
            for task in (a_task, b_task):
                if task is not None:
                    await task.aclose()
    return _make_trial(common, phases, report, a_end, b_end)


def _make_trial(common: dict[str, Any], phases: dict[str, float], report: dict[str, Any],
                a_end: dict[str, Any], b_end: dict[str, Any]) -> FlareTrial:
    reach = {"reachability_a": a_end.get("reachability", "unknown"),
             "reachability_b": b_end.get("reachability", "unknown")}
    if not report:
        return FlareTrial(outcome="not_started", direct=False,
                          reason="B's DCUtR upgrade did not start or end in time",
                          phases=phases, **reach, **common)
    direct = bool(report.get("ok")) and a_end.get("direct") is not None
    reason = report.get("reason", "")
    if report.get("ok") and not direct:
        reason = "B reported a direct connection, but A has none"
    if report.get("elapsed") is not None:
        phases["upgrade"] = report["elapsed"]
    if report.get("rtt") is not None:
        phases["relayed_rtt"] = report["rtt"]
    return FlareTrial(
        outcome=report.get("outcome", "failed"), direct=direct, reason=reason,
        elapsed=report.get("elapsed") if direct else None,
        attempts=int(report.get("attempts", 0)), address=report.get("address"),
        phases=phases, **reach, **common)


# ---------------------------------------------------------------------- the control
async def check_no_direct_path(lab: Lab, *, transport: Literal["tcp", "quic"] = "tcp",
                               family: Literal[4, 6] = 4,
                               timeout: float = 2.0,  # noqa: ASYNC109 -- per target
                               ) -> dict[str, Any]:
    """Show that without hole punching A cannot reach B directly.

    B (no DCUtR) connects to the relay, so its router holds a mapping for it; A then dials
    B directly at the address the relay observed (B's public mapping) and at B's own
    listen addresses. Returns ``{"observed": [...], "attempts": [{"target", "connected",
    "error", "elapsed"}, ...]}``; no attempt should connect.
    """
    _check_topology(lab)
    settings = FlareLabSettings(transport=transport, family=family, port=FIRST_PORT - 1)
    await lab.flush_conntrack()
    task = await lab.start("relay", functools.partial(serve_relay,
                                                      settings=settings.to_dict()))
    try:
        relay_addrs = task.info["addrs"]
        b = await lab.start("b", functools.partial(observed_listener,
                                                   settings=settings.to_dict(),
                                                   relay=relay_addrs))
        try:
            info = b.info
            peer = info["peer_id"]
            targets = [f"{a}/p2p/{peer}" for a in [*info["observed"], *info["listen"]]]
            if not info["observed"]:
                raise LabError("B has no observed address: the relay did not report one")
            attempts = await lab.run("a", functools.partial(
                dial_without_punching, settings={**settings.to_dict(),
                                                 "port": FIRST_PORT - 2},
                targets=targets, timeout=timeout), timeout=timeout * len(targets) + 30)
        finally:
            await b.aclose()
    finally:
        await task.aclose()
    return {"observed": info["observed"], "attempts": attempts}


def describe_trials(trials: Sequence[FlareTrial]) -> list[str]:
    """One readable line per trial (with the phase times)."""
    lines = []
    for trial in trials:
        phases = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in trial.phases.items())
        lines.append(f"{trial.describe()} [{phases}]")
    return lines
