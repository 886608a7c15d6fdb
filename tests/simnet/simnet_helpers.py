"""Helpers for the simnet tests: a TCP core pair wired with no network at all, and nodes
of a loopback test suite moved onto simulated hosts."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from flarelab.node import Node, NodeConfig
from flarelab.simnet import Network
from flarelab.simnet.packet import Segment
from flarelab.simnet.tcp_connection import TcpConfig, TcpConnection

Fate = Callable[[str, Segment], float | None]  # (direction, segment) -> delay or None (lost)


def constant_delay(delay: float) -> Fate:
    return lambda direction, seg: delay


def lossy(delay: float, loss: float, seed: int, jitter: float = 0.0) -> Fate:
    rng = random.Random(seed)

    def fate(direction: str, seg: Segment) -> float | None:
        if rng.random() < loss:
            return None
        return delay + rng.uniform(0, jitter)

    return fate


@dataclass
class CorePair:
    """Two TCP cores (A, B) exchanging segments through ``fate``, on a virtual clock.

    ``b`` is None until A's SYN arrives (a passive open), unless both open actively.
    ``log`` records (time, direction, segment) of every segment delivered.
    """

    config: TcpConfig = field(default_factory=TcpConfig)
    fate: Fate = field(default_factory=lambda: constant_delay(0.01))
    now: float = 0.0
    a: TcpConnection | None = None
    b: TcpConnection | None = None
    log: list[tuple[float, str, Segment]] = field(default_factory=list)
    sent: list[tuple[float, str, Segment]] = field(default_factory=list)
    _in_flight: list[tuple[float, int, str, Segment]] = field(default_factory=list)
    _order: int = 0

    @classmethod
    def connect(cls, **kw: object) -> CorePair:
        pair = cls(**kw)  # type: ignore[arg-type]
        pair.a = TcpConnection(pair.config, 1000)
        pair.a.connect(pair.now)
        pair.flush()
        return pair

    @classmethod
    def simultaneous(cls, **kw: object) -> CorePair:
        pair = cls(**kw)  # type: ignore[arg-type]
        pair.a = TcpConnection(pair.config, 1000)
        pair.b = TcpConnection(pair.config, 9000)
        pair.a.connect(pair.now)
        pair.b.connect(pair.now)
        pair.flush()
        return pair

    def flush(self) -> None:
        for conn, direction in ((self.a, "a->b"), (self.b, "b->a")):
            if conn is None:
                continue
            for seg in conn.segments_to_send(self.now):
                self.sent.append((self.now, direction, seg))
                delay = self.fate(direction, seg)
                if delay is not None:
                    self._order += 1
                    self._in_flight.append((self.now + delay, self._order, direction, seg))

    def next_time(self) -> float | None:
        times = [t for t, *_ in self._in_flight]
        for conn in (self.a, self.b):
            if conn is not None and conn.timer() is not None:
                times.append(conn.timer())  # type: ignore[arg-type]
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next event and process it; False when nothing is left to do."""
        when = self.next_time()
        if when is None:
            return False
        self.now = max(self.now, when)
        due = sorted(x for x in self._in_flight if x[0] <= self.now)
        self._in_flight = [x for x in self._in_flight if x[0] > self.now]
        for _, _, direction, seg in due:
            self.log.append((self.now, direction, seg))
            if direction == "a->b":
                if self.b is None:
                    self.b = TcpConnection.from_syn(self.config, 9000, seg, self.now)
                else:
                    self.b.receive(seg, self.now)
            else:
                assert self.a is not None
                self.a.receive(seg, self.now)
        for conn in (self.a, self.b):
            if conn is not None and (t := conn.timer()) is not None and t <= self.now:
                conn.handle_timer(self.now)
        self.flush()
        return True

    def run(self, until: Callable[[], bool] = lambda: False, max_steps: int = 200_000,
            on_step: Callable[[], None] | None = None) -> None:
        for _ in range(max_steps):
            if on_step is not None:
                on_step()
                self.flush()
            if until() or not self.step():
                return
        raise AssertionError("the pair did not settle")

    def flags(self, direction: str | None = None) -> list[str]:
        """The segments delivered (optionally one way) as tcpdump-like text."""
        return [f"{d} {s.describe()}" for _, d, s in self.log if direction in (None, d)]


def on_simnet(net: Network) -> tuple[Any, Any]:
    """Replacements for a loopback suite's ``nodes`` helper and ``Node`` class.

    Each node gets its own public host; loopback listen addresses become the same
    address on that host (``/ip4/127.0.0.1/tcp/0`` -> ``/ip4/<host>/tcp/0``, QUIC alike).
    """
    counter = iter(range(1, 1000))

    def node(config: NodeConfig | None = None, **kw: object) -> Node:
        config = config or NodeConfig()
        host = net.add_host(f"{config.label or 'node'}-{next(counter)}")
        assert host.ip is not None
        listen = [str(a).replace("/ip4/127.0.0.1/", f"/ip4/{host.ip}/")
                  for a in config.listen_addrs]
        return host.node(dataclasses.replace(config, listen_addrs=listen))

    @contextlib.asynccontextmanager
    async def nodes(n: int, **overrides: object) -> AsyncIterator[list[Node]]:
        async with contextlib.AsyncExitStack() as stack:
            out = []
            for i in range(n):
                config = NodeConfig(listen_addrs=["/ip4/127.0.0.1/tcp/0"], label="ABCDEFGH"[i],
                                    **overrides)  # type: ignore[arg-type]
                out.append(await stack.enter_async_context(node(config)))
            yield out

    return nodes, node
