"""Mplex settings: message and buffer limits, stream limits, the driver's I/O sizes."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import LocalProtocolError
from .frames import MAX_MESSAGE_SIZE

__all__ = ["MplexConfig"]


@dataclass(frozen=True, slots=True)
class MplexConfig:
    """Settings of one Mplex connection."""

    #: The largest message payload we accept (go-mplex: 1 MiB); larger ends the connection.
    max_message_size: int = MAX_MESSAGE_SIZE
    #: The largest payload we send in one message (also bounded by ``write_batch``): a
    #: 64 KiB or 256 KiB write goes out as one message. go-, js- and rust-mplex accept
    #: messages up to 1 MiB; the Noise layer below splits a write into its frames anyway.
    max_payload: int = 256 * 1024
    #: Unread bytes one stream may buffer. Mplex has no flow control, so a reader that
    #: falls this far behind gets its stream reset (js-mplex: 4 MiB, the same policy).
    max_stream_buffer: int = 4 * 1024 * 1024
    #: Streams the peer may have open at once; more are reset on arrival (js: 1024).
    max_inbound_streams: int = 512
    #: Streams we may have open at once; ``open_stream`` raises TooManyStreamsError beyond.
    max_outbound_streams: int = 512
    #: Inbound streams not yet accepted; more are reset on arrival.
    accept_backlog: int = 256
    #: Stream names (NewStream payloads) are kept up to this many bytes.
    max_stream_name: int = 1024
    #: Control frames the peer makes us queue (resets), while not reading them, beyond this
    #: many bytes end the connection.
    max_pending_control: int = 64 * 1024
    #: Payload bytes one stream frames at a time before letting others queue theirs.
    write_batch: int = 256 * 1024
    #: The most bytes of queued frames the writer joins into one ``send_all``.
    max_write: int = 1024 * 1024
    #: How much the driver asks the byte stream for in one read.
    read_size: int = 256 * 1024
    #: A frame write that makes no progress for this long kills the connection.
    write_timeout: float = 10.0
    #: How long closing waits to flush pending frames before closing the byte stream.
    close_timeout: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "max_message_size",
            "max_payload",
            "max_stream_buffer",
            "max_inbound_streams",
            "max_outbound_streams",
            "accept_backlog",
            "max_pending_control",
            "write_batch",
            "max_write",
            "read_size",
        ):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"{name} must be positive")
        if self.max_payload > MAX_MESSAGE_SIZE:
            raise LocalProtocolError(
                f"max_payload must be at most {MAX_MESSAGE_SIZE}: peers refuse larger messages"
            )
        if self.max_stream_name < 0:
            raise LocalProtocolError("max_stream_name must not be negative")
        if self.write_timeout <= 0 or self.close_timeout < 0:
            raise LocalProtocolError("timeouts must be positive")
