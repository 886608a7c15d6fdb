"""FlareConfig: what the Flare orchestrator does, and the configs of the services it runs.

Every field has a default a real deployment would pick (go-libp2p's autorelay and its
services' defaults); the simulations shorten the times through the nested service configs
(:attr:`FlareConfig.autonat`, :attr:`FlareConfig.holepunch`, ...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import LocalProtocolError

if TYPE_CHECKING:
    from ..multiaddr import Multiaddr
    from ..protocols.autonat import AutoNATConfig
    from ..protocols.dcutr import HolePunchConfig
    from ..protocols.relay import RelayClientConfig, RelayServiceConfig

__all__ = ["DiscoverHook", "FlareConfig"]

#: ``async def discover() -> [relay candidates]``: multiaddrs ending in ``/p2p/<id>``
#: (or strings), peer ids the peerstore knows, or objects with ``peer_id`` and ``addrs``
#: (a peerstore or relay ``PeerInfo``); Kademlia's closest peers, later
DiscoverHook = Callable[[], Awaitable[Sequence[Any]]]


@dataclass(frozen=True)
class FlareConfig:
    """How :func:`~flarelab.flare.enable_flare` runs reachability -> relays -> DCUtR."""

    # ------------------------------------------------------------------ relays
    #: relays to use first, as ``<addr>/p2p/<relay id>`` (go's static relays)
    relays: Sequence[Multiaddr | str] = ()
    #: also use connected peers that identify as hop-capable relays
    use_identified_relays: bool = True
    #: ask this for more candidates when the ones known are not enough
    discover: DiscoverHook | None = None
    #: wait this long between two discover calls
    discover_interval: float = 60.0
    #: reservations to hold while private (go's autorelay: a small number)
    max_relays: int = 2
    #: relay candidates remembered at most (identify lets any peer offer itself)
    max_candidates: int = 32
    #: after a relay refused or lost us: first and longest wait before trying it again
    relay_backoff: float = 30.0
    relay_backoff_max: float = 10 * 60.0

    # ------------------------------------------------------------------ when public
    #: keep reservations when AutoNAT finds us public (default: drop them)
    keep_reservations_when_public: bool = False
    #: serve as a relay (circuit relay v2 hop) while AutoNAT finds us public
    relay_service: bool = False

    # ------------------------------------------------------------------ addresses
    #: while private, advertise (identify) only private LAN addresses, relay addresses and
    #: addresses AutoNAT v2 found reachable -- not the public-looking observed or listen
    #: addresses nobody can dial (DCUtR still offers those in CONNECT, where they belong)
    hide_unreachable_addrs: bool = True

    # ------------------------------------------------------------------ the services
    #: AutoNAT v1+v2 client and server (None: AutoNATConfig())
    autonat: AutoNATConfig | None = None
    #: DCUtR in both roles (None: HolePunchConfig())
    holepunch: HolePunchConfig | None = None
    #: the p2p-circuit transport: reservation refreshes, timeouts (None: the defaults)
    relay_client: RelayClientConfig | None = None
    #: the relay service run when public and ``relay_service`` (None: the defaults)
    relay_service_config: RelayServiceConfig | None = None

    def __post_init__(self) -> None:
        if self.max_relays < 0 or self.max_candidates < 1:
            raise LocalProtocolError("need max_relays >= 0 and max_candidates >= 1")
        if not 0 < self.relay_backoff <= self.relay_backoff_max:
            raise LocalProtocolError("need 0 < relay_backoff <= relay_backoff_max")
        if self.discover_interval <= 0:
            raise LocalProtocolError("discover_interval must be positive")
