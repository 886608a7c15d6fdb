"""The real NAT lab: Linux network namespaces, nftables routers, flarelab nodes inside.

    from flarelab.lab import Lab, Topology

    async with Lab(Topology.standard("home_router", "symmetric")) as lab:
        print(await lab.run("a", my_module.probe, "198.51.100.1"))

* :class:`Topology` / :class:`TopologyBuilder`: the description (also buildable on simnet).
* :class:`NatKind`: the routers the lab builds (nftables rulesets in ``nat_kinds``).
* :class:`Lab`: builds it (needs root), runs ``async def fn(ctx, ...)`` functions in its
  namespaces (:class:`LabContext` is ``ctx``), collects their results and spans, and always
  tears down what it made.
* :mod:`flarelab.lab.punch`: the hole-punch experiments (plain sockets, DCUtR timing) run
  in the lab and compared with :mod:`flarelab.simnet.theory`.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

__all__ = [
    "LAB_ADDRESS_POLICY",
    "Lab",
    "LabContext",
    "LabError",
    "LabHost",
    "LabProcess",
    "LabProcessError",
    "LabRouter",
    "LabSetupError",
    "LabTask",
    "LabUnavailableError",
    "NatKind",
    "Topology",
    "TopologyBuilder",
    "check_available",
    "cleanup_stale",
    "nat_kind",
]

_EXPORTS = {
    "LabContext": "agent",
    "LabError": "errors",
    "LabProcessError": "errors",
    "LabSetupError": "errors",
    "LabUnavailableError": "errors",
    "Lab": "lab",
    "NatKind": "nat_kinds",
    "nat_kind": "nat_kinds",
    "check_available": "netns",
    "cleanup_stale": "netns",
    "LabProcess": "proc",
    "LabTask": "proc",
    "LAB_ADDRESS_POLICY": "topology",
    "LabHost": "topology",
    "LabRouter": "topology",
    "Topology": "topology",
    "TopologyBuilder": "topology",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .agent import LabContext
    from .errors import LabError, LabProcessError, LabSetupError, LabUnavailableError
    from .lab import Lab
    from .nat_kinds import NatKind, nat_kind
    from .netns import check_available, cleanup_stale
    from .proc import LabProcess, LabTask
    from .topology import LAB_ADDRESS_POLICY, LabHost, LabRouter, Topology, TopologyBuilder
