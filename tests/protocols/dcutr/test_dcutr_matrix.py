"""The NAT-type matrix with the whole DCUtR flow on simnet, against RFC 4787's predictions.

For every pair of NAT kinds (and public hosts), over TCP and over QUIC: A dials B through
the relay, B upgrades. Where A is public, B's connection reversal reaches it
(``direct_dial``). Elsewhere the outcome must agree with :func:`flarelab.simnet.theory.predict`
for packets that cross in the internet (DCUtR's aim): a success on the first attempt, or
``failed`` after three attempts with a reason that names the symmetric NAT when one moved
the port. Slow as a whole (about 15 s); test_dcutr_simnet.py keeps the rows that matter
most in the fast suite.
"""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from dcutr_helpers import next_event, scenario

from flarelab.protocols.dcutr import HolePunchFailed, HolePunchSucceeded
from flarelab.simnet import PRESETS
from flarelab.simnet.theory import predict

KINDS: list[str | None] = [None, *PRESETS]
PAIRS = list(itertools.product(KINDS, KINDS))


@pytest.mark.slow
@pytest.mark.parametrize(("kind_a", "kind_b"), PAIRS,
                         ids=[f"{a or 'public'}-{b or 'public'}" for a, b in PAIRS])
async def test_the_matrix_agrees_with_rfc_4787(
    kind_a: str | None, kind_b: str | None, autojump_clock: trio.testing.MockClock,
) -> None:
    for transport in ("tcp", "quic"):
        async with scenario(kind_a, kind_b, transport=transport) as sc:
            await sc.relayed()
            event = await next_event(sc.b, HolePunchSucceeded, HolePunchFailed)
        result = event.result
        if kind_a is None:
            assert (result.outcome, result.attempts) == ("direct_dial", 0), transport
            continue
        theory = predict(PRESETS.get(kind_a or ""), PRESETS.get(kind_b or ""),
                         transport="tcp" if transport == "tcp" else "udp")
        if theory.success:
            assert (result.outcome, result.attempts) == ("success", 1), (transport, result)
        else:
            assert (result.outcome, result.attempts) == ("failed", 3), (transport, result)
            assert result.reason.startswith("no direct connection after 3 attempts")
            if "symmetric" in (kind_a, kind_b):
                assert "a symmetric NAT" in result.reason, result.reason
