"""Yamux settings: windows, limits, keepalive, and the driver's I/O sizes and timeouts."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import LocalProtocolError
from .frames import INITIAL_WINDOW, MAX_U32

__all__ = ["MAX_PAYLOAD_LIMIT", "YamuxConfig"]

#: The largest Data frame payload rust-yamux accepts (its MAX_FRAME_BODY_LEN); go- and
#: js-yamux accept anything within the window they granted.
MAX_PAYLOAD_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True)
class YamuxConfig:
    """Settings of one Yamux connection (defaults follow go-yamux where it has one)."""

    #: The receive window each stream starts with. The spec fixes 256 KiB as what both
    #: sides assume; more is granted in the SYN/ACK window update.
    initial_window: int = INITIAL_WINDOW
    #: The largest receive window auto-tuning grows a stream to (go: 16 MiB).
    max_window: int = 16 * 1024 * 1024
    #: The most all streams' receive windows may add up to; beyond it no window grows, so
    #: memory stays bounded by ``max(this, streams * initial_window)``.
    max_connection_window: int = 256 * 1024 * 1024
    #: Grow a stream's window when half of it was consumed in less than this many RTTs
    #: (go-yamux and js-yamux: 4).
    autotune_rtts: float = 4.0
    #: The least RTT auto-tuning assumes (seconds); above it, the smallest of the recent
    #: ping samples. Over loopback or a LAN the path's RTT is far below the time a busy
    #: event loop takes to turn a window update around, and the samples there are mostly
    #: scheduling noise (0.05-8 ms): without a floor a connection whose sample happened to
    #: be small hardly grows its windows (18% fewer MB per CPU second, measured over
    #: TCP + Noise in one process). Memory stays bounded by ``max_window`` and
    #: ``max_connection_window``, and a window only grows while its reader keeps up.
    autotune_min_rtt: float = 0.002
    #: The largest Data payload we send (also bounded by the peer's window and by
    #: ``write_batch``): a 64 KiB or 256 KiB write goes out as one frame. Peers accept
    #: it: go- and js-yamux take any frame within the window they granted, rust-yamux up
    #: to 1 MiB; the Noise layer below splits a write into its own frames anyway.
    max_payload: int = 256 * 1024
    #: Streams the peer may have open at once; more are reset on arrival (go: 1000).
    max_inbound_streams: int = 512
    #: Streams we may have open at once; ``open_stream`` raises TooManyStreamsError beyond.
    max_outbound_streams: int = 512
    #: Inbound streams we have not acknowledged yet (not accepted, or accepted but nothing
    #: sent on them); more are reset on arrival. The spec asks to buffer at least 256.
    max_unacked_inbound: int = 256
    #: Outbound streams the peer has not acknowledged yet (the spec's ACK backlog, at most
    #: 256); ``open_stream`` waits beyond.
    max_unacked_outbound: int = 256
    #: Ping after this much silence from the peer (None: never); go and js: 30 s.
    keepalive_interval: float | None = 30.0
    #: A ping unanswered (with nothing else received) for this long kills the connection
    #: when keepalive is on; otherwise the sample is dropped.
    ping_timeout: float = 10.0
    #: Measure the RTT (which window auto-tuning needs) at start and then this often.
    rtt_interval: float | None = 30.0
    #: Control frames the peer makes us queue (pongs, resets) beyond this many bytes, while
    #: it does not read them, end the connection.
    max_pending_control: int = 64 * 1024
    #: Payload bytes one stream frames at a time before letting others queue theirs.
    write_batch: int = 256 * 1024
    #: The most bytes of queued frames the writer joins into one ``send_all``.
    max_write: int = 1024 * 1024
    #: How much the driver asks the byte stream for in one read.
    read_size: int = 256 * 1024
    #: A frame write that makes no progress for this long kills the connection (go: 10 s).
    write_timeout: float = 10.0
    #: How long closing waits to flush a GoAway before closing the byte stream.
    close_timeout: float = 1.0

    def __post_init__(self) -> None:
        if not INITIAL_WINDOW <= self.initial_window <= self.max_window <= MAX_U32:
            raise LocalProtocolError(
                "yamux windows must satisfy 256 KiB <= initial_window <= max_window < 4 GiB"
            )
        if self.max_connection_window < self.initial_window:
            raise LocalProtocolError("max_connection_window must be at least initial_window")
        if not 1 <= self.max_payload <= MAX_PAYLOAD_LIMIT:
            raise LocalProtocolError(
                f"max_payload must be in 1..{MAX_PAYLOAD_LIMIT} (rust-yamux refuses larger frames)"
            )
        for name in (
            "max_inbound_streams",
            "max_outbound_streams",
            "max_unacked_inbound",
            "max_unacked_outbound",
            "max_pending_control",
            "write_batch",
            "max_write",
            "read_size",
        ):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"{name} must be positive")
        for name in ("keepalive_interval", "rtt_interval"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise LocalProtocolError(f"{name} must be positive or None")
        if self.ping_timeout <= 0 or self.write_timeout <= 0 or self.close_timeout < 0:
            raise LocalProtocolError("timeouts must be positive")
        if self.autotune_rtts <= 0 or self.autotune_min_rtt < 0:
            raise LocalProtocolError("autotune_rtts must be positive, autotune_min_rtt >= 0")
