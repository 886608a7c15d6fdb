"""AutoNAT v1 and v2: learn whether peers on the internet can dial us.

* :class:`AutoNATService` -- the node service: answers v1 and v2 requests, probes on
  go-libp2p's schedule, and publishes :class:`ReachabilityChanged`,
  :class:`AddressReachabilityChanged` and :class:`ReachabilityProbed` on the node's bus.
* :class:`ReachabilityTracker` -- the pure state machine (unknown / public / private with
  confidence) behind it; :mod:`.reachability` documents the rules.
* :func:`probe_v1`, :func:`probe_v2` -- one probe against one server, for scripts.

Servers dial only what the rules allow (:mod:`.dial_policy`), on a fresh connection from an
ephemeral port (:mod:`.dialback`), within rate limits (:mod:`.ratelimit`).
"""

from __future__ import annotations

from .config import AutoNATConfig
from .events import AddressReachabilityChanged, ReachabilityChanged, ReachabilityProbed
from .messages import (
    V1_PROTOCOL,
    V2_DIAL_BACK_PROTOCOL,
    V2_DIAL_REQUEST_PROTOCOL,
    V1Status,
    V2DialStatus,
    V2ResponseStatus,
)
from .ratelimit import RateLimiter, RateLimits
from .reachability import (
    AddressReachability,
    Observation,
    Reachability,
    ReachabilityChange,
    ReachabilityTracker,
)
from .service import AutoNATService, start_autonat
from .v1 import V1ProbeResult, probe_v1
from .v2 import DialBackReceiver, V2ProbeResult, probe_v2

__all__ = [
    "V1_PROTOCOL",
    "V2_DIAL_BACK_PROTOCOL",
    "V2_DIAL_REQUEST_PROTOCOL",
    "AddressReachability",
    "AddressReachabilityChanged",
    "AutoNATConfig",
    "AutoNATService",
    "DialBackReceiver",
    "Observation",
    "RateLimiter",
    "RateLimits",
    "Reachability",
    "ReachabilityChange",
    "ReachabilityChanged",
    "ReachabilityProbed",
    "ReachabilityTracker",
    "V1ProbeResult",
    "V1Status",
    "V2DialStatus",
    "V2ProbeResult",
    "V2ResponseStatus",
    "probe_v1",
    "probe_v2",
    "start_autonat",
]
