"""Helpers for the muxer tests: core pairs without I/O, connection pairs over memory streams,
a scripted raw peer that sends hand-made frames, and an in-memory span exporter.

Rules for the muxer tests (as trio-websocket states them): memory streams only (the
interop module uses loopback), deterministic, no wall-clock sleeps: ``autojump_clock``,
events and ``trio.fail_after`` bounds.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flarelab.muxers.driver import MuxerDriver
from flarelab.muxers.events import MuxerEvent
from flarelab.muxers.mplex import MplexConfig, MplexConnection, MplexSession
from flarelab.muxers.mplex.frames import encode_frame
from flarelab.muxers.yamux import YamuxConfig, YamuxConnection, YamuxSession
from flarelab.muxers.yamux.frames import HEADER, HEADER_SIZE, FrameHeader, decode_header

#: Yamux settings for tests: no pings unless a test asks for them.
QUIET = YamuxConfig(keepalive_interval=None, rtt_interval=None)

Core = YamuxSession | MplexSession


def yamux_frame(
    frame_type: int, flags: int, stream_id: int, length: int, payload: bytes = b""
) -> bytes:
    """Return a raw Yamux frame (no validation: tests send malformed ones too)."""
    return struct.pack(">BBHII", 0, frame_type, flags, stream_id, length) + payload


def parse_yamux_frames(data: bytes) -> list[tuple[FrameHeader, bytes]]:
    """Split ``data`` into (header, payload) pairs; Data frames carry payloads."""
    frames = []
    pos = 0
    while pos < len(data):
        header = decode_header(data, pos)
        pos += HEADER_SIZE
        payload = b""
        if header.type == 0:
            payload = data[pos : pos + header.length]
            pos += header.length
        frames.append((header, payload))
    return frames


def mplex_frame(stream_id: int, flag: int, payload: bytes = b"") -> bytes:
    """Return a raw Mplex frame."""
    return encode_frame(stream_id, flag, payload)


@dataclass
class CorePair:
    """A client and a server core wired together, no I/O (h11's ConnectionPair idea)."""

    client: Any
    server: Any
    now: float = 0.0
    client_events: list[MuxerEvent] = field(default_factory=list)
    server_events: list[MuxerEvent] = field(default_factory=list)
    wire_log: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def yamux(
        cls, config: YamuxConfig = QUIET, server_config: YamuxConfig | None = None
    ) -> CorePair:
        """Return a started Yamux pair."""
        pair = cls(
            YamuxSession(is_client=True, config=config),
            YamuxSession(is_client=False, config=server_config or config),
        )
        pair.client.start(0.0)
        pair.server.start(0.0)
        return pair

    @classmethod
    def mplex(cls, config: MplexConfig | None = None) -> CorePair:
        """Return an Mplex pair."""
        return cls(MplexSession(config=config), MplexSession(config=config))

    def flush(self, rounds: int = 50) -> None:
        """Move output both ways until neither side has anything to say."""
        for _ in range(rounds):
            moved = False
            for src, dst, name, events in (
                (self.client, self.server, "c->s", self.server_events),
                (self.server, self.client, "s->c", self.client_events),
            ):
                data = bytes(src.data_to_send())
                if data:
                    moved = True
                    self.wire_log.append((name, data))
                    dst.receive_data(data, self.now)
                events.extend(dst.take_events())
            self.client_events.extend(self.client.take_events())
            self.server_events.extend(self.server.take_events())
            if not moved:
                return
        raise AssertionError("the cores kept talking")

    def take(self, side: str) -> list[MuxerEvent]:
        """Return and clear the events one side produced."""
        events = self.client_events if side == "client" else self.server_events
        out = list(events)
        events.clear()
        return out


@asynccontextmanager
async def connection_pair(
    kind: str = "yamux",
    config: Any = None,
    server_config: Any = None,
    *,
    tracer: Any = None,
) -> AsyncIterator[tuple[MuxerDriver, MuxerDriver]]:
    """Run a client and a server connection over a memory stream pair; close both on exit."""
    left, right = trio.testing.memory_stream_pair()
    extra = {"tracer": tracer} if tracer is not None else {}
    client: MuxerDriver
    server: MuxerDriver
    if kind == "yamux":
        client = YamuxConnection(
            left, is_initiator=True, config=config or QUIET, peer="server", **extra
        )
        server = YamuxConnection(
            right,
            is_initiator=False,
            config=server_config or config or QUIET,
            peer="client",
            **extra,
        )
    else:
        client = MplexConnection(left, is_initiator=True, config=config, peer="server", **extra)
        server = MplexConnection(
            right, is_initiator=False, config=server_config or config, peer="client", **extra
        )
    async with trio.open_nursery() as nursery:
        await nursery.start(_run_quietly, client)
        await nursery.start(_run_quietly, server)
        try:
            yield client, server
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
                await server.aclose()
            nursery.cancel_scope.cancel()


async def _run_quietly(conn: MuxerDriver, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run a connection; a protocol error is the test's business (it reads close_reason)."""
    try:
        await conn.run(task_status=task_status)
    except Exception as exc:
        conn.run_error = exc  # type: ignore[attr-defined]


@dataclass
class RawPeer:
    """The far end of a connection under test, scripted by hand: raw bytes both ways."""

    stream: trio.abc.HalfCloseableStream
    buffer: bytearray = field(default_factory=bytearray)

    async def send(self, data: bytes) -> None:
        """Write raw bytes to the connection under test."""
        await self.stream.send_all(data)

    async def read_some(self) -> bytes:
        """Return what the connection under test wrote (waits for something)."""
        data = await self.stream.receive_some(1 << 20)
        return bytes(data)

    async def read_until(self, predicate: Callable[[bytes], bool], within: float = 5) -> bytes:
        """Read until ``predicate(all bytes so far)``; return all bytes read."""
        with trio.fail_after(within):
            while not predicate(bytes(self.buffer)):
                data = await self.stream.receive_some(1 << 20)
                if not data:
                    break
                self.buffer += data
        return bytes(self.buffer)

    async def read_to_eof(self, within: float = 5) -> bytes:
        """Read everything until the connection under test closes."""
        with trio.fail_after(within):
            while True:
                data = await self.stream.receive_some(1 << 20)
                if not data:
                    return bytes(self.buffer)
                self.buffer += data


@asynccontextmanager
async def raw_peer(
    kind: str = "yamux", *, is_initiator: bool = False, config: Any = None
) -> AsyncIterator[tuple[MuxerDriver, RawPeer, trio.Nursery]]:
    """Run one connection under test against a hand-scripted peer."""
    ours, theirs = trio.testing.memory_stream_pair()
    conn: MuxerDriver
    if kind == "yamux":
        conn = YamuxConnection(ours, is_initiator=is_initiator, config=config or QUIET, peer="raw")
    else:
        conn = MplexConnection(ours, is_initiator=is_initiator, config=config, peer="raw")
    async with trio.open_nursery() as nursery:
        await nursery.start(_run_quietly, conn)
        try:
            yield conn, RawPeer(theirs), nursery
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()
            nursery.cancel_scope.cancel()


async def send_until_broken(stream: trio.abc.SendStream, chunk: bytes, pause: float = 0) -> None:
    """Send ``chunk`` over and over until the stream breaks (raises)."""
    while True:
        await stream.send_all(chunk)
        if pause:
            await trio.sleep(pause)


def span_capture() -> tuple[Any, InMemorySpanExporter]:
    """Return a tracer whose finished spans land in the returned exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("muxer-tests"), exporter


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """Return the finished spans called ``name``."""
    return [span for span in exporter.get_finished_spans() if span.name == name]


def event_names(span: ReadableSpan) -> list[tuple[str, Any]]:
    """Return (event name, message.type or None) for each event of a span."""
    return [(e.name, (e.attributes or {}).get("message.type")) for e in span.events]


__all__ = [
    "HEADER",
    "QUIET",
    "CorePair",
    "RawPeer",
    "connection_pair",
    "event_names",
    "mplex_frame",
    "parse_yamux_frames",
    "raw_peer",
    "send_until_broken",
    "span_capture",
    "spans_named",
    "yamux_frame",
]
