"""MplexConnection: the Mplex core driven by the shared trio driver."""

from __future__ import annotations

from typing import Any, Final

import trio
from opentelemetry.trace import Tracer

from ...tracing import spans
from ..driver import MuxerDriver
from .config import MplexConfig
from .frames import MPLEX_PROTOCOL_ID
from .session import MplexSession

__all__ = ["MplexConnection"]


class MplexConnection(MuxerDriver):
    """An Mplex connection over ``stream`` (``is_initiator``: we dialled; names no ids)."""

    PROTOCOL_ID: Final = MPLEX_PROTOCOL_ID
    session_span_name = spans.MPLEX_SESSION
    stream_span_name = spans.MPLEX_STREAM
    message_names = {"open": "NewStream", "ack": None, "close": "Close", "reset": "Reset"}

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        *,
        is_initiator: bool,
        config: MplexConfig | None = None,
        peer: Any = None,
        tracer: Tracer = spans.NO_TRACER,
    ) -> None:
        config = config or MplexConfig()
        self.config = config
        self.session = MplexSession(config=config)
        super().__init__(
            stream,
            self.session,
            is_initiator=is_initiator,
            peer=peer,
            tracer=tracer,
            read_size=config.read_size,
            write_timeout=config.write_timeout,
            close_timeout=config.close_timeout,
            write_batch=config.write_batch,
            max_write=config.max_write,
            uses_timers=False,
        )
