"""Small programs for the lab's hosts: listen, try to reach something, run a flarelab node.

They run in the lab's namespaces (``lab.start(host, listen_server, 4001)``,
``lab.run(host, reach, ip, 4001)``). :func:`reach` says what happened to an attempt in
the terms of the NAT lab: ``connected`` (TCP) or ``answered`` (UDP echo), ``refused``
(RST or ICMP port unreachable: something answered), ``unreachable`` (no route, or an ICMP
host/net unreachable) or ``timeout`` (dropped silently, as a home router's input hook
does). :func:`serve_node` and :func:`ping_node` run real flarelab nodes that trace into the
lab's trace file.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from typing import Any, Final, Literal

import trio

from .agent import LabContext

__all__ = ["listen_server", "ping_node", "reach", "serve_node"]

Outcome = Literal["connected", "answered", "refused", "unreachable", "timeout", "error"]
_REFUSED: Final = {errno.ECONNREFUSED, errno.ECONNRESET}
_UNREACHABLE: Final = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


async def listen_server(ctx: LabContext, port: int) -> dict[str, int]:
    """Accept TCP connections and echo UDP datagrams on ``port`` of every address of the
    host until stopped; return how many of each arrived."""
    seen = {"tcp": 0, "udp": 0}

    async def serve_tcp(stream: trio.SocketStream) -> None:
        seen["tcp"] += 1
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(b"hello\n")

    async def serve_udp(sock: trio.socket.SocketType) -> None:
        while True:
            data, source = await sock.recvfrom(2048)
            seen["udp"] += 1
            with contextlib.suppress(OSError):
                await sock.sendto(data, source)

    udp = []
    for ip in ctx.host.addresses():
        sock = trio.socket.socket(_family(ip), socket.SOCK_DGRAM)
        await sock.bind((ip, port))
        udp.append(sock)
    listeners = await trio.open_tcp_listeners(port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve_tcp, listeners)
        for sock in udp:
            nursery.start_soon(serve_udp, sock)
        ctx.ready({"port": port, "addresses": ctx.host.addresses()})
        await ctx.wait_stop()
        nursery.cancel_scope.cancel()
    for sock in udp:
        sock.close()
    return seen


def _classify(exc: OSError) -> Outcome:
    if exc.errno in _REFUSED:
        return "refused"
    if exc.errno in _UNREACHABLE:
        return "unreachable"
    return "error"


async def reach(ctx: LabContext, ip: str, port: int, transport: str = "tcp",
                timeout: float = 1.0) -> dict[str, Any]:  # noqa: ASYNC109 -- a probe's window
    """Try once to reach ``ip:port`` over TCP (connect) or UDP (a datagram that an
    echo server answers); return ``{"outcome", "detail", "elapsed"}``."""
    started = time.monotonic()
    outcome: Outcome = "timeout"
    detail = f"nothing came back within {timeout:g} s"
    sock = trio.socket.socket(_family(ip), socket.SOCK_STREAM if transport == "tcp"
                              else socket.SOCK_DGRAM)
    with sock, trio.move_on_after(timeout):
        try:
            if transport == "tcp":
                await sock.connect((ip, port))
                outcome, detail = "connected", f"connected from {sock.getsockname()[:2]}"
            else:
                await sock.connect((ip, port))  # so ICMP errors come back to this socket
                await sock.send(b"probe")
                await sock.recv(2048)
                outcome, detail = "answered", "the echo came back"
        except OSError as exc:
            outcome, detail = _classify(exc), exc.strerror or str(exc)
    return {"outcome": outcome, "detail": detail, "elapsed": time.monotonic() - started,
            "from": ctx.host.name, "to": f"{ip}:{port}/{transport}"}


async def serve_node(ctx: LabContext, label: str | None = None,
                     enable_quic: bool = True) -> dict[str, Any]:
    """Run a flarelab node on this host until stopped; ``ready`` carries its peer id and
    addresses. Its spans go to the lab's trace file."""
    from ..node import Node

    config = ctx.node_config(enable_quic=enable_quic,
                             **({"label": label, "tracing": ctx.tracing(label)} if label else {}))
    async with Node(config) as node:
        ctx.ready({"peer_id": str(node.peer_id), "addrs": [str(a) for a in node.addrs]})
        await ctx.wait_stop()
        peers = [str(p) for p in node.connected_peers()]
    return {"peer_id": str(node.peer_id), "peers_at_stop": peers}


async def ping_node(ctx: LabContext, addr: str, count: int = 3,
                    enable_quic: bool = True) -> dict[str, Any]:
    """Start a node here, ping the node at ``addr`` (a multiaddr with /p2p/), return the
    round-trip times in milliseconds."""
    from ..node import Node

    async with Node(ctx.node_config(enable_quic=enable_quic)) as node:
        with trio.fail_after(30):
            rtts = await node.ping(addr, count=count)
        return {"peer_id": str(node.peer_id), "rtts_ms": rtts}
