"""QuicEndpoint: one UDP socket, shared by a listener and every dial that leaves from it.

Hole punching needs a QUIC dial to leave from the port we listen on, so a listening
endpoint also carries outbound connections. Datagrams are routed by the destination
connection id: each connection registers the ids it owns (and, for an inbound one, the
id the client chose for its Initial). A long-header Initial for an unknown id opens an
inbound connection while the endpoint listens (within ``max_pending_handshakes``); an
unsupported version gets a Version Negotiation packet; anything else unknown, garbage or
truncated is counted and dropped without disturbing anyone.

:meth:`QuicEndpoint.send_raw` sends arbitrary datagrams from the socket (DCUtR's QUIC
hole punch sends random bytes from the listen port).

An endpoint's tasks (the receive loop and each connection's flusher) run in
:meth:`serve`: a listener serves its endpoint for as long as it listens and any of its
connections lives; a dial-only endpoint (an ephemeral port, when no listener fits) is
served by the dial while it handshakes and then by its one connection's ``run``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio
from aioquic.quic.packet import encode_quic_version_negotiation
from opentelemetry.trace import Span, Tracer

from ...multiaddr import Multiaddr
from ...tracing import spans
from .config import InitialResend, QuicConfig
from .core import CONNECTION_ID_LENGTH, QUIC_VERSION, QuicCore
from .driver import QuicConnection
from .sockets import Address, BatchDatagramSocket, DatagramSocket

if TYPE_CHECKING:
    from ...identity import PeerId
    from .tls import CredentialCache, TlsCredentials

__all__ = ["PacketHeader", "QuicEndpoint", "peek_header", "quic_multiaddr"]

log = logging.getLogger("flarelab.quic")

#: a client's first datagram must be at least this large (RFC 9000 section 14.1)
MIN_INITIAL_SIZE: Final = 1200
#: connection ids are at most 20 bytes (RFC 9000 section 17.2)
MAX_CID_LENGTH: Final = 20
#: a client's Initial destination id has at least 8 bytes (RFC 9000 section 7.2)
MIN_INITIAL_DCID: Final = 8
#: datagrams taken from the socket per receive round
RECEIVE_BATCH: Final = 64
#: buffer for one datagram when the socket has no batch receive
MAX_DATAGRAM: Final = 65535


# ------------------------------------------------------------------ the routing parser (pure)


@dataclass(frozen=True, slots=True)
class PacketHeader:
    """What routing needs from a datagram's first packet header."""

    is_long: bool
    #: None for short-header packets
    version: int | None
    destination_cid: bytes
    source_cid: bytes
    #: a version-1 Initial (the only packet that may open a connection)
    is_initial: bool


def peek_header(data: bytes, short_cid_length: int = CONNECTION_ID_LENGTH) -> PacketHeader | None:
    """Read the invariant header fields of the first packet (RFC 8999); None if malformed."""
    if not data:
        return None
    first = data[0]
    if first & 0x80:  # long header: flags, version, DCID len, DCID, SCID len, SCID
        if len(data) < 7:
            return None
        version = int.from_bytes(data[1:5], "big")
        dcid_len = data[5]
        if dcid_len > MAX_CID_LENGTH:
            return None
        pos = 6 + dcid_len
        if len(data) < pos + 1:
            return None
        dcid = data[6:pos]
        scid_len = data[pos]
        if scid_len > MAX_CID_LENGTH or len(data) < pos + 1 + scid_len:
            return None
        scid = data[pos + 1 : pos + 1 + scid_len]
        if version != 0 and not first & 0x40:  # the fixed bit, except in Version Negotiation
            return None
        is_initial = version == QUIC_VERSION and (first & 0x30) == 0
        return PacketHeader(True, version, bytes(dcid), bytes(scid), is_initial)
    if not first & 0x40 or len(data) < 1 + short_cid_length:
        return None
    return PacketHeader(False, None, bytes(data[1 : 1 + short_cid_length]), b"", False)


# ------------------------------------------------------------------ addresses


def quic_multiaddr(host: str, port: int) -> Multiaddr:
    """``/ip4|ip6/<host>/udp/<port>/quic-v1``."""
    return Multiaddr.from_ip_port(host, port, "udp").encapsulate("/quic-v1")


def canonical_address(addr: Address) -> tuple[str, int]:
    """(host, port) with the host in its canonical text form."""
    host = str(addr[0])
    try:
        host = ipaddress.ip_address(host.split("%", 1)[0]).compressed + (
            "%" + host.split("%", 1)[1] if "%" in host else ""
        )
    except ValueError:
        pass
    return host, int(addr[1])


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` is a loopback IP address."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------ the endpoint


class QuicEndpoint:
    """A bound UDP socket and the QUIC connections it carries."""

    def __init__(
        self,
        sock: DatagramSocket,
        *,
        credentials: CredentialCache,
        config: QuicConfig,
        tracer: Tracer,
    ) -> None:
        self.socket = sock
        self.credentials = credentials
        self.config = config
        self.tracer = tracer
        host, port = canonical_address(sock.getsockname())
        #: the bound (host, port) and its multiaddr (a wildcard host if bound to one)
        self.bound = (host, port)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.local_addr = quic_multiaddr(host, port)
        #: set for a dial-only endpoint: the one connection it exists for
        self.owner: QuicConnection | None = None
        #: the socket moves batches without a checkpoint per datagram (a real socket)
        self.batch = isinstance(sock, BatchDatagramSocket)
        self._routes: dict[bytes, QuicConnection] = {}
        self._route_keys: dict[QuicConnection, set[bytes]] = {}
        self._on_inbound: Callable[[QuicConnection], None] | None = None
        self._pending = 0
        self._nursery: trio.Nursery | None = None
        self._finished = trio.Event()
        self.closed = False
        # counters, for tests and traces
        self.datagrams_received = 0
        self.dropped_malformed = 0
        self.dropped_unknown = 0
        self.refused_handshakes = 0
        self.version_negotiations = 0

    def __repr__(self) -> str:
        return f"<QuicEndpoint {self.local_addr} connections={len(self._route_keys)}>"

    @property
    def connections(self) -> list[QuicConnection]:
        """The connections this endpoint carries (in any state before their end)."""
        return list(self._route_keys)

    @property
    def listening(self) -> bool:
        """Tell whether inbound connections are accepted."""
        return self._on_inbound is not None

    # ------------------------------------------------------------------ serving

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the receive loop and the connections' flushers until the endpoint closes."""
        if self.closed:
            task_status.started()
            return
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._receive_loop)
                for conn in self._route_keys:
                    nursery.start_soon(conn.drive)
                task_status.started()
                self.refill_credentials()
                await self._finished.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None

    def start_listening(self, on_inbound: Callable[[QuicConnection], None]) -> None:
        """Accept inbound connections; ``on_inbound`` gets each verified one."""
        self._on_inbound = on_inbound

    def stop_listening(self) -> None:
        """Accept no more connections; close once the existing ones are gone."""
        self._on_inbound = None
        if not self._route_keys:
            self.close()

    def close(self) -> None:
        """Close the socket; every connection still here ends."""
        if self.closed:
            return
        self.closed = True
        self._on_inbound = None
        for conn in list(self._route_keys):
            conn._close_reason = conn._close_reason or "endpoint closed"
            conn._end()
            conn.cancel()
        self.socket.close()
        self._finished.set()

    # ------------------------------------------------------------------ routing

    def add_route(self, cid: bytes, conn: QuicConnection) -> None:
        """Send datagrams for ``cid`` to ``conn``."""
        keys = self._route_keys.get(conn)
        if keys is None:
            return  # the connection is gone already
        if self._routes.setdefault(cid, conn) is conn:
            keys.add(cid)

    def remove_route(self, cid: bytes, conn: QuicConnection) -> None:
        """Stop routing ``cid`` (retired by the peer)."""
        if self._routes.get(cid) is conn:
            del self._routes[cid]
            self._route_keys.get(conn, set()).discard(cid)

    def _register(self, conn: QuicConnection, cids: Sequence[bytes]) -> None:
        self._route_keys[conn] = set()
        for cid in cids:
            self.add_route(cid, conn)
        if self._nursery is not None:
            self._nursery.start_soon(conn.drive)

    def connection_ended(self, conn: QuicConnection) -> None:
        """Forget a connection that ended (its late packets will be dropped)."""
        for cid in self._route_keys.pop(conn, ()):
            if self._routes.get(cid) is conn:
                del self._routes[cid]
        if self.owner is conn or (not self._route_keys and not self.listening):
            self.close()

    # ------------------------------------------------------------------ input

    async def _receive_loop(self) -> None:
        sock = self.socket
        batch_receive = sock.receive_batch if isinstance(sock, BatchDatagramSocket) else None
        while True:
            try:
                if batch_receive is not None:
                    batch = await batch_receive(RECEIVE_BATCH)
                else:
                    batch = [await sock.recvfrom(MAX_DATAGRAM)]
            except (OSError, trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                if not self.closed:
                    log.warning("QUIC socket %s failed: %s", self.local_addr, exc)
                    self.close()
                return
            now = trio.current_time()
            self.datagrams_received += len(batch)
            for data, addr in batch:
                reply = self._datagram(data, addr, now)
                if reply is not None:
                    await self.send_raw(reply, addr)

    def _datagram(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """Route one datagram; return a packet to answer with, if any."""
        if len(addr) > 2:
            addr = (addr[0], addr[1])
        header = peek_header(data)
        if header is None:
            self.dropped_malformed += 1
            return None
        conn = self._routes.get(header.destination_cid)
        if conn is not None:
            conn.datagram_received(data, addr, now)
            return None
        if not header.is_long or not self.listening or len(data) < MIN_INITIAL_SIZE:
            self.dropped_unknown += 1
            return None
        if header.version != QUIC_VERSION:
            if header.version == 0:  # a Version Negotiation packet for nobody
                self.dropped_unknown += 1
                return None
            self.version_negotiations += 1
            return encode_quic_version_negotiation(
                source_cid=header.destination_cid,
                destination_cid=header.source_cid,
                supported_versions=[QUIC_VERSION],
            )
        if not header.is_initial or len(header.destination_cid) < MIN_INITIAL_DCID:
            self.dropped_unknown += 1
            return None
        if self._pending >= self.config.max_pending_handshakes:
            self.refused_handshakes += 1
            return None
        conn = self._accept(header.destination_cid, canonical_address(addr))
        conn.datagram_received(data, conn.remote, now)
        return None

    def _accept(self, original_cid: bytes, remote: tuple[str, int]) -> QuicConnection:
        """Open an inbound connection for a client's first Initial."""
        core = QuicCore(
            credentials=self._credentials(),
            config=self.config,
            is_client=False,
            datagram_size=self.config.datagram_size(loopback=is_loopback(remote[0])),
            original_destination_connection_id=original_cid,
        )
        span = self.tracer.start_span(
            spans.QUIC_ACCEPT,
            attributes={
                spans.NETWORK_TRANSPORT: "udp",
                spans.NETWORK_PEER_ADDRESS: remote[0],
                spans.NETWORK_PEER_PORT: remote[1],
                spans.LIBP2P_LOCAL_MULTIADDR: str(self.local_addr),
                spans.LIBP2P_MULTIADDR: str(quic_multiaddr(*remote)),
                spans.LIBP2P_QUIC_ODCID: original_cid.hex(),
            },
        )
        conn = QuicConnection(
            core, endpoint=self, remote=remote, config=self.config, tracer=self.tracer, span=span
        )
        conn.on_handshake = self._inbound_handshake_done
        self._pending += 1
        self._register(conn, [original_cid, core.host_cid])
        return conn

    def _inbound_handshake_done(self, conn: QuicConnection, error: BaseException | None) -> None:
        self._pending -= 1
        self.refill_credentials()
        span = conn.parent_span
        if error is not None:
            spans.mark_error(span, error)
            span.end()
            log.info("inbound QUIC connection from %s refused: %s", conn.remote, error)
            return
        span.set_attribute(spans.LIBP2P_REMOTE_PEER_ID, str(conn.peer))
        span.end()
        on_inbound = self._on_inbound
        if on_inbound is None:
            conn.core.close(reason_phrase="not listening")
            conn.wake()
            return
        on_inbound(conn)

    def _credentials(self) -> TlsCredentials:
        """Fresh credentials for a new connection (the spare, if one is ready)."""
        return self.credentials.take()

    def refill_credentials(self) -> None:
        """Make the next spare credentials soon, off any handshake's path."""
        if self._nursery is not None and not self.credentials.has_spare:
            self._nursery.start_soon(self._refill_credentials)

    async def _refill_credentials(self) -> None:
        self.credentials.refill()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ output

    async def send_datagrams(self, datagrams: Sequence[tuple[bytes, Address]]) -> None:
        """Send a batch of datagrams (one connection's flush)."""
        sock = self.socket
        if self.batch:
            await sock.send_batch(datagrams)  # type: ignore[attr-defined]
        else:
            for data, addr in datagrams:
                await sock.sendto(data, addr)

    async def send_raw(self, data: bytes, addr: Address) -> None:
        """Send one datagram of arbitrary bytes from this socket (hole punching)."""
        if self.closed:
            raise trio.ClosedResourceError("the QUIC endpoint is closed")
        try:
            await self.socket.sendto(data, addr)
        except OSError as exc:
            log.debug("datagram to %s from %s failed: %s", addr, self.local_addr, exc)

    # ------------------------------------------------------------------ dialling

    async def connect(
        self,
        remote: tuple[str, int],
        *,
        expected_peer: PeerId | None,
        parent_span: Span,
        resend_initial: InitialResend | None = None,
    ) -> QuicConnection:
        """Dial ``remote`` from this socket; return once the peer is verified.

        The endpoint must be served (:meth:`serve`). Raises the handshake's error
        (:class:`~flarelab.errors.HandshakeError`, PeerIdMismatchError) on failure.
        ``resend_initial``: send copies of the first flight on that schedule until the
        peer answers (hole punching; see :class:`~.config.InitialResend`).
        """
        if self.closed:
            raise trio.ClosedResourceError("the QUIC endpoint is closed")
        core = QuicCore(
            credentials=self._credentials(),
            config=self.config,
            is_client=True,
            datagram_size=self.config.datagram_size(loopback=is_loopback(remote[0])),
            expected_peer=expected_peer,
        )
        conn = QuicConnection(
            core,
            endpoint=self,
            remote=remote,
            config=self.config,
            tracer=self.tracer,
            span=parent_span,
        )
        self._register(conn, [core.host_cid])
        if resend_initial is not None:
            conn.resend_first_flight(resend_initial)
        core.connect(remote, now=trio.current_time())
        try:
            # the first flight leaves now, before the flusher looks at the core's timer:
            # until a client has sent something, aioquic's loss timer counts from time 0
            # and would fire at once, doubling the first retransmission's delay
            await conn.flush_pending()
            conn.wake()
            await conn.handshake_done.wait()
        except BaseException:
            if not conn.is_closed:
                conn.core.close(reason_phrase="dial abandoned")
                await conn.flush_now()
            raise
        if conn.handshake_error is not None:
            await conn.flush_now()
            raise conn.handshake_error
        # our last handshake flight (Finished) goes out now, so the peer completes even if
        # nobody serves this endpoint until the caller starts the connection's run()
        await conn.flush_pending()
        self.refill_credentials()
        return conn

