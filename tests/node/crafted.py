"""Crafted peers for the bad-input tests: they speak the real stack until they misbehave.

* :func:`tcp_connect`, :func:`drain_until_closed` -- raw TCP to a node, and proof that the
  node hung up on us.
* :func:`secure_channel` -- multistream-select ``/noise`` and a real Noise XX handshake.
* :func:`bad_signature_handshake` -- the same handshake driven with the pure Noise core
  (:class:`~flarelab.security.noise.XXHandshakeState`), with a payload whose identity
  signature does not verify.
* :class:`RawYamux` -- a Yamux speaker on a secure channel that writes whatever frame it is
  told to (valid or not), answers pings, and can open streams and negotiate protocols by
  hand, so a test can put one bad frame among good ones.
* :func:`wait_error_span` -- find the span a node marked as failed, on its span bus.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence

import trio

from flarelab.errors import RemoteProtocolError
from flarelab.identity import PeerId, PrivateKey
from flarelab.mss import MULTISTREAM_PROTOCOL, encode_message, negotiate_initiator
from flarelab.multiaddr import Multiaddr
from flarelab.muxers.yamux.frames import HEADER, HEADER_SIZE, Flag, FrameType
from flarelab.node import Node
from flarelab.security.noise import (
    NOISE_PROTOCOL_ID,
    NoiseStream,
    XXHandshakeState,
    noise_handshake,
)
from flarelab.security.noise.payload import encode_payload, sign_payload
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.records import SpanRecord
from flarelab.wire import IncompleteError, StreamReader

__all__ = [
    "SPAN_WAIT",
    "RawYamux",
    "bad_signature_handshake",
    "drain_until_closed",
    "error_text",
    "is_error_span",
    "local_multiaddr",
    "secure_channel",
    "tcp_connect",
    "wait_error_span",
    "wait_span",
    "yamux_frame",
]

#: How long a test waits for a span the node must have produced by then.
SPAN_WAIT = 10.0
YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"


# ---------------------------------------------------------------------- raw TCP


async def tcp_connect(node: Node) -> trio.SocketStream:
    """Open a plain TCP connection to ``node``'s first listen address."""
    addr = node.listen_addrs()[0]
    ip = addr.ip_address
    assert ip is not None
    port = int(addr.components()[1].value or 0)
    return await trio.open_tcp_stream(str(ip), port)


def local_multiaddr(stream: trio.SocketStream) -> str:
    """Return our end of ``stream`` as the node names it (``/ip4/.../tcp/...``)."""
    host, port = stream.socket.getsockname()[:2]
    return str(Multiaddr.from_ip_port(host, port, "tcp"))


async def drain_until_closed(stream: trio.abc.ReceiveStream, limit: int = 1 << 20) -> bytes:
    """Read until the peer closes the connection (EOF or reset); return what came."""
    got = bytearray()
    while len(got) <= limit:
        try:
            data = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return bytes(got)
        if not data:
            return bytes(got)
        got += data
    raise AssertionError(f"the node sent over {limit} bytes without closing")


# ---------------------------------------------------------------------- Noise


async def secure_channel(
    stream: trio.abc.Stream, key: PrivateKey, node: Node, muxers: Sequence[str] = (YAMUX,)
) -> NoiseStream:
    """Select ``/noise`` and run a valid Noise XX handshake as initiator."""
    _, sec = await negotiate_initiator(stream, [NOISE_PROTOCOL_ID])
    return await noise_handshake(
        sec, local_key=key, is_initiator=True, expected_peer=node.peer_id, muxers=muxers
    )


def _frame(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


async def bad_signature_handshake(
    stream: trio.abc.Stream, key: PrivateKey, *, signer: PrivateKey | None = None
) -> None:
    """Run Noise XX as initiator with an identity signature that does not verify.

    Without ``signer`` one bit of our real signature is flipped; with it, the static key
    is signed by ``signer`` while the payload still names ``key`` (a stolen identity).
    """
    _, sec = await negotiate_initiator(stream, [NOISE_PROTOCOL_ID])
    xx = XXHandshakeState(initiator=True)
    await sec.send_all(_frame(xx.write_message(b"")))
    reader = StreamReader(sec)
    length = int.from_bytes(await reader.read_exactly(2), "big")
    xx.read_message(await reader.read_exactly(length))  # the node's payload; not checked
    payload = sign_payload(key, xx.local_static_public, (YAMUX,))
    if signer is None:
        sig = bytearray(payload.identity_sig)
        sig[len(sig) // 2] ^= 0x01
        payload = dataclasses.replace(payload, identity_sig=bytes(sig))
    else:
        forged = sign_payload(signer, xx.local_static_public, (YAMUX,))
        payload = dataclasses.replace(payload, identity_sig=forged.identity_sig)
    await sec.send_all(_frame(xx.write_message(encode_payload(payload))))


# ---------------------------------------------------------------------- Yamux


def yamux_frame(
    frame_type: int,
    flags: int,
    stream_id: int,
    length: int | None = None,
    payload: bytes = b"",
    *,
    version: int = 0,
) -> bytes:
    """Return a Yamux frame with any field values (``length`` defaults to the payload's)."""
    size = len(payload) if length is None else length
    return HEADER.pack(version, frame_type, flags, stream_id, size) + payload


def mss_answer(protocol: str) -> bytes:
    """Return what a multistream responder sends when it accepts ``protocol``."""
    return encode_message(MULTISTREAM_PROTOCOL) + encode_message(protocol)


class RawYamux:
    """The client side of a Yamux session, written by hand so it can break the protocol.

    Run :meth:`run` in a nursery (``await nursery.start(raw.run)``). It records every frame
    the node sends, collects stream data, answers pings, and ignores streams the node
    opens. :meth:`send` writes raw bytes (any frames at all) in one write.
    """

    def __init__(self, stream: NoiseStream) -> None:
        self.stream = stream
        self.next_id = 1
        self.frames: list[tuple[int, int, int, int]] = []  # (type, flags, stream id, length)
        self.data: defaultdict[int, bytearray] = defaultdict(bytearray)
        self.fin: set[int] = set()
        self.rst: set[int] = set()
        self.inbound: list[int] = []  # streams the node opened, in order
        self.goaway: int | None = None
        self.closed = False
        self.closed_by: BaseException | None = None
        self._changed = trio.Event()
        self._send_lock = trio.Lock()

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the secure channel in one piece."""
        async with self._send_lock:
            await self.stream.send_all(data)

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read frames until the node closes the connection."""
        reader = StreamReader(self.stream)
        task_status.started()
        try:
            while True:
                _version, ftype, flags, sid, length = HEADER.unpack(
                    await reader.read_exactly(HEADER_SIZE)
                )
                payload = await reader.read_exactly(length) if ftype == FrameType.DATA else b""
                self.frames.append((ftype, flags, sid, length))
                if ftype == FrameType.PING and flags & Flag.SYN:
                    await self.send(yamux_frame(FrameType.PING, Flag.ACK, 0, length))
                elif ftype == FrameType.GO_AWAY:
                    self.goaway = length
                elif ftype in (FrameType.DATA, FrameType.WINDOW_UPDATE):
                    if flags & Flag.SYN and sid % 2 == 0:
                        self.inbound.append(sid)
                    self.data[sid] += payload
                    if flags & Flag.FIN:
                        self.fin.add(sid)
                    if flags & Flag.RST:
                        self.rst.add(sid)
                self._pulse()
        except (
            IncompleteError,
            RemoteProtocolError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ) as exc:
            self.closed_by = exc
        finally:
            self.closed = True
            self._pulse()

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds; fail at once if the node closes first."""
        while not predicate():
            if self.closed:
                raise AssertionError(f"the node closed the connection before {what}")
            await self._changed.wait()

    async def wait_closed(self) -> None:
        """Wait until the node has closed the connection."""
        while not self.closed:
            await self._changed.wait()

    def allocate(self) -> int:
        """Return the next stream id of ours (odd: we are the client)."""
        sid = self.next_id
        self.next_id += 2
        return sid

    async def open_stream(self, protocol: str) -> int:
        """Open a stream and agree on ``protocol`` by hand; return its id."""
        sid = self.allocate()
        proposal = encode_message(MULTISTREAM_PROTOCOL) + encode_message(protocol)
        await self.send(
            yamux_frame(FrameType.WINDOW_UPDATE, Flag.SYN, sid, 0)
            + yamux_frame(FrameType.DATA, 0, sid, payload=proposal)
        )
        expected = mss_answer(protocol)
        await self.wait_until(
            lambda: len(self.data[sid]) >= len(expected) or sid in self.rst,
            f"stream {sid} negotiated {protocol}",
        )
        assert sid not in self.rst, f"the node reset stream {sid} during negotiation"
        assert bytes(self.data[sid][: len(expected)]) == expected
        del self.data[sid][: len(expected)]
        return sid

    async def accept_stream(self, protocol: str) -> int:
        """Wait for the node to open a stream and propose ``protocol``; return its id.

        The proposal is consumed but not answered: the caller answers as it likes.
        """
        proposal = encode_message(MULTISTREAM_PROTOCOL) + encode_message(protocol)

        def proposed() -> int | None:
            for sid in self.inbound:
                if bytes(self.data[sid][: len(proposal)]) == proposal:
                    return sid
            return None

        await self.wait_until(lambda: proposed() is not None, f"the node proposed {protocol}")
        sid = proposed()
        assert sid is not None
        del self.data[sid][: len(proposal)]
        return sid

    async def exchange(self, sid: int, payload: bytes) -> bytes:
        """Send ``payload`` on stream ``sid`` and return as many bytes as it comes back."""
        await self.send(yamux_frame(FrameType.DATA, 0, sid, payload=payload))
        await self.wait_until(
            lambda: len(self.data[sid]) >= len(payload) or sid in self.rst,
            f"an answer on stream {sid}",
        )
        assert sid not in self.rst, f"the node reset stream {sid}"
        answer = bytes(self.data[sid][: len(payload)])
        del self.data[sid][: len(payload)]
        return answer


# ---------------------------------------------------------------------- spans


def error_text(record: SpanRecord) -> str:
    """Return a span's status description and the messages of its exception events."""
    parts = [record.description or ""]
    for event in record.events:
        if event.name == "exception":
            parts.append(str(event.attributes.get("exception.message", "")))
    return " | ".join(parts)


def _summary(bus: SpanBus) -> str:
    failed = [r for r in bus.history() if r.ended and r.status == "error"]
    lines = [
        f"  {r.name} peer={r.attributes.get('libp2p.remote_peer_id')} "
        f"addr={r.attributes.get('libp2p.multiaddr')}: {error_text(r)}"
        for r in failed
    ]
    return "\n".join(lines) or "  (none)"


def is_error_span(
    record: SpanRecord,
    name: str,
    *,
    protocol: str,
    peer: PeerId | None = None,
    addr: str | None = None,
    contains: str = "",
) -> bool:
    """Tell whether ``record`` is the end of a span ``name`` marked error as described.

    The protocol (and ``contains``) must appear in the status or an exception event;
    ``peer`` must be the span's ``libp2p.remote_peer_id``; ``addr`` (for failures before the
    peer is known) its ``libp2p.multiaddr``.
    """
    if not (record.ended and record.name == name and record.status == "error"):
        return False
    text = error_text(record)
    if protocol not in text or contains not in text:
        return False
    if peer is not None and record.attributes.get("libp2p.remote_peer_id") != str(peer):
        return False
    return addr is None or record.attributes.get("libp2p.multiaddr") == addr


async def wait_span(bus: SpanBus, predicate: Callable[[SpanRecord], bool], what: str) -> SpanRecord:
    """Wait (at most :data:`SPAN_WAIT` s) for a span record that satisfies ``predicate``.

    On time-out the assertion lists every span marked error so far, which is what one
    wants to read when a node traced a failure differently than expected.
    """
    with bus.subscribe(max_buffer=100_000, replay=True) as sub, trio.move_on_after(SPAN_WAIT):
        async for rec in sub:
            if predicate(rec):
                return rec
    raise AssertionError(f"no span {what} within {SPAN_WAIT} s; failed spans:\n{_summary(bus)}")


async def wait_error_span(
    bus: SpanBus,
    name: str,
    *,
    protocol: str,
    peer: PeerId | None = None,
    addr: str | None = None,
    contains: str = "",
) -> SpanRecord:
    """Wait for the span the node marked error (see :func:`is_error_span`)."""
    return await wait_span(
        bus,
        lambda rec: is_error_span(
            rec, name, protocol=protocol, peer=peer, addr=addr, contains=contains
        ),
        f"{name} marked error naming {protocol!r}, {contains!r}, peer {peer}, addr {addr}",
    )
