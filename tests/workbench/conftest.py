"""Fixtures of the workbench tests: a real trace made on simnet, on trio's mock clock.

Rules (as for every flarelab test module): loopback only, port 0, deterministic, no
wall-clock sleeps. The notebook and browser tests run real kernels and a real browser:
they wait on conditions with bounded timeouts, never on fixed sleeps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from flarelab.simnet import Network
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import TracingConfig
from flarelab.tracing.records import SpanRecord

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def workbench_notebooks() -> list[Path]:
    """Return the workbench's notebooks in reading order (``01_*.ipynb`` ... ``05_*``)."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test that takes ``notebook_path`` once per workbench notebook."""
    if "notebook_path" in metafunc.fixturenames:
        metafunc.parametrize("notebook_path", workbench_notebooks(), ids=lambda p: p.stem)


def simnet_trace(nat_b: str | None = None) -> list[SpanRecord]:
    """Return the records of A (behind a home router) dialling the relay over TCP and QUIC,
    pinging it, and (if ``nat_b``) failing to dial B behind that NAT."""
    bus = SpanBus()

    async def main() -> None:
        tracing = TracingConfig(bus=bus, clock=TrioClock())
        async with Network(seed=3, tracing=tracing) as net:
            relay = net.add_host("relay")
            a = net.add_router("NAT A", "home_router").add_host("A")
            b = net.add_router("NAT B", nat_b).add_host("B") if nat_b else None
            async with a.node(dial_timeout=2.0, connect_timeout=1.0) as na, \
                    relay.node() as nr:
                await na.connect(nr.addrs[0])
                await na.ping(nr.peer_id, 2)
                quic = [x for x in nr.addrs if "quic" in str(x)]
                await na.connect(quic[0], force_new=True)
                if b is not None:
                    async with b.node() as nb:
                        with trio.move_on_after(3):
                            try:
                                await na.connect(nb.addrs[0])
                            except Exception:
                                pass
                await trio.sleep(1)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return bus.history()


@pytest.fixture(scope="session")
def trace_records() -> list[SpanRecord]:
    return simnet_trace()


@pytest.fixture(scope="session")
def failing_trace_records() -> list[SpanRecord]:
    return simnet_trace(nat_b="home_router")
