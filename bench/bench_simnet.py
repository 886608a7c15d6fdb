"""Benchmark the simulated network (flarelab.simnet) with real flarelab nodes on it.

Goals (issue 4; each printed as a ratio with PASS/FAIL):

1. Memory: 1000 idle nodes in one process -- each a flarelab Node (TCP + Noise + Yamux,
   identify, ping, perf) on its own simulated host, listening -- cost at most 300 KiB each:
   the growth of this process's RSS from before the first of them to after the last, per
   node. Idle means idle: an hour of virtual time with them costs (almost) no CPU.
2. Speed: a 100-node network exchanging pings runs at least 50x faster than real time on
   ``MockClock(autojump_threshold=0)``. The network: 50 public hosts and 50 hosts behind
   their own home routers (Linux masquerade), 10 ms per internet link and 0.5 ms per LAN
   link; each node keeps one connection (a ring over the public nodes; every NATed node
   to a public one) and pings its peer every 15 s (rust-libp2p's default ping interval)
   with a new ping stream each time (``Node.ping``), over TCP, for 10 virtual minutes. The
   figure is virtual seconds per CPU second of that phase (this process's CPU time: the
   simulation is one thread, so on an idle machine that is the wall-clock ratio too, and on
   a busy one it is not skewed by the time other jobs take; the wall-clock ratio is shown
   beside it).

Beside the goals, without one: the same network over QUIC, with three connections per node,
and with a ping every second (the simulator's capacity, in pings per CPU second), and the
wall-clock cost of one ``Node.ping`` between two nodes on simnet and on real loopback TCP
(what the node stack itself costs, which bounds how fast any simulation of it can run).

Run: ``.venv/bin/python bench/bench_simnet.py [--quick] [--json FILE]`` (about 40 s;
``--quick`` about 10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
import trio.testing
from _common import Report, Result, add_json_arg, finish, rss_mib

from flarelab.node import Node, NodeConfig
from flarelab.simnet import Network

GOAL_KIB_PER_NODE = 300.0
GOAL_SPEEDUP = 50.0
#: a /16 of public addresses: more than the documentation ranges hold
PUBLIC_POOL = ("11.0.0.0/16",)


def _mock_run(fn, *args):  # type: ignore[no-untyped-def]
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


# ---------------------------------------------------------------- 1: idle nodes
async def idle_nodes(count: int) -> dict[str, float]:
    """Start ``count`` listening nodes; return RSS per node, start time, idle cost."""
    async with Network(seed=1, public_pool=PUBLIC_POOL) as net:
        async with net.add_host("warm-up").node():  # imports, caches, first-use costs
            pass
        gc.collect()
        rss_before = rss_mib()
        started = time.perf_counter()
        async with contextlib.AsyncExitStack() as stack:
            nodes = []
            for i in range(count):
                host = net.add_host(f"n{i}")
                nodes.append(await stack.enter_async_context(host.node()))
            start_seconds = time.perf_counter() - started
            gc.collect()
            rss_after = rss_mib()
            assert all(node.listen_addrs() for node in nodes)
            idle_started = time.perf_counter()
            await trio.sleep(3600)
            idle_wall = time.perf_counter() - idle_started
    return {
        "kib_per_node": (rss_after - rss_before) * 1024 / count,
        "start_ms_per_node": start_seconds * 1000 / count,
        "idle_hour_wall_ms": idle_wall * 1000,
    }


# ---------------------------------------------------------------- 2: pinging network
async def pinging_network(nodes: int, fanout: int, interval: float, duration: float,
                          transport: str = "tcp") -> dict[str, float]:
    """Run the network of goal 2; return virtual/wall ratio and per-ping figures."""
    async with Network(seed=1, public_pool=PUBLIC_POOL) as net:
        rng = random.Random(1)
        hosts = [net.add_host(f"p{i}") if i % 2 == 0
                 else net.add_router(f"nat{i}", "home_router").add_host(f"h{i}")
                 for i in range(nodes)]
        async with contextlib.AsyncExitStack() as stack:
            running = [await stack.enter_async_context(h.node()) for h in hosts]
            public = running[0::2]
            pairs = []
            for i, node in enumerate(running):
                # a ring over the public nodes; NATed nodes dial public ones (never both
                # ways at once: two dials crossing from listen ports merge into one TCP
                # connection, a simultaneous open the node does not resolve)
                first = i // 2 + 1 if i % 2 == 0 else i // 2
                for k in range(fanout):
                    peer = public[(first + k) % len(public)]
                    if peer is not node:
                        pairs.append((node, peer))
            async with trio.open_nursery() as nursery:
                for a, b in pairs:
                    addr = next(x for x in b.addrs if transport in str(x))
                    nursery.start_soon(a.connect, addr)
            pings = 0

            async def pinger(a: Node, b: Node) -> None:
                nonlocal pings
                await trio.sleep(rng.uniform(0, interval))
                while True:
                    await a.ping(b.peer_id)
                    pings += 1
                    await trio.sleep(interval)

            packets = net.stats.sent
            wall_start, virtual_start = time.perf_counter(), trio.current_time()
            cpu_start = time.process_time()
            with trio.move_on_after(duration):
                async with trio.open_nursery() as nursery:
                    for a, b in pairs:
                        nursery.start_soon(pinger, a, b)
            wall = time.perf_counter() - wall_start
            cpu = time.process_time() - cpu_start
            virtual = trio.current_time() - virtual_start
            packets = net.stats.sent - packets
    return {
        "speedup": virtual / cpu,
        "speedup_wall": virtual / wall,
        "connections": len(pairs),
        "pings": pings,
        "pings_per_cpu_s": pings / cpu,
        "ms_per_ping": cpu * 1000 / pings,
        "packets_per_ping": packets / pings,
    }


# ---------------------------------------------------------------- baseline: one ping
async def ping_cost_simnet(count: int) -> float:
    net = Network(seed=1)
    host_a, host_b = net.add_host("A"), net.add_host("B")
    async with net, host_a.node() as a, host_b.node() as b:
        return await _ping_cost(a, b, count)


async def ping_cost_loopback(count: int) -> float:
    config = NodeConfig(listen_addrs=["/ip4/127.0.0.1/tcp/0"])
    async with Node(config) as a, Node(config) as b:
        return await _ping_cost(a, b, count)


async def _ping_cost(a: Node, b: Node, count: int) -> float:
    await a.ping(b.addrs[0])
    started = time.perf_counter()
    for _ in range(count):
        await a.ping(b.peer_id)
    return (time.perf_counter() - started) * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 10 s)")
    parser.add_argument("--nodes", type=int, help="idle nodes for goal 1 (1000)")
    add_json_arg(parser)
    args = parser.parse_args()
    quick = args.quick
    report = Report("flarelab.simnet: idle nodes, simulated time, ping cost")

    idle_count = args.nodes or (300 if quick else 1000)
    idle = _mock_run(idle_nodes, idle_count)
    memory = report.add(Result("simnet.idle_nodes.rss_per_node", idle["kib_per_node"], "KiB",
                               {"nodes": idle_count}))
    report.add(Result("simnet.idle_nodes.start_per_node", idle["start_ms_per_node"], "ms"))
    report.add(Result("simnet.idle_nodes.virtual_hour_wall", idle["idle_hour_wall_ms"], "ms"))

    duration = 120.0 if quick else 600.0
    main_run = _mock_run(pinging_network, 100, 1, 15.0, duration)
    speed = report.add(Result("simnet.pings.100_nodes.speedup", main_run["speedup"], "x", {
        "wall": main_run["speedup_wall"], "connections": main_run["connections"],
        "pings": main_run["pings"], "cpu_ms_per_ping": main_run["ms_per_ping"],
        "packets_per_ping": main_run["packets_per_ping"],
    }))
    for fanout, interval, span, transport, label in (
        (1, 15.0, duration / 4, "quic", "quic"),
        (3, 15.0, duration / 2, "tcp", "3_conns_15s"),
        (1, 1.0, 20.0 if quick else 60.0, "tcp", "1_conn_1s"),
    ):
        run = _mock_run(pinging_network, 100, fanout, interval, span, transport)
        report.add(Result(f"simnet.pings.100_nodes.{label}.speedup", run["speedup"], "x",
                          {"wall": run["speedup_wall"]}))
        report.add(Result(f"simnet.pings.100_nodes.{label}.capacity", run["pings_per_cpu_s"],
                          "pings/s", {"cpu_ms_per_ping": run["ms_per_ping"]}))

    count = 200 if quick else 1000
    sim_ping = report.add(Result("simnet.node_ping.two_nodes", _mock_run(ping_cost_simnet, count),
                                 "ms"))
    loop_ping = report.add(Result("loopback_tcp.node_ping.two_nodes",
                                  trio.run(ping_cost_loopback, count), "ms"))

    report.ratio("[1] RSS per idle node / 300 KiB", memory, GOAL_KIB_PER_NODE, 1.0)
    report.ratio("[2] 100 nodes pinging: virtual / CPU time", speed, 1.0, GOAL_SPEEDUP,
                 higher_is_better=True)
    report.ratio("Node.ping wall cost, simnet / loopback TCP (no goal)", sim_ping, loop_ping,
                 2.0)
    finish(report, args.json)


if __name__ == "__main__":
    main()
