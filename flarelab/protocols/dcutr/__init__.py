"""DCUtR (``/libp2p/dcutr``): upgrade a relayed connection to a direct one by hole punching.

    from flarelab.protocols.dcutr import HolePunchService, HolePunchSucceeded

    service = HolePunchService(node)          # both roles, on a running or starting node
    with node.events.subscribe(HolePunchSucceeded) as events:
        ...                                   # a relayed connection comes in, is upgraded
        done = await events.next()
        print(done.outcome, done.result.address, done.result.elapsed)

Modules: :mod:`.attempt` (the pure state machine of one upgrade and the outcome taxonomy),
:mod:`.protocol` (the wire exchange), :mod:`.messages` (the codec), :mod:`.addresses`
(which addresses to offer and to dial), :mod:`.dial` (``holepunch.dial``: TCP simultaneous
open, QUIC punch, connection reversal), :mod:`.initiator` (B's side) and :mod:`.receiver`
(A's side), :mod:`.service` (both on a node), :mod:`.events`, :mod:`.metrics`,
:mod:`.config`.
"""

from .attempt import AttemptRecord, HolePunchUpgrade, Outcome, Phase
from .config import HolePunchConfig
from .events import (
    SIDE_INITIATOR,
    SIDE_RECEIVER,
    HolePunchAttemptFailed,
    HolePunchFailed,
    HolePunchResult,
    HolePunchStarted,
    HolePunchSucceeded,
)
from .messages import DCUTR_PROTOCOL, MAX_MESSAGE_SIZE, Connect, Sync
from .metrics import HolePunchMetrics
from .service import HolePunchService

__all__ = [
    "DCUTR_PROTOCOL",
    "MAX_MESSAGE_SIZE",
    "SIDE_INITIATOR",
    "SIDE_RECEIVER",
    "AttemptRecord",
    "Connect",
    "HolePunchAttemptFailed",
    "HolePunchConfig",
    "HolePunchFailed",
    "HolePunchMetrics",
    "HolePunchResult",
    "HolePunchService",
    "HolePunchStarted",
    "HolePunchSucceeded",
    "HolePunchUpgrade",
    "Outcome",
    "Phase",
    "Sync",
]
