"""Span names, attribute keys and small helpers that every driver uses.

This module is the single source of the names written down in ``tracing/CONVENTIONS.md``;
a test checks that the two agree. Drivers use the OpenTelemetry *API* only
(``opentelemetry.trace.Tracer``), so a node without tracing pays for no-op spans, and call
sites never check ``if tracer:``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

# ---------------------------------------------------------------- span names: <protocol>.<step>
NODE_DIAL: Final = "node.dial"  # a whole dial: pick addresses, transport dial, upgrade
NODE_UPGRADE: Final = "node.upgrade"  # raw connection -> secure -> muxed
CONNECTION: Final = "connection"  # lifetime of one libp2p connection
TCP_DIAL: Final = "tcp.dial"
TCP_ACCEPT: Final = "tcp.accept"
TCP_LISTEN: Final = "tcp.listen"
MSS_NEGOTIATE: Final = "mss.negotiate"
NOISE_HANDSHAKE: Final = "noise.handshake"
YAMUX_SESSION: Final = "yamux.session"
YAMUX_STREAM: Final = "yamux.stream"
MPLEX_SESSION: Final = "mplex.session"
MPLEX_STREAM: Final = "mplex.stream"
STREAM_HANDLE: Final = "stream.handle"  # an inbound stream served by a protocol handler
IDENTIFY_EXCHANGE: Final = "identify.exchange"
IDENTIFY_PUSH: Final = "identify.push"
PING: Final = "ping"
PERF: Final = "perf"
QUIC_DIAL: Final = "quic.dial"  # one QUIC connection attempt to one address
QUIC_ACCEPT: Final = "quic.accept"  # one inbound QUIC connection, first Initial to verified
QUIC_HANDSHAKE: Final = "quic.handshake"  # the TLS 1.3 handshake and libp2p certificate check
QUIC_CONNECTION: Final = "quic.connection"  # a verified QUIC connection's life, with path stats
QUIC_STREAM: Final = "quic.stream"  # the lifetime of one QUIC stream
QUIC_LISTEN: Final = "quic.listen"
QUIC_PUNCH: Final = "quic.punch"  # raw datagrams sent from a listen socket to punch a hole
# planned (named in DESIGN.md; the protocols land in later issues)
TLS_HANDSHAKE: Final = "tls.handshake"
AUTONAT_PROBE: Final = "autonat.probe"
AUTONAT_DIAL_BACK: Final = "autonat.dial_back"
RELAY_RESERVE: Final = "relay.reserve"
RELAY_CONNECT: Final = "relay.connect"
RELAY_CIRCUIT: Final = "relay.circuit"
DCUTR_UPGRADE: Final = "dcutr.upgrade"
DCUTR_ATTEMPT: Final = "dcutr.attempt"
HOLEPUNCH_DIAL: Final = "holepunch.dial"
KAD_LOOKUP: Final = "kad.lookup"
KAD_REQUEST: Final = "kad.request"
GOSSIPSUB_PUBLISH: Final = "gossipsub.publish"
GOSSIPSUB_HEARTBEAT: Final = "gossipsub.heartbeat"
BITSWAP_WANT: Final = "bitswap.want"
# the simulated network's NAT routers (flarelab.simnet), on each router's own provider
NAT_SESSION: Final = "nat.session"  # one NAT session (conntrack entry), creation to expiry
NAT_DROP: Final = "nat.drop"  # one packet a router refused (instant span)

# ---------------------------------------------------------------- attribute keys
# OpenTelemetry semantic conventions where they fit
NETWORK_TRANSPORT: Final = "network.transport"  # "tcp" | "udp"
NETWORK_TYPE: Final = "network.type"  # "ipv4" | "ipv6"
NETWORK_PEER_ADDRESS: Final = "network.peer.address"
NETWORK_PEER_PORT: Final = "network.peer.port"
NETWORK_LOCAL_ADDRESS: Final = "network.local.address"
NETWORK_LOCAL_PORT: Final = "network.local.port"
# libp2p.* for the rest
LIBP2P_PEER_ID: Final = "libp2p.peer_id"  # resource attribute: the node's own id
LIBP2P_NODE_LABEL: Final = "libp2p.node_label"  # resource attribute: "A", "relay", ...
LIBP2P_REMOTE_PEER_ID: Final = "libp2p.remote_peer_id"
LIBP2P_PROTOCOL: Final = "libp2p.protocol"
LIBP2P_PROTOCOLS_OFFERED: Final = "libp2p.protocols_offered"
LIBP2P_MULTIADDR: Final = "libp2p.multiaddr"  # the remote multiaddr of a dial/connection
LIBP2P_LOCAL_MULTIADDR: Final = "libp2p.local_multiaddr"
LIBP2P_DIRECTION: Final = "libp2p.direction"  # "inbound" | "outbound"
LIBP2P_ROLE: Final = "libp2p.role"  # "initiator" | "responder"
LIBP2P_SECURITY: Final = "libp2p.security"  # "/noise"
LIBP2P_MUXER: Final = "libp2p.muxer"  # "/yamux/1.0.0" | "/mplex/6.7.0"
LIBP2P_STREAM_ID: Final = "libp2p.stream_id"
LIBP2P_CONNECTION_ID: Final = "libp2p.connection_id"
LIBP2P_BYTES_SENT: Final = "libp2p.bytes_sent"
LIBP2P_BYTES_RECEIVED: Final = "libp2p.bytes_received"
LIBP2P_RTT_MS: Final = "libp2p.rtt_ms"
LIBP2P_ATTEMPT: Final = "libp2p.attempt"
LIBP2P_OUTCOME: Final = "libp2p.outcome"
LIBP2P_REASON: Final = "libp2p.reason"
LIBP2P_AGENT: Final = "libp2p.agent_version"
LIBP2P_OBSERVED_ADDR: Final = "libp2p.observed_addr"
LIBP2P_LISTEN_ADDRS: Final = "libp2p.listen_addrs"
LIBP2P_THROUGHPUT_MBPS: Final = "libp2p.throughput_mbps"
LIBP2P_CLOSE_REASON: Final = "libp2p.close_reason"
LIBP2P_ERROR_SIDE: Final = "libp2p.error_side"  # "local" | "remote"
LIBP2P_TRANSPORT: Final = "libp2p.transport"  # "tcp" | "quic-v1" | "p2p-circuit" | "sim"
LIBP2P_CANDIDATES: Final = "libp2p.candidates"  # the addresses a dial may try
LIBP2P_EARLY_MUXER: Final = "libp2p.early_muxer"  # muxer chosen inside the security handshake
LIBP2P_LIMITED: Final = "libp2p.limited"  # a limited (relayed) connection
LIBP2P_PROTOCOLS: Final = "libp2p.protocols"  # protocols a peer announced (identify)
LIBP2P_SIGNED_RECORD: Final = "libp2p.signed_record"  # identify carried a signed peer record
LIBP2P_MSS_LAZY: Final = "libp2p.mss_lazy"  # multistream-select 0-RTT (lazy) negotiation
LIBP2P_REUSE_PORT: Final = "libp2p.reuse_port"  # a dial left from the listen port
# QUIC connection facts (aioquic's view of the path)
LIBP2P_QUIC_ODCID: Final = "libp2p.quic.odcid"  # the client's first destination id, in hex
LIBP2P_QUIC_DATAGRAM_SIZE: Final = "libp2p.quic.datagram_size"
LIBP2P_QUIC_MIN_RTT_MS: Final = "libp2p.quic.min_rtt_ms"
LIBP2P_QUIC_INITIAL_RESENT: Final = "libp2p.quic.initial_resent"  # first-flight copies
LIBP2P_QUIC_CWND: Final = "libp2p.quic.cwnd"  # congestion window, bytes
LIBP2P_QUIC_PACKETS_SENT: Final = "libp2p.quic.packets_sent"
LIBP2P_QUIC_PACKETS_LOST: Final = "libp2p.quic.packets_lost"
LIBP2P_QUIC_CLOSE_CODE: Final = "libp2p.quic.close_code"
LIBP2P_QUIC_DATAGRAMS: Final = "libp2p.quic.datagrams"  # datagrams a punch sent
# NAT routers of the simulated network (endpoints as "ip:port" text)
LIBP2P_NAT_INTERNAL: Final = "libp2p.nat.internal"  # the LAN-side endpoint ("router": its own)
LIBP2P_NAT_EXTERNAL: Final = "libp2p.nat.external"  # the endpoint the NAT gave it
LIBP2P_NAT_REMOTE: Final = "libp2p.nat.remote"  # the endpoint on the far side
LIBP2P_NAT_ORIGIN: Final = "libp2p.nat.origin"  # "outbound" | "inbound" | "router"
LIBP2P_NAT_PORT_PRESERVED: Final = "libp2p.nat.port_preserved"
LIBP2P_NAT_PACKET: Final = "libp2p.nat.packet"  # "SYN", "SYN-ACK", "udp 1200 B", ...
LIBP2P_NAT_PACKETS_OUT: Final = "libp2p.nat.packets_out"
LIBP2P_NAT_PACKETS_IN: Final = "libp2p.nat.packets_in"
LIBP2P_NAT_SUPPRESSED: Final = "libp2p.nat.suppressed"  # drop spans skipped by the rate limit
# circuit relay v2 (flarelab.protocols.relay)
LIBP2P_RELAY_PEER_ID: Final = "libp2p.relay.peer_id"  # the relay a client went through
LIBP2P_RELAY_SRC: Final = "libp2p.relay.src_peer_id"  # who asked the relay to CONNECT
LIBP2P_RELAY_DST: Final = "libp2p.relay.dst_peer_id"  # whom it asked to be connected to
LIBP2P_RELAY_STATUS: Final = "libp2p.relay.status"  # "OK", "NO_RESERVATION", ...
LIBP2P_RELAY_EXPIRE: Final = "libp2p.relay.expire"  # a reservation's end, Unix seconds
LIBP2P_RELAY_RENEWED: Final = "libp2p.relay.renewed"  # a RESERVE renewed a reservation
LIBP2P_RELAY_ADDRS: Final = "libp2p.relay.addrs"  # circuit addresses a reservation gives
LIBP2P_RELAY_LIMIT_DURATION: Final = "libp2p.relay.limit_duration_s"
LIBP2P_RELAY_LIMIT_DATA: Final = "libp2p.relay.limit_data"  # bytes per direction
LIBP2P_RELAY_BYTES_SRC_TO_DST: Final = "libp2p.relay.bytes_src_to_dst"
LIBP2P_RELAY_BYTES_DST_TO_SRC: Final = "libp2p.relay.bytes_dst_to_src"
LIBP2P_RELAY_LIMIT_HIT: Final = "libp2p.relay.limit_hit"  # "data" | "duration"

# ---------------------------------------------------------------- event names and keys
MESSAGE_SENT: Final = "message.sent"
MESSAGE_RECEIVED: Final = "message.received"
MESSAGE_TYPE: Final = "message.type"
MESSAGE_SIZE: Final = "message.size"  # bytes on the wire, including any length prefix
TCP_REUSE_PORT_FAILED: Final = "tcp.reuse_port_failed"  # fell back to an ephemeral port
TLS_PEER_VERIFIED: Final = "tls.peer_verified"  # the peer's libp2p certificate checked out
QUIC_INITIAL_RESENT: Final = "quic.initial_resent"  # a hole-punch dial resent its first flight
NAT_MAPPING_CREATED: Final = "nat.mapping_created"  # a session got its external endpoint
NAT_TRANSLATED: Final = "nat.translated"  # a notable packet crossed the NAT
NAT_HAIRPINNED: Final = "nat.hairpinned"  # a packet went out and back in to the same LAN
NAT_ANSWERED: Final = "nat.answered"  # the router's own stack answered (RST, ICMP)
NAT_FILTERED: Final = "nat.filtered"  # a packet died at the router, with the reason

# ---------------------------------------------------------------- attribute values
# libp2p.outcome: the hole-punch taxonomy (go-libp2p, punchr); other steps use success/failed
OUTCOME_SUCCESS: Final = "success"
OUTCOME_CONNECTION_REVERSED: Final = "connection_reversed"
OUTCOME_DIRECT_DIAL: Final = "direct_dial"
OUTCOME_NO_SUITABLE_ADDRESS: Final = "no_suitable_address"
OUTCOME_TIMEOUT: Final = "timeout"
OUTCOME_PROTOCOL_ERROR: Final = "protocol_error"
OUTCOME_FAILED: Final = "failed"
# libp2p.direction, libp2p.role, libp2p.error_side
DIRECTION_INBOUND: Final = "inbound"
DIRECTION_OUTBOUND: Final = "outbound"
ROLE_INITIATOR: Final = "initiator"
ROLE_RESPONDER: Final = "responder"
ERROR_SIDE_LOCAL: Final = "local"
ERROR_SIDE_REMOTE: Final = "remote"

#: A tracer whose spans cost next to nothing; the default for every driver.
NO_TRACER: Final[Tracer] = trace.NoOpTracer()


def message_sent(
    span: Span, message_type: str, size: int, attributes: Mapping[str, AttributeValue] | None = None
) -> None:
    """Record a protocol message we sent as a ``message.sent`` span event."""
    attrs: dict[str, AttributeValue] = {MESSAGE_TYPE: message_type, MESSAGE_SIZE: size}
    if attributes:
        attrs.update(attributes)
    span.add_event(MESSAGE_SENT, attrs)


def message_received(
    span: Span, message_type: str, size: int, attributes: Mapping[str, AttributeValue] | None = None
) -> None:
    """Record a protocol message we received as a ``message.received`` span event."""
    attrs: dict[str, AttributeValue] = {MESSAGE_TYPE: message_type, MESSAGE_SIZE: size}
    if attributes:
        attrs.update(attributes)
    span.add_event(MESSAGE_RECEIVED, attrs)


def mark_error(span: Span, err: BaseException, *, side: str | None = None) -> None:
    """Mark a span as failed with ``err``; ``side`` is "local" or "remote" when known."""
    from ..errors import LocalProtocolError, RemoteProtocolError

    if side is None:
        if isinstance(err, RemoteProtocolError):
            side = ERROR_SIDE_REMOTE
        elif isinstance(err, LocalProtocolError):
            side = ERROR_SIDE_LOCAL
    if side is not None:
        span.set_attribute(LIBP2P_ERROR_SIDE, side)
    if span.is_recording():
        span.record_exception(err, attributes=_bounded_exception(err))
    span.set_status(Status(StatusCode.ERROR, f"{type(err).__name__}: {err}"))


#: OpenTelemetry's default attribute length limit: longer values are cut (with a warning)
MAX_ATTRIBUTE_LENGTH: Final = 4096


def _bounded_exception(err: BaseException) -> dict[str, str]:
    """``exception.message`` and ``exception.stacktrace`` within the attribute length limit.

    Deep trio stacks (nurseries, exception groups) make stack traces of many kilobytes; the
    innermost frames, where the error was raised, are kept, with a note of what was cut.
    """
    import traceback

    text = "".join(traceback.format_exception(err))
    if len(text) > MAX_ATTRIBUTE_LENGTH:
        note = f"... ({len(text) - MAX_ATTRIBUTE_LENGTH + 100} characters cut)\n"
        text = note + text[-(MAX_ATTRIBUTE_LENGTH - 100):]
    message = str(err)
    if len(message) > MAX_ATTRIBUTE_LENGTH:
        message = message[: MAX_ATTRIBUTE_LENGTH - 3] + "..."
    return {"exception.stacktrace": text, "exception.message": message}
