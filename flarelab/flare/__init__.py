"""Project Flare: AutoNAT -> relays -> reservations -> DCUtR, turned on with one call.

    from flarelab.flare import FlareConfig, enable_flare

    flare = enable_flare(node, FlareConfig(relays=[relay_addr]))   # or NodeConfig(flare=...)
    async with node:
        await flare.wait_for("reserved")

* :func:`enable_flare`, :class:`Flare` (:mod:`.orchestrator`): the flow on one node.
* :class:`FlareConfig` (:mod:`.config`): relays, limits, and the services' configs.
* :class:`FlareCore`, :class:`FlareState`, :class:`FlarePhase` (:mod:`.state`): the pure
  state machine; :class:`FlareStateChanged` (:mod:`.events`) on the node's bus.
* :class:`FlareTrial`, :class:`FlareSummary`, :func:`summarize` (:mod:`.report`): what
  runs of the whole scenario produced; :func:`run_flare_simnet` and
  :func:`run_flare_matrix_simnet` (:mod:`.simnet_run`) run it on the simulated internet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .config import FlareConfig
from .report import FlareSummary, FlareTrial, percentile, summarize

__all__ = [
    "Flare",
    "FlareConfig",
    "FlareCore",
    "FlarePhase",
    "FlareState",
    "FlareStateChanged",
    "FlareSummary",
    "FlareTrial",
    "enable_flare",
    "percentile",
    "run_flare_matrix_simnet",
    "run_flare_simnet",
    "summarize",
]

_LAZY = {
    "Flare": "orchestrator",
    "enable_flare": "orchestrator",
    "FlareCore": "state",
    "FlarePhase": "state",
    "FlareState": "state",
    "FlareStateChanged": "events",
    "run_flare_simnet": "simnet_run",
    "run_flare_matrix_simnet": "simnet_run",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


if TYPE_CHECKING:
    from .events import FlareStateChanged
    from .orchestrator import Flare, enable_flare
    from .simnet_run import run_flare_matrix_simnet, run_flare_simnet
    from .state import FlareCore, FlarePhase, FlareState
