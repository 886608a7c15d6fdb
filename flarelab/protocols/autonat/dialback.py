"""Dial-backs that prove something: always a fresh connection, never from the listen port.

An AutoNAT server that answers over a connection the client already has proves nothing
(py-libp2p did that, and reported a closed port as reachable). So a dial-back here

* never looks at existing connections: it dials the one address it was given, with the
  transport directly (not through the node's dialer, which would reuse a connection or add
  addresses from the peerstore);
* leaves from an ephemeral port (``reuse_port=False``; QUIC: a fresh socket), because a
  dial from our listen port could match the client's NAT mapping for the connection it
  made to us and punch a hole by accident (autonat-v2 spec);
* authenticates the peer it reaches (the security handshake checks the expected peer id);
* runs the connection in the node like any other, and the caller closes it when done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from ...errors import DialError
from ...node.swarm import close_quietly

if TYPE_CHECKING:
    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node.connection import Connection
    from ...node.node import Node

__all__ = ["close_dial_back", "dial_first", "dial_fresh"]


async def dial_fresh(node: Node, peer: PeerId, addr: Multiaddr) -> Connection:
    """Open a new connection to ``peer`` at exactly ``addr``, from an ephemeral port."""
    choices = node.dialer.dialable([addr])
    if not choices:
        raise DialError(f"no transport dials {addr}", peer=peer)
    _, transport = choices[0]
    if not transport.supports_reuse_port:
        raise DialError(f"the {transport.name} transport cannot dial from an ephemeral port",
                        peer=peer)
    if len(node.connections()) >= node.config.max_connections:
        raise DialError(f"connection limit of {node.config.max_connections} reached", peer=peer)
    ephemeral: dict[str, Any] = {"reuse_port": False}
    raw = await transport.dial(addr, expected_peer=peer, **ephemeral)
    return await node.upgrade_and_run(raw, expected_peer=peer, is_initiator=True)


async def dial_first(
    node: Node, peer: PeerId, addrs: Sequence[Multiaddr], *, stagger: float = 0.25
) -> tuple[Connection, Multiaddr]:
    """Dial fresh connections to ``addrs`` (staggered); return the first that works and
    the address it reached. The losers are closed. DialError lists every failure."""
    errors: list[tuple[Multiaddr, BaseException]] = []
    winner: tuple[Connection, Multiaddr] | None = None

    async def attempt(addr: Multiaddr, failed: trio.Event) -> None:
        nonlocal winner
        try:
            conn = await dial_fresh(node, peer, addr)
        except Exception as exc:
            errors.append((addr, exc))
            failed.set()
            return
        if winner is None:
            winner = (conn, addr)
            nursery.cancel_scope.cancel()
        else:
            await close_dial_back(conn, "lost the dial-back race")

    if not addrs:
        raise DialError("no address to dial back", peer=peer)
    async with trio.open_nursery() as nursery:
        for addr in addrs:
            failed = trio.Event()
            nursery.start_soon(attempt, addr, failed)
            with trio.move_on_after(stagger):
                await failed.wait()
    if winner is not None:
        return winner
    raise DialError("every dial-back failed", attempts=errors, peer=peer)


async def close_dial_back(conn: Connection, reason: str = "AutoNAT dial-back done") -> None:
    """Close a dial-back connection, even from a cancelled scope, within a second."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await close_quietly(conn, reason)
