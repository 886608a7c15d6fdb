"""QuicCore: aioquic's sans-IO QUIC connection, made a libp2p one.

aioquic's :class:`~aioquic.quic.connection.QuicConnection` is the protocol core (datagrams
and time in, datagrams, timers and events out). This subclass adds what libp2p needs and
aioquic does not do by itself, and stays sans-IO:

* **Mutual authentication.** aioquic's server asks for a client certificate only when the
  TLS context's private ``_request_client_certificate`` is set; :meth:`_initialize` sets
  it. When the handshake completes, the peer's certificate is checked with
  :func:`.tls.verify_peer_certificates` (a client that sent none is refused too); a bad one
  closes the connection with the TLS alert ``bad_certificate`` (QUIC CRYPTO_ERROR 0x12a)
  before anything else leaves, and :attr:`auth_error` says why.
* **Flow control by consumption.** aioquic grants the peer more credit as data *arrives*
  (it doubles its windows), so a reader that stops reading would buffer without bound.
  Here credit follows what the application has *read*: a stream may have at most
  ``stream_window`` bytes unread, the connection ``connection_window``. The driver reports
  reads with :meth:`release`.
* **Stream limits**: the peer may have ``max_inbound_streams`` bidirectional streams open at
  once and no unidirectional ones (libp2p uses none).
* Statistics for traces (RTT, congestion window, packets sent and lost) and who closed.
* **Datagram sizes**: the handshake runs at 1200 bytes; the path's size (larger on
  loopback), capped by the peer's ``max_udp_payload_size``, applies once no padded Initial
  can follow. A pacer that keeps aioquic's 16-packet bursts at loopback rates.

It overrides private methods of aioquic 1.7.2, which ``pyproject.toml`` pins for that
reason; ``tests/transports/quic/test_quic_core.py`` checks each of these behaviours.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.congestion.base import K_INITIAL_WINDOW
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
    QuicConnectionError,
)
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicProtocolVersion,
    pull_quic_transport_parameters,
)
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.tls import CipherSuite, ExtensionType, Group

from ...errors import HandshakeError
from ...identity import PeerId, PublicKey
from .config import QuicConfig
from .tls import ALPN, TlsCredentials, verify_peer_certificates

__all__ = [
    "CONNECTION_ID_LENGTH",
    "QUIC_VERSION",
    "CloseInfo",
    "QuicCore",
    "QuicStats",
    "utc_now",
]

# aioquic logs a peer's protocol violations at WARNING on its "quic" logger; we report them
# ourselves (errors, spans), so without a logging configuration they should not reach stderr
# through logging's last-resort handler. Configured handlers still receive them.
logging.getLogger("quic").addHandler(logging.NullHandler())

#: packets a pacing burst may hold (aioquic's own figure)
PACING_BURST: Final = 16
#: the datagram size of every handshake (the least QUIC allows)
HANDSHAKE_DATAGRAM_SIZE: Final = 1200
#: our connection ids are 8 bytes (short-header packets are routed by them)
CONNECTION_ID_LENGTH: Final = 8
#: /quic-v1 is QUIC version 1 (RFC 9000), and only that
QUIC_VERSION: Final = int(QuicProtocolVersion.VERSION_1)
#: TLS alert bad_certificate (42) as a QUIC transport error (RFC 9001 section 4.8)
BAD_CERTIFICATE: Final = QuicErrorCode.CRYPTO_ERROR + 42
#: the key shares a client offers: X25519 (every implementation's first choice) and P-256
CLIENT_KEY_SHARES: Final = (Group.X25519, Group.SECP256R1)
#: AES-128-GCM first: the cheapest suite where AES instructions exist (as quic-go orders it)
CIPHER_SUITES: Final = [
    CipherSuite.AES_128_GCM_SHA256,
    CipherSuite.CHACHA20_POLY1305_SHA256,
    CipherSuite.AES_256_GCM_SHA384,
]


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How a connection ended: its close code and reason, and who ended it."""

    error_code: int
    frame_type: int | None
    reason: str
    #: "local" (we closed, or we refused the peer), "peer" (a CONNECTION_CLOSE arrived)
    #: or "idle" (no packet within the idle timeout)
    initiator: str

    @property
    def is_error(self) -> bool:
        """Tell whether the close carried an error code (not NO_ERROR, not an idle end)."""
        return self.error_code != QuicErrorCode.NO_ERROR and self.initiator != "idle"

    def describe(self) -> str:
        """Say in words who closed, with the code and reason."""
        who = {"local": "closed locally", "peer": "closed by the peer", "idle": "idle timeout"}
        text = who.get(self.initiator, self.initiator)
        if self.initiator != "idle":
            text += f" (code 0x{self.error_code:x}"
            text += f", {self.reason})" if self.reason else ")"
        return text


@dataclass(frozen=True, slots=True)
class QuicStats:
    """What aioquic knows about a connection's path, for span attributes."""

    smoothed_rtt_ms: float
    min_rtt_ms: float
    congestion_window: int
    bytes_in_flight: int
    packets_sent: int
    packets_lost: int
    datagram_size: int


class BurstPacer(QuicPacketPacer):
    """aioquic's pacer, keeping its burst of 16 packets at any rate.

    aioquic clamps the time between two packets to at least 1 µs but sizes the burst from
    the unclamped rate; on a fast path (loopback: gigabytes per second) a burst then holds
    only 5 or 6 packets, and a driver that flushes whenever anything happens sends a
    handful of datagrams per flush and spends its time on the flushes.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        if self.packet_time is not None:
            self.bucket_max = max(self.bucket_max, PACING_BURST * self.packet_time)


class QuicCore(QuicConnection):
    """One libp2p QUIC connection's protocol state (client or server)."""

    def __init__(
        self,
        *,
        credentials: TlsCredentials,
        config: QuicConfig,
        is_client: bool,
        datagram_size: int,
        expected_peer: PeerId | None = None,
        original_destination_connection_id: bytes | None = None,
        wall_clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self._wall_clock = wall_clock or utc_now
        # the handshake uses the smallest datagrams QUIC allows (aioquic pads a client's
        # Initial to the full size and parses padding byte by byte); the path's size, within
        # the peer's max_udp_payload_size, applies once the peer is verified
        self._path_datagram_size = datagram_size
        configuration = QuicConfiguration(
            alpn_protocols=[ALPN],
            is_client=is_client,
            idle_timeout=config.idle_timeout,
            max_data=config.connection_receive_window,
            max_stream_data=config.stream_receive_window,
            max_datagram_size=min(datagram_size, HANDSHAKE_DATAGRAM_SIZE),
            congestion_control_algorithm=config.congestion_control,
            connection_id_length=CONNECTION_ID_LENGTH,
            supported_versions=[QUIC_VERSION],
            cipher_suites=list(CIPHER_SUITES),
            verify_mode=ssl.CERT_NONE,  # no CA: the libp2p extension is checked below
        )
        configuration.certificate = credentials.certificate
        configuration.private_key = credentials.private_key
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
        )
        self.expected_peer = expected_peer
        self._stream_window = config.stream_receive_window
        self._connection_window = config.connection_receive_window
        self._local_max_streams_bidi.value = self._local_max_streams_bidi.sent = (
            config.max_inbound_streams
        )
        self._local_max_streams_uni.value = self._local_max_streams_uni.sent = 0
        #: the peer, once its certificate was verified
        self.remote_peer: PeerId | None = None
        self.remote_public_key: PublicKey | None = None
        #: why the peer was refused, if it was
        self.auth_error: HandshakeError | None = None
        #: set when the peer's CONNECTION_CLOSE arrives (aioquic reports it 3 PTO later)
        self.peer_closed = False
        self.packets_lost = 0
        # flow control by consumption: bytes delivered but not yet read, per stream
        self._unread: dict[int, int] = {}
        self._unread_total = 0
        self._read: dict[int, int] = {}
        self._wrap_loss_counter()
        self._loss._pacer = BurstPacer(max_datagram_size=self._max_datagram_size)

    # ------------------------------------------------------------------ public additions

    @property
    def handshake_complete(self) -> bool:
        """Tell whether the handshake completed and the peer was verified."""
        return self._handshake_complete and self.remote_peer is not None

    @property
    def close_info(self) -> CloseInfo | None:
        """How the connection ended, as soon as it is ending (None while it is open)."""
        event = self._close_event
        if event is None:
            return None
        if self.peer_closed:
            initiator = "peer"
        elif event.reason_phrase == "Idle timeout" and event.frame_type == QuicFrameType.PADDING:
            initiator = "idle"
        else:
            initiator = "local"
        return CloseInfo(event.error_code, event.frame_type, event.reason_phrase, initiator)

    @property
    def close_pending(self) -> bool:
        """Tell whether a CONNECTION_CLOSE is waiting for the next datagrams_to_send."""
        return self._close_pending

    @property
    def datagram_size(self) -> int:
        """The largest UDP payload this connection sends."""
        return self._max_datagram_size

    def stats(self) -> QuicStats:
        """Path statistics: RTT, congestion window, packets sent and lost."""
        loss = self._loss
        return QuicStats(
            smoothed_rtt_ms=loss._rtt_smoothed * 1000,
            min_rtt_ms=(loss._rtt_min * 1000) if loss._rtt_initialized else 0.0,
            congestion_window=loss.congestion_window,
            bytes_in_flight=loss.bytes_in_flight,
            packets_sent=self._packet_number,
            packets_lost=self.packets_lost,
            datagram_size=self._max_datagram_size,
        )

    def can_open_stream(self) -> bool:
        """Tell whether the peer allows us one more bidirectional stream now."""
        return self._local_next_stream_id_bidi // 4 < self._remote_max_streams_bidi

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written to ``stream_id`` and not yet acknowledged by the peer."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def next_event(self) -> events.QuicEvent | None:
        """Return the next event, counting delivered stream data as unread."""
        event = super().next_event()
        if type(event) is events.StreamDataReceived and event.data:
            size = len(event.data)
            sid = event.stream_id
            self._unread[sid] = self._unread.get(sid, 0) + size
            self._unread_total += size
        return event

    def release(self, stream_id: int, nbytes: int) -> bool:
        """Record that the application read (or dropped) ``nbytes`` of ``stream_id``.

        Returns True when that makes a window update due (call datagrams_to_send soon).
        """
        unread = self._unread.get(stream_id, 0)
        nbytes = min(nbytes, unread)
        if nbytes <= 0:
            return False
        if unread == nbytes:
            del self._unread[stream_id]
        else:
            self._unread[stream_id] = unread - nbytes
        self._unread_total -= nbytes
        read = self._read.get(stream_id, 0) + nbytes
        self._read[stream_id] = read
        stream = self._streams.get(stream_id)
        if (
            stream is not None
            and not stream.receiver.is_finished
            and read + self._stream_window - stream.max_stream_data_local
            >= self._stream_window // 4
        ):
            return True
        limit = self._local_max_data
        return limit.used - self._unread_total + self._connection_window - limit.value >= (
            self._connection_window // 4
        )

    def forget_stream(self, stream_id: int) -> None:
        """Drop the bookkeeping of a stream the driver is done with (unread data released)."""
        self.release(stream_id, self._unread.get(stream_id, 0))
        self._read.pop(stream_id, None)

    # ------------------------------------------------------------------ aioquic overrides

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self._is_client:
            # aioquic offers a key share for every group it knows (P-384 and X448 too):
            # two cover every libp2p peer and save three key generations per dial
            self.tls._supported_groups = list(CLIENT_KEY_SHARES)
        else:
            # libp2p needs the client's certificate too (mutual authentication)
            self.tls._request_client_certificate = True

    def _handle_crypto_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        super()._handle_crypto_frame(context, frame_type, buf)
        if self._handshake_complete and self.remote_peer is None and self.auth_error is None:
            self._verify_peer(frame_type)

    def _verify_peer(self, frame_type: int) -> None:
        """Check the peer's certificate the moment the handshake completes."""
        tls = self.tls
        certificates = []
        if tls._peer_certificate is not None:
            certificates = [tls._peer_certificate, *tls._peer_certificate_chain]
        try:
            verified = verify_peer_certificates(
                certificates, now=self._wall_clock(), expected_peer=self.expected_peer
            )
        except HandshakeError as exc:
            self.auth_error = exc
            # the handshake did not succeed after all: take back the event that said so
            self._events = type(self._events)(
                e for e in self._events if not isinstance(e, events.HandshakeCompleted)
            )
            raise QuicConnectionError(
                error_code=BAD_CERTIFICATE,
                frame_type=frame_type,
                reason_phrase=f"libp2p TLS: {exc.message}"[:200],
            ) from exc
        self.remote_peer = verified.peer_id
        self.remote_public_key = verified.public_key
        if self._handshake_confirmed:  # a server is confirmed as the handshake completes
            self._use_path_datagram_size()

    def _confirm_handshake(self) -> None:
        super()._confirm_handshake()
        if self.remote_peer is not None:  # a client, on HANDSHAKE_DONE
            self._use_path_datagram_size()

    def _use_path_datagram_size(self) -> None:
        """Switch to the path's datagram size once no Initial packet (padded) can follow."""
        size = min(self._path_datagram_size, self._peer_datagram_limit())
        if size > self._max_datagram_size:
            self._set_datagram_size(size)

    def _peer_datagram_limit(self) -> int:
        """The peer's max_udp_payload_size transport parameter (65527 when absent)."""
        for ext_type, ext_data in self.tls.received_extensions or ():
            if ext_type == ExtensionType.QUIC_TRANSPORT_PARAMETERS:
                try:
                    params = pull_quic_transport_parameters(Buffer(data=ext_data))
                except ValueError:  # pragma: no cover - aioquic parsed them already
                    break
                if params.max_udp_payload_size is not None:
                    return max(params.max_udp_payload_size, HANDSHAKE_DATAGRAM_SIZE)
        return 65527

    def _set_datagram_size(self, size: int) -> None:
        """Send larger datagrams from now on (pacer and congestion controller included)."""
        self._max_datagram_size = size
        loss = self._loss
        loss._pacer._max_datagram_size = size
        cc = loss._cc
        if hasattr(cc, "_max_datagram_size"):
            cc._max_datagram_size = size
        if hasattr(cc, "additive_increase_factor"):  # cubic
            cc.additive_increase_factor = size
        # the initial window is counted in packets (RFC 9002: 10): keep it ten packets
        cc.congestion_window = max(cc.congestion_window, K_INITIAL_WINDOW * size)

    def _handle_connection_close_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        super()._handle_connection_close_frame(context, frame_type, buf)
        self.peer_closed = True

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        """Raise MAX_STREAM_DATA as the application reads, never as data merely arrives."""
        if not stream.max_stream_data_local or stream.receiver.is_finished:
            return
        target = self._read.get(stream.stream_id, 0) + self._stream_window
        if target - stream.max_stream_data_local >= self._stream_window // 4:
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        """Raise MAX_DATA as the application reads; MAX_STREAMS as streams finish."""
        max_data = self._local_max_data
        target = max_data.used - self._unread_total + self._connection_window
        if target - max_data.value >= self._connection_window // 4:
            max_data.value = target
        for limit in (max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit is not max_data and limit.sent - limit.used >= limit.value - limit.sent:
                continue  # batch MAX_STREAMS until the peer is down to half its credit
            if limit.value != limit.sent:
                buf = builder.start_frame(
                    limit.frame_type,
                    capacity=CONNECTION_LIMIT_FRAME_CAPACITY,
                    handler=self._on_connection_limit_delivery,
                    handler_args=(limit,),
                )
                buf.push_uint_var(limit.value)
                limit.sent = limit.value

    def _wrap_loss_counter(self) -> None:
        on_lost = self._loss._on_packets_lost

        def counting(*, packets: Any, congestion_event: bool = True, **kwargs: Any) -> None:
            if congestion_event:  # a PTO probe's retransmission is not a loss
                self.packets_lost += len(packets)
            on_lost(packets=packets, congestion_event=congestion_event, **kwargs)

        self._loss._on_packets_lost = counting  # type: ignore[method-assign]


def utc_now() -> datetime.datetime:
    """The wall-clock time in UTC (certificates are about wall-clock time)."""
    return datetime.datetime.now(datetime.UTC)
