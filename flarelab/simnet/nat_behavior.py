"""How a NAT behaves, in RFC 4787 (UDP) and RFC 5382 (TCP) terms, and the named presets.

Plain data: :class:`NatBehavior` says what a :class:`~flarelab.simnet.nat.NatTable` does
(see that module for how each property acts on packets). :data:`PRESETS` holds the classic
cone kinds (RFC 3489's names for behaviour pairs) and the two Linux routers the real NAT
lab builds (DESIGN.md, "Real NAT lab").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from ..errors import LocalProtocolError

__all__ = [
    "LINUX_TIMEOUTS",
    "PRESETS",
    "FilteringBehavior",
    "MappingBehavior",
    "NatBehavior",
    "NatTimeouts",
    "PortAssignment",
    "PortSharing",
    "UnsolicitedPolicy",
]


class MappingBehavior(StrEnum):
    """RFC 4787 section 4.1: when does a new session reuse an external endpoint."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class FilteringBehavior(StrEnum):
    """RFC 4787 section 5: which inbound packets an external endpoint lets in."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class PortAssignment(StrEnum):
    """RFC 4787 section 4.2.1: which external port a new mapping gets."""

    PRESERVE = "preserve"  # the internal port if free, else a random free one
    RANDOM = "random"  # always a random free port (Linux "fully-random")
    SEQUENTIAL = "sequential"  # the next free port after the last one given


class PortSharing(StrEnum):
    """When an external port counts as taken for a new session."""

    EXCLUSIVE = "exclusive"  # used by any session at all (RFC 4787: no port overloading)
    PER_REMOTE = "per-remote"  # used by a session to the same remote (Linux conntrack)


class UnsolicitedPolicy(StrEnum):
    """What happens to an inbound packet that no session lets in."""

    DROP = "drop"  # filtered silently, nothing recorded (input hook drops it)
    ANSWER = "answer"  # the router's stack answers and records a session (conntrack)


@dataclass(frozen=True, slots=True)
class NatTimeouts:
    """Session lifetimes in seconds (defaults: the RFC minimums)."""

    udp: float = 120.0  # RFC 4787 REQ-5: at least 2 minutes
    udp_unreplied: float = 120.0  # nothing came back yet (Linux: 30 s)
    tcp_transitory: float = 240.0  # RFC 5382 REQ-5: handshake or closing, 4 minutes
    tcp_established: float = 7440.0  # RFC 5382 REQ-5: 2 hours 4 minutes
    tcp_closed: float = 10.0  # after a RST (Linux's CLOSE state)


#: Linux conntrack's defaults (nf_conntrack_udp_timeout{,_stream}, tcp syn_sent / close)
LINUX_TIMEOUTS: Final = NatTimeouts(
    udp=120.0, udp_unreplied=30.0, tcp_transitory=120.0, tcp_established=432000.0,
    tcp_closed=10.0,
)


@dataclass(frozen=True, slots=True)
class NatBehavior:
    """Everything that decides how a NAT treats packets (RFC 4787 / RFC 5382 terms)."""

    mapping: MappingBehavior
    filtering: FilteringBehavior
    port_assignment: PortAssignment = PortAssignment.PRESERVE
    port_sharing: PortSharing = PortSharing.EXCLUSIVE
    hairpinning: bool = True
    unsolicited: UnsolicitedPolicy = UnsolicitedPolicy.DROP
    timeouts: NatTimeouts = field(default_factory=NatTimeouts)
    #: inbound packets refresh a session's timer too (RFC 4787 REQ-6 makes it optional)
    inbound_refresh: bool = True
    port_range: tuple[int, int] = (1024, 65535)
    #: sessions at most (Linux: nf_conntrack_max); new flows beyond it are dropped
    max_sessions: int = 16384
    name: str = "custom"

    def __post_init__(self) -> None:
        low, high = self.port_range
        if not 1 <= low <= high <= 65535:
            raise LocalProtocolError(f"bad port range {self.port_range}")
        if self.max_sessions < 1:
            raise LocalProtocolError("max_sessions must be at least 1")

    @classmethod
    def preset(cls, name: str) -> NatBehavior:
        """Return a named preset (``full_cone``, ``home_router``, ...; ``-`` works for ``_``)."""
        key = name.replace("-", "_").replace(" ", "_").lower()
        try:
            return PRESETS[key]
        except KeyError:
            raise LocalProtocolError(
                f"unknown NAT preset {name!r}; known: {', '.join(sorted(PRESETS))}"
            ) from None

    def replace(self, **changes: object) -> NatBehavior:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def predictable(self) -> bool:
        """True if a session to a new remote keeps the external port earlier ones got.

        That holds for endpoint-independent mapping, and for per-remote port sharing with
        port preservation (Linux masquerade) as long as nothing collides.
        """
        return self.mapping is MappingBehavior.ENDPOINT_INDEPENDENT or (
            self.port_assignment is PortAssignment.PRESERVE
            and self.port_sharing is PortSharing.PER_REMOTE
        )

    def describe(self) -> str:
        """Return one line such as ``EIM/APDF, preserve ports, unsolicited: drop``."""
        short = {"endpoint-independent": "EI", "address-dependent": "AD",
                 "address-and-port-dependent": "APD"}
        parts = [
            f"{short[self.mapping.value]}M/{short[self.filtering.value]}F",
            f"{self.port_assignment.value} ports ({self.port_sharing.value})",
            f"hairpinning {'on' if self.hairpinning else 'off'}",
            f"unsolicited: {self.unsolicited.value}",
        ]
        return ", ".join(parts)


_EIM, _ADM, _APDM = (MappingBehavior.ENDPOINT_INDEPENDENT, MappingBehavior.ADDRESS_DEPENDENT,
                     MappingBehavior.ADDRESS_AND_PORT_DEPENDENT)
_EIF, _ADF, _APDF = (FilteringBehavior.ENDPOINT_INDEPENDENT, FilteringBehavior.ADDRESS_DEPENDENT,
                     FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT)
_LINUX_MASQUERADE = NatBehavior(
    mapping=_APDM,  # conntrack picks a port per connection ...
    filtering=_APDF,  # ... and lets in only replies to a connection
    port_assignment=PortAssignment.PRESERVE,  # ... keeping the source port when the tuple is free
    port_sharing=PortSharing.PER_REMOTE,
    hairpinning=False,
    timeouts=LINUX_TIMEOUTS,
)

#: The named NAT kinds. RFC 3489's cone names describe the classic behaviour pairs; the
#: two routers are Linux ``masquerade`` as the real lab builds it (DESIGN.md, "Real NAT lab").
PRESETS: Final[dict[str, NatBehavior]] = {
    "full_cone": NatBehavior(mapping=_EIM, filtering=_EIF, name="full cone"),
    "restricted_cone": NatBehavior(mapping=_EIM, filtering=_ADF, name="restricted cone"),
    "port_restricted_cone": NatBehavior(
        mapping=_EIM, filtering=_APDF, name="port-restricted cone"
    ),
    "symmetric": NatBehavior(
        mapping=_APDM, filtering=_APDF, port_assignment=PortAssignment.RANDOM, name="symmetric"
    ),
    "home_router": _LINUX_MASQUERADE.replace(name="home router"),
    "answering_router": _LINUX_MASQUERADE.replace(
        unsolicited=UnsolicitedPolicy.ANSWER, name="answering router"
    ),
}
