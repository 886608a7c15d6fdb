"""YamuxConnection: the Yamux core driven by the shared trio driver."""

from __future__ import annotations

from typing import Any, Final

import trio
from opentelemetry.trace import Tracer

from ...tracing import spans
from ..driver import MuxerDriver
from .config import YamuxConfig
from .frames import YAMUX_PROTOCOL_ID
from .session import YamuxSession

__all__ = ["YamuxConnection"]


class YamuxConnection(MuxerDriver):
    """A Yamux connection over ``stream`` (``is_initiator``: we are the client, odd ids)."""

    PROTOCOL_ID: Final = YAMUX_PROTOCOL_ID
    session_span_name = spans.YAMUX_SESSION
    stream_span_name = spans.YAMUX_STREAM

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        *,
        is_initiator: bool,
        config: YamuxConfig | None = None,
        peer: Any = None,
        tracer: Tracer = spans.NO_TRACER,
    ) -> None:
        config = config or YamuxConfig()
        self.config = config
        self.session = YamuxSession(is_client=is_initiator, config=config)
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
            uses_timers=True,
        )

    @property
    def rtt(self) -> float | None:
        """Return the smoothed round-trip time from pings, in seconds (None before one)."""
        return self.session.rtt
