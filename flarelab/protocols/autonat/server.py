"""What the v1 and v2 AutoNAT servers share: their state and the node's stream handler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ratelimit import RateLimiter, RateLimits

if TYPE_CHECKING:
    import trio

    from ...identity import PeerId
    from ...multiaddr import Multiaddr
    from ...node.connection import NetStream
    from ...node.node import Node
    from .config import AutoNATConfig
    from .metrics import AutoNATMetrics

__all__ = ["AutoNATServer"]


class AutoNATServer:
    """One node's server for one AutoNAT version: subclasses pick the rate limits and serve.

    The requester's observed address is the connection's remote address, unless the
    connection is relayed (limited): then there is none, and the request is refused.
    """

    def __init__(self, node: Node, config: AutoNATConfig, metrics: AutoNATMetrics) -> None:
        self.node = node
        self.config = config
        self.metrics = metrics
        self.limiter: RateLimiter[PeerId] = RateLimiter(self.limits(config))

    def limits(self, config: AutoNATConfig) -> RateLimits:
        """The rate limits of this version's server."""
        raise NotImplementedError

    async def handle(self, stream: NetStream) -> None:
        """The node's stream handler (registered without ``allow_limited``)."""
        conn = stream.connection
        observed = None if conn.limited else conn.remote_addr
        await self.serve(stream, requester=stream.remote_peer, observed=observed)

    async def serve(
        self, stream: trio.abc.Stream, *, requester: PeerId, observed: Multiaddr | None
    ) -> Any:
        """Serve one request from ``requester`` seen at ``observed``."""
        raise NotImplementedError
