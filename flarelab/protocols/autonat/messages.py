"""AutoNAT v1 and v2 messages: encode ours, decode and validate the peer's.

The only module of the package that touches the protobuf declarations
(:mod:`flarelab.pb.autonat`, :mod:`flarelab.pb.autonatv2`): everything else works with the
frozen dataclasses below. Decoding raises :class:`~flarelab.errors.RemoteProtocolError`
naming the protocol for anything malformed; addresses that do not parse are kept as
``None`` (v2, where positions matter) or skipped and counted (v1), never fatal, as go-libp2p
does. Every message is length-prefixed on the wire; the size limits are here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from ...errors import RemoteProtocolError
from ...identity import PeerId
from ...multiaddr import Multiaddr, MultiaddrError
from ...pb import autonat as pb1
from ...pb import autonatv2 as pb2
from ...protobuf import DecodeError

__all__ = [
    "DIAL_DATA_CHUNK",
    "V1_MAX_ADDRS",
    "V1_MAX_MESSAGE",
    "V1_PROTOCOL",
    "V2_DIAL_BACK_PROTOCOL",
    "V2_DIAL_REQUEST_PROTOCOL",
    "V2_MAX_ADDRS",
    "V2_MAX_DIAL_BACK_MESSAGE",
    "V2_MAX_MESSAGE",
    "V1DialRequest",
    "V1DialResponse",
    "V1Status",
    "V2DialDataRequest",
    "V2DialDataResponse",
    "V2DialRequest",
    "V2DialResponse",
    "V2DialStatus",
    "V2Message",
    "V2ResponseStatus",
    "decode_v1_request",
    "decode_v1_response",
    "decode_v2_dial_back",
    "decode_v2_dial_back_response",
    "decode_v2_message",
    "encode_v1_request",
    "encode_v1_response",
    "encode_v2_dial_back",
    "encode_v2_dial_back_response",
    "encode_v2_dial_data_request",
    "encode_v2_dial_data_response",
    "encode_v2_request",
    "encode_v2_response",
]

V1_PROTOCOL: Final = "/libp2p/autonat/1.0.0"
V2_DIAL_REQUEST_PROTOCOL: Final = "/libp2p/autonat/2/dial-request"
V2_DIAL_BACK_PROTOCOL: Final = "/libp2p/autonat/2/dial-back"

#: largest v1 message we read (go reads 4096; a go client with many long addresses may
#: send more, so we allow twice that)
V1_MAX_MESSAGE: Final = 8192
#: v1 addresses we parse from one request; the rest are ignored (and counted)
V1_MAX_ADDRS: Final = 64
#: largest message on /libp2p/autonat/2/dial-request (go: 8192)
V2_MAX_MESSAGE: Final = 8192
#: largest message on /libp2p/autonat/2/dial-back (go: 1024)
V2_MAX_DIAL_BACK_MESSAGE: Final = 1024
#: v2 addresses a server inspects in one request (go: 50); later ones are ignored
V2_MAX_ADDRS: Final = 50
#: the spec's limit on the ``data`` of one DialDataResponse
DIAL_DATA_CHUNK: Final = 4096
#: status texts are cut to this many characters for logs and spans
_MAX_TEXT: Final = 256


def _malformed(protocol: str, what: str, exc: Exception | None = None) -> RemoteProtocolError:
    detail = f": {exc.message}" if isinstance(exc, RemoteProtocolError) else ""
    return RemoteProtocolError(f"malformed {what}{detail}", protocol=protocol)


def _multiaddr(raw: bytes) -> Multiaddr | None:
    try:
        return Multiaddr.from_bytes(raw)
    except (MultiaddrError, ValueError):
        return None


# ====================================================================== v1


class V1Status(IntEnum):
    """``Message.ResponseStatus`` of AutoNAT v1."""

    OK = pb1.OK
    E_DIAL_ERROR = pb1.E_DIAL_ERROR
    E_DIAL_REFUSED = pb1.E_DIAL_REFUSED
    E_BAD_REQUEST = pb1.E_BAD_REQUEST
    E_INTERNAL_ERROR = pb1.E_INTERNAL_ERROR


def _status_name(enum: type[IntEnum], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return f"UNKNOWN({value})"


@dataclass(frozen=True, slots=True)
class V1DialRequest:
    """A v1 ``Dial``: who asks (if it said) and the addresses it wants dialled."""

    peer_id: PeerId | None
    addrs: tuple[Multiaddr, ...]
    #: addresses that did not parse (skipped)
    invalid: int = 0
    #: addresses beyond :data:`V1_MAX_ADDRS` (ignored)
    ignored: int = 0


@dataclass(frozen=True, slots=True)
class V1DialResponse:
    """A v1 ``DialResponse``; ``status`` may be a code we do not know."""

    status: int
    text: str = ""
    addr: Multiaddr | None = None

    @property
    def status_name(self) -> str:
        """The status's name (``OK``, ``E_DIAL_ERROR``...), ``UNKNOWN(n)`` if not known."""
        return _status_name(V1Status, self.status)


def encode_v1_request(peer_id: PeerId, addrs: Sequence[Multiaddr]) -> bytes:
    """Encode a ``DIAL`` message asking to be dialled at ``addrs``."""
    return pb1.Message(
        type=pb1.DIAL,
        dial=pb1.Dial(
            peer=pb1.PeerInfo(id=peer_id.to_bytes(), addrs=[a.to_bytes() for a in addrs])
        ),
    ).encode()


def decode_v1_request(data: bytes) -> V1DialRequest:
    """Decode a ``DIAL`` message (RemoteProtocolError if it is not one)."""
    what = "AutoNAT v1 request"
    try:
        msg = pb1.Message.decode(data)
    except DecodeError as exc:
        raise _malformed(V1_PROTOCOL, what, exc) from None
    # proto2: an absent enum reads as its first value, DIAL (go relies on it too)
    if (msg.type if msg.type is not None else pb1.DIAL) != pb1.DIAL:
        raise RemoteProtocolError(f"expected a DIAL message, got type {msg.type}",
                                  protocol=V1_PROTOCOL)
    if msg.dial is None or msg.dial.peer is None:
        raise RemoteProtocolError("DIAL message without peer info", protocol=V1_PROTOCOL)
    info = msg.dial.peer
    peer_id = None
    if info.id is not None:
        try:
            peer_id = PeerId.from_bytes(info.id)
        except ValueError as exc:
            raise _malformed(V1_PROTOCOL, "peer id in the DIAL message", exc) from None
    addrs: list[Multiaddr] = []
    invalid = 0
    for raw in info.addrs[:V1_MAX_ADDRS]:
        addr = _multiaddr(raw)
        if addr is None:
            invalid += 1
        else:
            addrs.append(addr)
    ignored = max(0, len(info.addrs) - V1_MAX_ADDRS)
    return V1DialRequest(peer_id, tuple(addrs), invalid, ignored)


def encode_v1_response(status: int, text: str = "", addr: Multiaddr | None = None) -> bytes:
    """Encode a ``DIAL_RESPONSE`` message."""
    response = pb1.DialResponse(status=int(status))
    if text:
        response.statusText = text
    if addr is not None:
        response.addr = addr.to_bytes()
    return pb1.Message(type=pb1.DIAL_RESPONSE, dialResponse=response).encode()


def decode_v1_response(data: bytes) -> V1DialResponse:
    """Decode a ``DIAL_RESPONSE`` message (RemoteProtocolError if it is not one)."""
    what = "AutoNAT v1 response"
    try:
        msg = pb1.Message.decode(data)
    except DecodeError as exc:
        raise _malformed(V1_PROTOCOL, what, exc) from None
    if msg.type != pb1.DIAL_RESPONSE or msg.dialResponse is None:
        raise RemoteProtocolError(
            f"expected a DIAL_RESPONSE message, got type {msg.type}", protocol=V1_PROTOCOL
        )
    response = msg.dialResponse
    # proto2: an absent status reads as OK; an OK must then say which address worked
    status = response.status if response.status is not None else pb1.OK
    addr = None
    if response.addr is not None:
        addr = _multiaddr(response.addr)
        if addr is None:
            raise RemoteProtocolError("DIAL_RESPONSE names a malformed address",
                                      protocol=V1_PROTOCOL)
    text = (response.statusText or "")[:_MAX_TEXT]
    return V1DialResponse(status, text, addr)


# ====================================================================== v2


class V2ResponseStatus(IntEnum):
    """``DialResponse.ResponseStatus`` of AutoNAT v2: did the server serve the request."""

    E_INTERNAL_ERROR = pb2.E_INTERNAL_ERROR
    E_REQUEST_REJECTED = pb2.E_REQUEST_REJECTED
    E_DIAL_REFUSED = pb2.E_DIAL_REFUSED
    OK = pb2.RESPONSE_OK


class V2DialStatus(IntEnum):
    """``DialStatus`` of AutoNAT v2: how the dial-back of the chosen address went."""

    UNUSED = pb2.UNUSED
    E_DIAL_ERROR = pb2.E_DIAL_ERROR
    E_DIAL_BACK_ERROR = pb2.E_DIAL_BACK_ERROR
    OK = pb2.DIAL_OK


@dataclass(frozen=True, slots=True)
class V2DialRequest:
    """A ``DialRequest``: addresses in priority order (None where one did not parse) and
    the nonce the dial-back must carry."""

    addrs: tuple[Multiaddr | None, ...]
    nonce: int
    #: how many addresses the message had (only the first :data:`V2_MAX_ADDRS` are kept)
    total: int = 0


@dataclass(frozen=True, slots=True)
class V2DialResponse:
    """A ``DialResponse``; the codes may be ones we do not know."""

    status: int
    addr_idx: int = 0
    dial_status: int = V2DialStatus.UNUSED

    @property
    def status_name(self) -> str:
        """The response status's name (``UNKNOWN(n)`` if not known)."""
        return _status_name(V2ResponseStatus, self.status)

    @property
    def dial_status_name(self) -> str:
        """The dial status's name (``UNKNOWN(n)`` if not known)."""
        return _status_name(V2DialStatus, self.dial_status)


@dataclass(frozen=True, slots=True)
class V2DialDataRequest:
    """A ``DialDataRequest``: send ``num_bytes`` of dial data before address ``addr_idx``
    is dialled."""

    addr_idx: int
    num_bytes: int


@dataclass(frozen=True, slots=True)
class V2DialDataResponse:
    """A ``DialDataResponse``; only the size of its data matters."""

    size: int


V2Message = V2DialRequest | V2DialResponse | V2DialDataRequest | V2DialDataResponse


def encode_v2_request(addrs: Sequence[Multiaddr], nonce: int) -> bytes:
    """Encode a ``Message{dialRequest}``."""
    request = pb2.DialRequest(addrs=[a.to_bytes() for a in addrs], nonce=nonce)
    return pb2.Message(dialRequest=request).encode()


def encode_v2_response(status: int, addr_idx: int = 0,
                       dial_status: int = V2DialStatus.UNUSED) -> bytes:
    """Encode a ``Message{dialResponse}``."""
    response = pb2.DialResponse(status=int(status), addrIdx=addr_idx,
                                dialStatus=int(dial_status))
    return pb2.Message(dialResponse=response).encode()


def encode_v2_dial_data_request(addr_idx: int, num_bytes: int) -> bytes:
    """Encode a ``Message{dialDataRequest}``."""
    request = pb2.DialDataRequest(addrIdx=addr_idx, numBytes=num_bytes)
    return pb2.Message(dialDataRequest=request).encode()


def encode_v2_dial_data_response(data: bytes) -> bytes:
    """Encode a ``Message{dialDataResponse}`` carrying ``data`` (at most 4096 bytes)."""
    if len(data) > DIAL_DATA_CHUNK:
        raise ValueError(f"dial data chunks carry at most {DIAL_DATA_CHUNK} bytes")
    return pb2.Message(dialDataResponse=pb2.DialDataResponse(data=data)).encode()


def decode_v2_message(data: bytes) -> V2Message:
    """Decode a ``Message`` on the dial-request stream into the one message it carries."""
    try:
        msg = pb2.Message.decode(data)
    except DecodeError as exc:
        raise _malformed(V2_DIAL_REQUEST_PROTOCOL, "AutoNAT v2 message", exc) from None
    present = msg.present_fields()
    if len(present) != 1:
        what = "no message" if not present else f"several messages ({', '.join(sorted(present))})"
        raise RemoteProtocolError(f"AutoNAT v2 message carries {what}",
                                  protocol=V2_DIAL_REQUEST_PROTOCOL)
    if msg.dialRequest is not None:
        raw = msg.dialRequest.addrs
        addrs = tuple(_multiaddr(a) for a in raw[:V2_MAX_ADDRS])
        return V2DialRequest(addrs, msg.dialRequest.nonce, len(raw))
    if msg.dialResponse is not None:
        r = msg.dialResponse
        return V2DialResponse(r.status, r.addrIdx, r.dialStatus)
    if msg.dialDataRequest is not None:
        return V2DialDataRequest(msg.dialDataRequest.addrIdx, msg.dialDataRequest.numBytes)
    assert msg.dialDataResponse is not None
    return V2DialDataResponse(len(msg.dialDataResponse.data))


def encode_v2_dial_back(nonce: int) -> bytes:
    """Encode a ``DialBack`` carrying ``nonce``."""
    return pb2.DialBack(nonce=nonce).encode()


def decode_v2_dial_back(data: bytes) -> int:
    """Decode a ``DialBack``; return its nonce."""
    try:
        return pb2.DialBack.decode(data).nonce
    except DecodeError as exc:
        raise _malformed(V2_DIAL_BACK_PROTOCOL, "DialBack", exc) from None


def encode_v2_dial_back_response() -> bytes:
    """Encode a ``DialBackResponse{OK}`` (proto3: the OK status is the empty message)."""
    return pb2.DialBackResponse(status=pb2.DIAL_BACK_OK).encode()


def decode_v2_dial_back_response(data: bytes) -> int:
    """Decode a ``DialBackResponse``; return its status (0 is OK)."""
    try:
        return pb2.DialBackResponse.decode(data).status
    except DecodeError as exc:
        raise _malformed(V2_DIAL_BACK_PROTOCOL, "DialBackResponse", exc) from None
