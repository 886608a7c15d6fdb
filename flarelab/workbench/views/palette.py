"""Colours and protocol families shared by every view (sequence diagram, waterfall, topology).

A *family* is what a learner recognises: ``noise``, ``yamux``, ``identify``, ``relay``,
``dcutr``, ``nat``... It comes from a span's name (``noise.handshake`` -> ``noise``) or, for
generic spans (``stream.handle``), from the protocol id the span serves.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CONNECTION_COLORS",
    "FAMILY_COLORS",
    "LANE_COLORS",
    "family_color",
    "family_of",
    "protocol_family",
]

#: one colour per protocol family (Tableau-like, readable on white, distinct for the story)
FAMILY_COLORS: Final[dict[str, str]] = {
    "tcp": "#7f7f7f",
    "quic": "#17becf",
    "mss": "#bcbd22",
    "noise": "#9467bd",
    "tls": "#9467bd",
    "yamux": "#8c564b",
    "mplex": "#8c564b",
    "identify": "#1f77b4",
    "ping": "#2ca02c",
    "perf": "#2ca02c",
    "autonat": "#e377c2",
    "relay": "#ff7f0e",
    "dcutr": "#d62728",
    "holepunch": "#d62728",
    "nat": "#555555",
    "node": "#aaaaaa",
    "connection": "#aaaaaa",
    "stream": "#aaaaaa",
    "kad": "#637939",
    "gossipsub": "#843c39",
    "bitswap": "#7b4173",
}
_DEFAULT_COLOR: Final = "#999999"

#: lane header colours by lane kind
LANE_COLORS: Final[dict[str, str]] = {"host": "#1f4e79", "nat": "#555555", "remote": "#999999"}

#: connection colours in the topology view, by kind
CONNECTION_COLORS: Final[dict[str, str]] = {
    "direct": "#2ca02c",
    "relayed": "#ff7f0e",
    "failed": "#d62728",
    "link": "#cccccc",
}

_PROTOCOL_FAMILIES: Final = (
    ("/ipfs/id/", "identify"),
    ("/ipfs/ping/", "ping"),
    ("/perf/", "perf"),
    ("/libp2p/circuit/relay/", "relay"),
    ("/libp2p/dcutr", "dcutr"),
    ("/libp2p/autonat/", "autonat"),
    ("/noise", "noise"),
    ("/tls/", "tls"),
    ("/yamux/", "yamux"),
    ("/mplex/", "mplex"),
    ("/ipfs/kad/", "kad"),
    ("/meshsub/", "gossipsub"),
    ("/ipfs/bitswap", "bitswap"),
)

_GENERIC: Final = frozenset({"stream", "node", "connection"})


def protocol_family(protocol: str) -> str | None:
    """Return the family of a protocol id (``/ipfs/ping/1.0.0`` -> ``ping``), or None."""
    for prefix, family in _PROTOCOL_FAMILIES:
        if protocol.startswith(prefix):
            return family
    return None


def family_of(span_name: str, protocol: object = None) -> str:
    """Return the family of a span: its name's first part, or its protocol's if generic."""
    family = span_name.split(".", 1)[0]
    if family in _GENERIC and isinstance(protocol, str):
        return protocol_family(protocol) or family
    return family


def family_color(family: str) -> str:
    """Return the colour of a family (grey for unknown ones)."""
    return FAMILY_COLORS.get(family, _DEFAULT_COLOR)
