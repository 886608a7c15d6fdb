"""The NAT-type matrix: the whole hole-punch flow on simnet, for every pair of NAT kinds.

One trial is the story end to end on a fresh simulated internet: a public relay (Circuit
Relay v2), A and B each behind a NAT of the given kind (or public); both tell the relay
hello over the trial's transport (so identify gives them their observed addresses), B
reserves a slot, A dials B through the relay, and B upgrades the relayed connection with
DCUtR. The result is a :class:`~flarelab.flare.report.FlareTrial`, the shape the Flare
orchestrator's runs return, so notebooks read one type.

Trials run on trio's ``MockClock`` in virtual time: a failing trial's three rounds of
timeouts cost no real seconds. :func:`run_matrix` is synchronous (it runs its own
``trio.run``); from a notebook call it in a worker thread so the kernel and the live views
stay free::

    trials = await asyncio.to_thread(run_matrix, kinds, ("tcp", "quic"))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import trio
import trio.testing

from ..flare.report import FlareTrial
from ..simnet.nat import PRESETS
from ..simnet.theory import Prediction, predict
from .services import holepunch_config

if TYPE_CHECKING:
    from ..tracing.bus import SpanBus
    from ..tracing.records import SpanRecord

__all__ = ["MATRIX_KINDS", "expected", "punch_trial", "run_matrix", "traced_trial"]

#: the kinds of the matrix: a public host (None) and every simnet NAT preset
MATRIX_KINDS: Final[tuple[str | None, ...]] = (None, *PRESETS)
#: virtual seconds one trial may take at most
TRIAL_TIMEOUT: Final = 120.0


async def punch_trial(nat_a: str | None, nat_b: str | None, transport: str = "quic", *,
                      seed: int = 1, bus: SpanBus | None = None, trial: int = 0
                      ) -> FlareTrial:
    """Run the flow once (module docstring) in the current trio run; return B's verdict."""
    from ..node import NodeConfig
    from ..protocols.dcutr import HolePunchFailed, HolePunchService, HolePunchSucceeded
    from ..protocols.relay import RelayService, RelayTransport
    from ..simnet import Network
    from ..tracing.clock import TrioClock
    from ..tracing.provider import TracingConfig

    quic = transport == "quic"
    tracing = TracingConfig(bus=bus, clock=TrioClock(epoch_ns=0)) if bus is not None else None
    phases: dict[str, float] = {}
    async with Network(seed=seed, tracing=tracing) as net:
        relay_host = net.add_host("relay")
        a_host = (net.add_router("NAT A", nat_a).add_host("A") if nat_a
                  else net.add_host("A"))
        b_host = (net.add_router("NAT B", nat_b).add_host("B") if nat_b
                  else net.add_host("B"))
        config = NodeConfig(enable_quic=quic)
        async with (relay_host.node(enable_quic=quic) as relay, a_host.node(config) as a,
                    b_host.node(config) as b):
            RelayService(relay)
            for node in (a, b):
                RelayTransport.install(node)
                HolePunchService(node, holepunch_config())
            relay_addr = next(x for x in relay.addrs if ("quic-v1" in str(x)) == quic)
            with trio.fail_after(TRIAL_TIMEOUT):
                t0 = trio.current_time()
                await b.listen(f"{relay_addr}/p2p-circuit")
                phases["reserve"] = trio.current_time() - t0
                await a.identify_peer(relay_addr)
                with b.events.subscribe(HolePunchSucceeded, HolePunchFailed) as events:
                    t0 = trio.current_time()
                    await a.connect(f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}")
                    phases["relayed_dial"] = trio.current_time() - t0
                    t0 = trio.current_time()
                    done = await events.next()
                    phases["upgrade"] = trio.current_time() - t0
    result = done.result
    return FlareTrial(
        transport=transport, nat_a=nat_a, nat_b=nat_b, outcome=result.outcome,
        direct=result.ok, reason=result.reason,
        elapsed=result.elapsed if result.ok else None, attempts=result.attempts,
        address=str(result.address) if result.address is not None else None,
        phases=phases, trial=trial)


def run_matrix(kinds: Sequence[str | None] = MATRIX_KINDS,
               transports: Iterable[str] = ("tcp", "quic"), *, seed: int = 1
               ) -> list[FlareTrial]:
    """Run one trial per (A's kind, B's kind, transport), in virtual time; return them all."""
    pairs = [(a, b, t) for t in transports for a in kinds for b in kinds]

    async def main() -> list[FlareTrial]:
        out = []
        for i, (a, b, t) in enumerate(pairs):
            out.append(await punch_trial(a, b, t, seed=seed, trial=i))
        return out

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def traced_trial(nat_a: str | None, nat_b: str | None, transport: str = "quic", *,
                 seed: int = 1) -> tuple[FlareTrial, list[SpanRecord]]:
    """Run one trial in virtual time with every span recorded; return it and its records."""
    from ..tracing.bus import SpanBus

    bus = SpanBus()

    async def main() -> FlareTrial:
        return await punch_trial(nat_a, nat_b, transport, seed=seed, bus=bus)

    trial = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    records = bus.history()
    with contextlib.suppress(Exception):
        bus.close()
    return trial, records


def expected(trial: FlareTrial) -> Prediction:
    """Return what RFC 4787 predicts for a trial (:func:`flarelab.simnet.theory.predict`).

    A public A is reached by B's connection reversal (DCUtR's ``direct_dial``), which the
    theory's punch does not model: that is a success too.
    """
    if trial.nat_a is None:
        return Prediction(True, "A is public: B dials it directly (connection reversal)")
    return predict(PRESETS.get(trial.nat_a), PRESETS.get(trial.nat_b or ""),
                   transport="udp" if trial.transport == "quic" else "tcp")
