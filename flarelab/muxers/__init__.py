"""Stream multiplexers: Yamux (``/yamux/1.0.0``) and Mplex (``/mplex/6.7.0``).

Each is a pure protocol core (bytes and commands in; events and bytes out; time passed in)
driven by one shared trio driver, behind the :class:`MuxedConnection` / :class:`MuxedStream`
interfaces the node uses.
"""

from .base import MuxedConnection, MuxedStream, TooManyStreamsError
from .mplex import MPLEX_PROTOCOL_ID, MplexConfig, MplexConnection
from .yamux import YAMUX_PROTOCOL_ID, YamuxConfig, YamuxConnection

__all__ = [
    "MPLEX_PROTOCOL_ID",
    "YAMUX_PROTOCOL_ID",
    "MplexConfig",
    "MplexConnection",
    "MuxedConnection",
    "MuxedStream",
    "TooManyStreamsError",
    "YamuxConfig",
    "YamuxConnection",
]
