"""Dialling: from a peer id or multiaddr to a running connection.

* An open connection is reused (one connection per peer unless asked for a new one).
* Concurrent dials to the same peer share one attempt.
* Addresses are tried one after another without an artificial delay before the first;
  the next starts when the previous failed or after ``dial_stagger`` seconds (happy
  eyeballs), and the first connection wins while the others are cancelled.
* A failed dial raises :class:`DialError` listing every address tried and why it failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio
from opentelemetry.trace import Tracer

from ..errors import DialError, FlarelabError, LocalProtocolError, attach_context
from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..tracing import spans
from .peerstore import AddrTTL, Peerstore
from .swarm import Swarm, close_quietly

if TYPE_CHECKING:
    from ..tracing.metrics import NodeMetrics
    from ..transports.base import RawConnection, SecuredConnection, Transport
    from .config import NodeConfig
    from .connection import Connection

__all__ = ["Dialer", "resolve_target"]

#: upgrades (if raw) an outbound connection and runs it: (conn, expected peer) -> connection
UpgradeAndRun = Callable[
    ["RawConnection | SecuredConnection", "PeerId | None"], Awaitable["Connection"]
]


class _PendingDial:
    """A dial in progress that later callers for the same peer wait on."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.connection: Connection | None = None
        self.error: BaseException | None = None


def resolve_target(
    target: PeerId | Multiaddr | str, addrs: Sequence[Multiaddr | str] = ()
) -> tuple[PeerId | None, list[Multiaddr]]:
    """Split a dial target into (peer id or None, candidate addresses)."""
    if isinstance(target, str):
        if target.startswith("/"):
            target = Multiaddr(target)
        else:
            text = target
            try:
                target = PeerId.from_string(text)
            except ValueError as exc:
                raise LocalProtocolError(
                    f"{text[:80]!r} is neither a multiaddr (/ip4/...) nor a peer id ({exc})"
                ) from None
    extra = [Multiaddr(a) for a in addrs]
    if isinstance(target, PeerId):
        return target, extra
    return target.peer_id, [target, *extra]


class Dialer:
    """Dials peers for one node."""

    def __init__(
        self,
        *,
        local_peer: PeerId,
        config: NodeConfig,
        transports: Sequence[Transport],
        swarm: Swarm,
        peerstore: Peerstore,
        metrics: NodeMetrics,
        tracer: Tracer,
        upgrade_and_run: UpgradeAndRun,
    ) -> None:
        self.local_peer = local_peer
        self.config = config
        self.transports = transports
        self.swarm = swarm
        self.peerstore = peerstore
        self.metrics = metrics
        self.tracer = tracer
        self.upgrade_and_run = upgrade_and_run
        self._pending: dict[PeerId, _PendingDial] = {}

    async def connect(
        self,
        target: PeerId | Multiaddr | str,
        addrs: Sequence[Multiaddr | str] = (),
        *,
        allow_limited: bool = True,
        force_new: bool = False,
        reuse_port: bool | None = None,
    ) -> Connection:
        """Return a connection to ``target``, reusing an open one unless ``force_new``.

        ``reuse_port`` (transports that support it): True dials from a listen port, False
        from an ephemeral port, None as the transport is configured.
        """
        peer, candidates = resolve_target(target, addrs)
        if peer == self.local_peer:
            raise LocalProtocolError("a node cannot dial itself")
        if peer is not None and not force_new:
            existing = self.swarm.best_connection(peer, allow_limited=allow_limited)
            if existing is not None:
                return existing
            pending = self._pending.get(peer)
            if pending is not None:
                await pending.done.wait()
                if pending.connection is not None and not pending.connection.is_closed:
                    return pending.connection
                raise DialError(f"dial to {peer} failed", peer=peer) from pending.error
        if peer is not None:
            now = trio.current_time()
            candidates = list(dict.fromkeys([*candidates, *self.peerstore.addrs(peer, now)]))
            if candidates:
                self.peerstore.add_addrs(peer, candidates, AddrTTL.TEMP, now)
            # the peerstore keeps addresses without /p2p/<peer>: dial each address once
            candidates = list(dict.fromkeys(c.without_peer_id() for c in candidates))
        if not allow_limited:  # a relayed address can only give a limited connection
            candidates = [c for c in candidates if not c.is_relayed]
        pending = _PendingDial()
        if peer is not None:
            self._pending[peer] = pending
        try:
            conn = await self._dial(peer, candidates, reuse_port)
            pending.connection = conn
            return conn
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            pending.done.set()
            if peer is not None and self._pending.get(peer) is pending:
                del self._pending[peer]

    def dialable(self, addrs: Sequence[Multiaddr]) -> list[tuple[Multiaddr, Transport]]:
        """The addresses some transport can dial, each with that transport.

        In the given order, except that QUIC addresses come before TCP ones
        (``prefer_quic``) or after them.
        """
        out = []
        for addr in addrs:
            for transport in self.transports:
                if transport.can_dial(addr):
                    out.append((addr, transport))
                    break
        later = "tcp" if self.config.prefer_quic else "quic"
        out.sort(key=lambda item: item[1].name == later)  # stable: keeps the rest in order
        return out

    async def _dial(
        self, peer: PeerId | None, candidates: Sequence[Multiaddr], reuse_port: bool | None = None
    ) -> Connection:
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_CANDIDATES: [str(a) for a in candidates]
        }
        if peer is not None:
            attrs[spans.LIBP2P_REMOTE_PEER_ID] = str(peer)
        with self.tracer.start_as_current_span(spans.NODE_DIAL, attributes=attrs) as span:
            dialable = self.dialable(candidates)
            started = trio.current_time()
            try:
                if not dialable:
                    raise DialError(
                        "no dialable address" if candidates else "no known address", peer=peer
                    )
                with trio.fail_after(self.config.dial_timeout):
                    conn = await self._dial_many(peer, dialable, reuse_port)
            except trio.TooSlowError:
                err = DialError(f"dial timed out after {self.config.dial_timeout} s", peer=peer)
                spans.mark_error(span, err, side="remote")
                self.metrics.record_dial(trio.current_time() - started, ok=False)
                raise err from None
            except FlarelabError as exc:
                attach_context(exc, peer=peer)
                spans.mark_error(span, exc)
                self.metrics.record_dial(trio.current_time() - started, ok=False)
                raise
            self.metrics.record_dial(trio.current_time() - started, ok=True)
            span.set_attribute(spans.LIBP2P_MULTIADDR, str(conn.remote_addr))
            span.set_attribute(spans.LIBP2P_REMOTE_PEER_ID, str(conn.remote_peer))
            span.set_attribute(spans.LIBP2P_CONNECTION_ID, conn.id)
            return conn

    async def _dial_many(
        self,
        peer: PeerId | None,
        dialable: Sequence[tuple[Multiaddr, Transport]],
        reuse_port: bool | None = None,
    ) -> Connection:
        errors: list[tuple[Multiaddr, BaseException]] = []
        winner: Connection | None = None

        async def attempt(addr: Multiaddr, transport: Transport, failed: trio.Event) -> None:
            nonlocal winner
            try:
                conn = await self._dial_one(peer, addr, transport, reuse_port)
            except Exception as exc:
                errors.append((addr, exc))
                self.metrics.record_dial_error(transport=transport.name, error=type(exc).__name__)
                failed.set()
                return
            if winner is None:
                winner = conn
                nursery.cancel_scope.cancel()
            else:
                await close_quietly(conn, "lost the dial race")

        async with trio.open_nursery() as nursery:
            for addr, transport in dialable:
                failed = trio.Event()
                nursery.start_soon(attempt, addr, transport, failed)
                with trio.move_on_after(self.config.dial_stagger):
                    await failed.wait()
        if winner is not None:
            return winner
        if len(errors) == 1 and isinstance(errors[0][1], FlarelabError):
            only = errors[0][1]
            if isinstance(only, DialError):
                raise only
            raise DialError(f"could not connect: {only}", attempts=errors, peer=peer) from only
        raise DialError("could not connect", attempts=errors, peer=peer)

    async def _dial_one(
        self,
        peer: PeerId | None,
        addr: Multiaddr,
        transport: Transport,
        reuse_port: bool | None = None,
    ) -> Connection:
        if len(self.swarm.connections()) >= self.config.max_connections:
            raise DialError(f"connection limit of {self.config.max_connections} reached")
        extra: dict[str, Any] = {}
        if reuse_port is not None and transport.supports_reuse_port:
            extra["reuse_port"] = reuse_port
        raw = await transport.dial(addr, expected_peer=peer, **extra)
        return await self.upgrade_and_run(raw, peer)
