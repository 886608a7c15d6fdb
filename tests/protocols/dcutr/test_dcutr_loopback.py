"""DCUtR between two real nodes on loopback (tier 4): real sockets, SO_REUSEPORT, the kernel.

The "relayed" connection is an in-memory stream pair marked limited (the relay is another
engineer's part); everything after it is real: B's CONNECT/SYNC over it, then a TCP
simultaneous open (or a SYN into the other's listener) between the two listen ports of
127.0.0.1, upgraded with A as the Noise initiator -- or a QUIC dial with B's punches. The
loopback counts as public here (an address policy), as the lab's documentation ranges do.

Real clock: every wait is bounded by ``trio.fail_after``; nothing sleeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from flarelab.multiaddr import AddressPolicy, Multiaddr
from flarelab.node import Node, NodeConfig
from flarelab.node.connection import Connection
from flarelab.protocols.dcutr import HolePunchConfig, HolePunchService, HolePunchSucceeded
from flarelab.transports.base import RawConnection

LOOPBACK_IS_PUBLIC = AddressPolicy(treat_as_public=("127.0.0.0/8",))


@contextlib.asynccontextmanager
async def two_nodes(quic: bool) -> AsyncIterator[tuple[Node, Node]]:
    listen = ["/ip4/127.0.0.1/udp/0/quic-v1"] if quic else ["/ip4/127.0.0.1/tcp/0"]
    config = NodeConfig(listen_addrs=listen, address_policy=LOOPBACK_IS_PUBLIC,
                        enable_quic=quic)
    async with Node(config) as a, Node(config) as b:
        yield a, b


async def relayed_pair(a: Node, b: Node) -> tuple[Connection, Connection]:
    """A limited connection A -> B over an in-memory stream pair."""
    left, right = trio.testing.memory_stream_pair()
    via = Multiaddr("/ip4/198.51.100.1/tcp/4001")
    raw_a = RawConnection(left, via, via, is_initiator=True, transport="p2p-circuit",
                          limited=True)
    raw_b = RawConnection(right, via, via, is_initiator=False, transport="p2p-circuit",
                          limited=True)
    out: dict[str, Connection] = {}

    async def up(name: str, node: Node, raw: RawConnection, initiator: bool) -> None:
        out[name] = await node.upgrade_and_run(
            raw, expected_peer=b.peer_id if initiator else None, is_initiator=initiator,
            limited=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(up, "a", a, raw_a, True)
        nursery.start_soon(up, "b", b, raw_b, False)
    return out["a"], out["b"]


@pytest.mark.parametrize("quic", [False, True], ids=["tcp", "quic"])
async def test_simultaneous_open_on_real_sockets(quic: bool) -> None:
    # no reversal: A's loopback address is "public", and the point is the punch
    config = HolePunchConfig(connection_reversal=False, relay_grace=None)
    async with two_nodes(quic) as (a, b):
        HolePunchService(a, config)
        HolePunchService(b, config)
        with b.events.subscribe(HolePunchSucceeded) as on_b, \
                a.events.subscribe(HolePunchSucceeded) as on_a, trio.fail_after(20):
            await relayed_pair(a, b)
            done_b = await on_b.next()
            done_a = await on_a.next()
        assert (done_b.outcome, done_b.result.attempts) == ("success", 1)
        assert done_a.outcome == "success"
        conn_a, conn_b = done_a.connection, done_b.connection
        assert conn_a is not None and conn_b is not None and not conn_a.limited
        assert conn_b.transport == conn_a.transport == ("quic" if quic else "tcp")
        # the one direct connection joins the two listen ports
        assert conn_a.local_addr == a.listen_addrs()[0]
        assert conn_b.local_addr == b.listen_addrs()[0]
        with trio.fail_after(10):
            assert len(await a.ping(b.peer_id, 2)) == 2
