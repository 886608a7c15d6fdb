"""perf 1.0.0: measure throughput by moving bytes both ways over one stream.

The client sends a big-endian u64 (how many bytes it wants back), then uploads, then
closes its write side. The server reads to EOF, and only then sends the requested bytes
and closes. Lengths are checked exactly on both sides.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import trio
from opentelemetry.trace import Tracer

from ..errors import LimitExceededError, RemoteProtocolError
from ..tracing import spans
from ..wire import IncompleteError, StreamReader

__all__ = ["PERF_PROTOCOL", "PerfResult", "handle_perf", "perf_stream"]

PERF_PROTOCOL = "/perf/1.0.0"
#: chunk size for writes; large writes keep the per-call overhead out of the measurement
WRITE_CHUNK = 256 * 1024
READ_CHUNK = 1024 * 1024
_ZEROS = memoryview(bytes(WRITE_CHUNK))


@dataclass(frozen=True)
class PerfResult:
    """One perf run, as the client saw it."""

    upload_bytes: int
    download_bytes: int
    upload_seconds: float  # until our write side was closed
    total_seconds: float  # until the last downloaded byte
    first_byte_seconds: float  # until the first downloaded byte (server saw our EOF)

    @property
    def upload_mbps(self) -> float:
        """Upload throughput in MB/s (10^6 bytes), from start to the first reply byte."""
        t = self.first_byte_seconds if self.download_bytes else self.total_seconds
        return self.upload_bytes / t / 1e6 if t > 0 else 0.0

    @property
    def download_mbps(self) -> float:
        """Download throughput in MB/s, from the first to the last reply byte."""
        t = self.total_seconds - self.first_byte_seconds
        return self.download_bytes / t / 1e6 if t > 0 else 0.0


async def _send_zeros(stream: trio.abc.SendStream, n: int) -> None:
    while n > 0:
        chunk = min(n, WRITE_CHUNK)
        await stream.send_all(_ZEROS[:chunk])
        n -= chunk


async def perf_stream(
    stream: trio.abc.HalfCloseableStream,
    *,
    upload: int,
    download: int,
    tracer: Tracer = spans.NO_TRACER,
    peer: object = None,
) -> PerfResult:
    """Run the client side of perf over ``stream``."""
    attrs: dict[str, spans.AttributeValue] = {
        spans.LIBP2P_PROTOCOL: PERF_PROTOCOL,
        "perf.upload_bytes": upload,
        "perf.download_bytes": download,
    }
    if peer is not None:
        attrs[spans.LIBP2P_REMOTE_PEER_ID] = str(peer)
    with tracer.start_as_current_span(spans.PERF, attributes=attrs) as span:
        try:
            start = trio.current_time()
            await stream.send_all(struct.pack(">Q", download))
            spans.message_sent(span, "request", 8, {"perf.download_bytes": download})
            await _send_zeros(stream, upload)
            await stream.send_eof()
            upload_done = trio.current_time()
            spans.message_sent(span, "upload", upload)
            received = 0
            first = None
            while True:
                data = await stream.receive_some(READ_CHUNK)
                if not data:
                    break
                if first is None:
                    first = trio.current_time()
                received += len(data)
                if received > download:
                    raise RemoteProtocolError(
                        f"perf server sent more than the {download} bytes asked for"
                    )
            end = trio.current_time()
            if received != download:
                raise RemoteProtocolError(
                    f"perf server sent {received} of the {download} bytes asked for"
                )
            spans.message_received(span, "download", received)
            result = PerfResult(
                upload_bytes=upload,
                download_bytes=received,
                upload_seconds=upload_done - start,
                total_seconds=end - start,
                first_byte_seconds=(first if first is not None else end) - start,
            )
            span.set_attribute(spans.LIBP2P_BYTES_SENT, upload)
            span.set_attribute(spans.LIBP2P_BYTES_RECEIVED, received)
            span.set_attribute("perf.upload_mbps", round(result.upload_mbps, 3))
            span.set_attribute("perf.download_mbps", round(result.download_mbps, 3))
            return result
        except BaseException as exc:
            if isinstance(exc, RemoteProtocolError):
                exc.protocol = exc.protocol or PERF_PROTOCOL
                exc.peer = exc.peer if exc.peer is not None else peer
            if isinstance(exc, Exception):
                spans.mark_error(span, exc)
            raise


async def handle_perf(
    stream: trio.abc.HalfCloseableStream, *, max_download: int = 1 << 36
) -> tuple[int, int]:
    """Serve one perf request; return (bytes received, bytes sent).

    ``max_download`` caps what a client may ask us to send (64 GiB by default).
    """
    reader = StreamReader(stream, chunk=8)
    try:
        (want,) = struct.unpack(">Q", await reader.read_exactly(8))
    except IncompleteError as exc:
        exc.protocol = PERF_PROTOCOL
        raise
    if want > max_download:
        raise LimitExceededError(
            f"perf client asked for {want} bytes, over the limit of {max_download}",
            protocol=PERF_PROTOCOL,
        )
    received = reader.buffered
    reader.take_buffer()
    while True:
        data = await stream.receive_some(READ_CHUNK)
        if not data:
            break
        received += len(data)
    await _send_zeros(stream, want)
    await stream.send_eof()
    return received, want
