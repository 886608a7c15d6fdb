"""Yamux (``/yamux/1.0.0``): a pure session core and its trio driver."""

from .config import YamuxConfig
from .connection import YamuxConnection
from .frames import YAMUX_PROTOCOL_ID, Flag, FrameHeader, FrameType, GoAwayCode
from .session import YamuxSession

__all__ = [
    "YAMUX_PROTOCOL_ID",
    "Flag",
    "FrameHeader",
    "FrameType",
    "GoAwayCode",
    "YamuxConfig",
    "YamuxConnection",
    "YamuxSession",
]
