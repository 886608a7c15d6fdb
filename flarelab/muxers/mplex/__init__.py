"""Mplex (``/mplex/6.7.0``): a pure session core and its trio driver."""

from .config import MplexConfig
from .connection import MplexConnection
from .frames import MPLEX_PROTOCOL_ID, MplexFlag, MplexFrameHeader
from .session import MplexSession

__all__ = [
    "MPLEX_PROTOCOL_ID",
    "MplexConfig",
    "MplexConnection",
    "MplexFlag",
    "MplexFrameHeader",
    "MplexSession",
]
