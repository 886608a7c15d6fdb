"""A small, strict protobuf codec for libp2p's wire messages.

libp2p frames its control messages (keys, envelopes, Noise payloads, identify, relay,
DCUtR, AutoNAT, ...) as protobuf. This module encodes and decodes them from declarations
that mirror the ``.proto`` files in ``flarelab/pb/`` (a test keeps the two in step and
checks the bytes against the official protobuf runtime).

Why our own and not the ``protobuf`` package: a running node must fit in 40 MiB and the
protobuf runtime alone costs 3.5 MiB of it; these messages need a few hundred lines, and a
codec we own can enforce our limits (nesting depth) and raise our errors.

    class Peer(Message):
        id: bytes = field(1, "bytes", required=True)
        addrs: list[bytes] = field(2, "bytes", repeated=True)

    data = Peer(id=b"...", addrs=[b"..."]).encode()
    peer = Peer.decode(data)          # DecodeError on anything malformed

Semantics: proto2 ``optional``/``required`` with presence (``None`` when absent); proto3
messages (``proto3 = True``) have no presence for scalars and skip default values on the
wire. Repeated scalars are read packed or unpacked. Unknown fields are skipped. The last
value of a repeated singular field wins (as protobuf does for scalars; for messages
protobuf would merge, which libp2p never relies on). Groups are refused.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = ["DecodeError", "Field", "Message", "field"]

#: how deeply messages may nest inside each other when decoding
MAX_DEPTH = 32

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_KINDS = {
    "int32": _VARINT, "int64": _VARINT, "uint32": _VARINT, "uint64": _VARINT,
    "sint32": _VARINT, "sint64": _VARINT, "bool": _VARINT, "enum": _VARINT,
    "fixed64": _I64, "sfixed64": _I64, "double": _I64,
    "fixed32": _I32, "sfixed32": _I32, "float": _I32,
    "bytes": _LEN, "string": _LEN, "message": _LEN,
}
_SCALAR_DEFAULTS: dict[str, Any] = {"bytes": b"", "string": "", "bool": False, "message": None}
_RANGES = {
    "int32": (-(1 << 31), (1 << 31) - 1), "sint32": (-(1 << 31), (1 << 31) - 1),
    "enum": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1), "sint64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1), "fixed32": (0, (1 << 32) - 1),
    "sfixed32": (-(1 << 31), (1 << 31) - 1), "fixed64": (0, (1 << 64) - 1),
    "sfixed64": (-(1 << 63), (1 << 63) - 1),
}

M = TypeVar("M", bound="Message")


class DecodeError(RemoteProtocolError, ValueError):
    """The bytes are not a valid encoding of the expected message."""


class Field:
    """One field of a :class:`Message`: number, kind, and cardinality."""

    __slots__ = ("kind", "message", "name", "number", "packed", "repeated", "required", "wire")

    def __init__(
        self,
        number: int,
        kind: str,
        *,
        repeated: bool = False,
        required: bool = False,
        message: type[Message] | str | None = None,
        packed: bool = False,
    ) -> None:
        if kind not in _KINDS:
            raise LocalProtocolError(f"unknown protobuf kind {kind!r}")
        if (kind == "message") != (message is not None):
            raise LocalProtocolError("message fields need message=, and only they")
        self.number = number
        self.kind = kind
        self.repeated = repeated
        self.required = required
        self.message = message
        self.packed = packed and repeated and _KINDS[kind] != _LEN
        self.wire = _KINDS[kind]
        self.name = ""

    def message_type(self) -> type[Message]:
        """The class of a message field (resolving a forward reference by name)."""
        msg = self.message
        if isinstance(msg, str):
            raise LocalProtocolError(f"unresolved message type {msg!r}")
        assert msg is not None
        return msg


def field(
    number: int,
    kind: str,
    *,
    repeated: bool = False,
    required: bool = False,
    message: type[Message] | str | None = None,
    packed: bool = False,
) -> Any:
    """Declare a field; annotate the attribute with its Python type for type checkers
    (``T | None`` for optional fields, ``list[T]`` for repeated ones)."""
    return Field(
        number, kind, repeated=repeated, required=required, message=message, packed=packed
    )


class Message:
    """Base class of protobuf messages; subclasses declare fields with :func:`field`."""

    _fields: ClassVar[tuple[Field, ...]] = ()
    _by_number: ClassVar[dict[int, Field]] = {}
    #: proto3 semantics: no presence for singular scalars, defaults not written
    proto3: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = []
        for name, value in list(vars(cls).items()):
            if isinstance(value, Field):
                value.name = name
                fields.append(value)
                delattr(cls, name)
        fields.sort(key=lambda f: f.number)
        numbers = [f.number for f in fields]
        if len(set(numbers)) != len(numbers):
            raise LocalProtocolError(f"{cls.__name__} has duplicate field numbers")
        cls._fields = tuple(fields)
        cls._by_number = {f.number: f for f in fields}

    def __init__(self, **values: Any) -> None:
        for f in self._fields:
            if f.name in values:
                value = values.pop(f.name)
                if f.repeated:
                    value = list(value)
            elif f.repeated:
                value = []
            elif self.proto3 and f.kind != "message":
                value = _SCALAR_DEFAULTS.get(f.kind, 0)
            else:
                value = None
            object.__setattr__(self, f.name, value)
        if values:
            raise LocalProtocolError(f"{type(self).__name__} has no field {next(iter(values))!r}")

    def has(self, name: str) -> bool:
        """Whether a field with presence is set (or a repeated field is non-empty)."""
        value = getattr(self, name)
        return bool(value) if isinstance(value, list) else value is not None

    def present_fields(self) -> frozenset[str]:
        """Names of the fields that are set."""
        return frozenset(f.name for f in self._fields if self.has(f.name))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self._fields)

    def __repr__(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in self._fields if self.has(f.name)]
        return f"{type(self).__name__}({', '.join(parts)})"

    # ------------------------------------------------------------------ encoding
    def encode(self) -> bytes:
        """Serialise deterministically (fields in number order)."""
        out = bytearray()
        self._encode_into(out)
        return bytes(out)

    def _encode_into(self, out: bytearray) -> None:
        for f in self._fields:
            value = getattr(self, f.name)
            if f.repeated:
                if not value:
                    continue
                if f.packed:
                    body = bytearray()
                    for item in value:
                        _encode_scalar(body, f, item)
                    _put_key(out, f.number, _LEN)
                    _put_varint(out, len(body))
                    out += body
                else:
                    for item in value:
                        _encode_one(out, f, item)
                continue
            if value is None:
                if f.required:
                    raise LocalProtocolError(
                        f"{type(self).__name__}.{f.name} is required but not set"
                    )
                continue
            if self.proto3 and f.kind != "message" and value == _SCALAR_DEFAULTS.get(f.kind, 0):
                continue
            _encode_one(out, f, value)

    # ------------------------------------------------------------------ decoding
    @classmethod
    def decode(cls: type[M], data: bytes | bytearray | memoryview, *, depth: int = 0) -> M:
        """Parse ``data``; raise :class:`DecodeError` if it is not a valid ``cls``."""
        if depth > MAX_DEPTH:
            raise DecodeError(f"messages nested deeper than {MAX_DEPTH}")
        msg = cls()
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            key, pos = _get_varint(view, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise DecodeError(f"{cls.__name__}: field number 0")
            f = cls._by_number.get(number)
            if wire == _VARINT:
                raw, pos = _get_varint(view, pos)
                chunk: Any = raw
            elif wire == _I64:
                if pos + 8 > end:
                    raise DecodeError(f"{cls.__name__}: truncated 64-bit field {number}")
                chunk = bytes(view[pos : pos + 8])
                pos += 8
            elif wire == _I32:
                if pos + 4 > end:
                    raise DecodeError(f"{cls.__name__}: truncated 32-bit field {number}")
                chunk = bytes(view[pos : pos + 4])
                pos += 4
            elif wire == _LEN:
                length, pos = _get_varint(view, pos)
                if length > end - pos:
                    raise DecodeError(f"{cls.__name__}: field {number} runs past the end")
                chunk = view[pos : pos + length]
                pos += length
            else:
                raise DecodeError(f"{cls.__name__}: wire type {wire} (groups) is not supported")
            if f is None:
                continue  # unknown field: skipped, as protobuf does
            msg._accept(f, wire, chunk, depth)
        for f in cls._fields:
            if f.required and getattr(msg, f.name) is None:
                raise DecodeError(f"{cls.__name__}: required field {f.name!r} is missing")
        return msg

    def _accept(self, f: Field, wire: int, chunk: Any, depth: int) -> None:
        name = type(self).__name__
        if f.repeated and wire == _LEN and f.wire != _LEN:  # packed repeated scalars
            target = getattr(self, f.name)
            view = chunk
            pos = 0
            while pos < len(view):
                if f.wire == _VARINT:
                    raw, pos = _get_varint(view, pos)
                    target.append(_scalar(f, raw, name))
                else:
                    size = 8 if f.wire == _I64 else 4
                    if pos + size > len(view):
                        raise DecodeError(f"{name}.{f.name}: truncated packed field")
                    target.append(_scalar(f, bytes(view[pos : pos + size]), name))
                    pos += size
            return
        if wire != f.wire:
            raise DecodeError(f"{name}.{f.name}: wire type {wire}, expected {f.wire}")
        if f.kind == "message":
            value: Any = f.message_type().decode(chunk, depth=depth + 1)
        elif f.kind == "bytes":
            value = bytes(chunk)
        elif f.kind == "string":
            try:
                value = bytes(chunk).decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError(f"{name}.{f.name}: string is not UTF-8") from None
        else:
            value = _scalar(f, chunk, name)
        if f.repeated:
            getattr(self, f.name).append(value)
        else:
            object.__setattr__(self, f.name, value)


# ---------------------------------------------------------------------- wire helpers
def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_key(out: bytearray, number: int, wire: int) -> None:
    _put_varint(out, (number << 3) | wire)


def _get_varint(view: memoryview | bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    end = len(view)
    for i in range(10):
        if pos + i >= end:
            raise DecodeError("truncated varint")
        byte = view[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >= 1 << 64:
                raise DecodeError("varint exceeds 64 bits")
            return value, pos + i + 1
        shift += 7
    raise DecodeError("varint longer than 10 bytes")


def _check_range(f: Field, value: int) -> int:
    low, high = _RANGES.get(f.kind, (None, None))
    if low is not None and not (low <= value <= high):  # type: ignore[operator]
        raise LocalProtocolError(f"{f.name}={value} is out of range for {f.kind}")
    return value


def _encode_scalar(out: bytearray, f: Field, value: Any) -> None:
    kind = f.kind
    if kind == "bool":
        out.append(1 if value else 0)
    elif kind in ("int32", "int64", "enum"):
        _put_varint(out, _check_range(f, int(value)) & ((1 << 64) - 1))
    elif kind in ("uint32", "uint64"):
        _put_varint(out, _check_range(f, int(value)))
    elif kind in ("sint32", "sint64"):
        v = _check_range(f, int(value))
        _put_varint(out, (v << 1) ^ (v >> 63))
    elif kind == "fixed64":
        out += struct.pack("<Q", _check_range(f, int(value)))
    elif kind == "sfixed64":
        out += struct.pack("<q", _check_range(f, int(value)))
    elif kind == "double":
        out += struct.pack("<d", float(value))
    elif kind == "fixed32":
        out += struct.pack("<I", _check_range(f, int(value)))
    elif kind == "sfixed32":
        out += struct.pack("<i", _check_range(f, int(value)))
    elif kind == "float":
        out += struct.pack("<f", float(value))
    else:  # pragma: no cover - guarded by Field()
        raise LocalProtocolError(f"not a scalar kind: {kind}")


def _encode_one(out: bytearray, f: Field, value: Any) -> None:
    _put_key(out, f.number, f.wire)
    if f.kind == "message":
        if not isinstance(value, f.message_type()):
            raise LocalProtocolError(f"{f.name} must be a {f.message_type().__name__}")
        body = value.encode()
        _put_varint(out, len(body))
        out += body
    elif f.kind == "bytes":
        data = bytes(value)
        _put_varint(out, len(data))
        out += data
    elif f.kind == "string":
        data = value.encode("utf-8")
        _put_varint(out, len(data))
        out += data
    else:
        _encode_scalar(out, f, value)


def _scalar(f: Field, raw: Any, where: str) -> Any:
    kind = f.kind
    if kind == "bool":
        return bool(raw)
    if kind in ("uint64", "fixed64"):
        return raw if isinstance(raw, int) else struct.unpack("<Q", raw)[0]
    if kind == "uint32":
        if raw >= 1 << 32:
            raise DecodeError(f"{where}.{f.name}: {raw} does not fit in uint32")
        return raw
    if kind in ("int32", "int64", "enum"):
        value = raw - (1 << 64) if raw >= 1 << 63 else raw
        if kind != "int64" and not (-(1 << 31) <= value < 1 << 31):
            raise DecodeError(f"{where}.{f.name}: {value} does not fit in {kind}")
        return value
    if kind in ("sint32", "sint64"):
        value = (raw >> 1) ^ -(raw & 1)
        if kind == "sint32" and not (-(1 << 31) <= value < 1 << 31):
            raise DecodeError(f"{where}.{f.name}: {value} does not fit in sint32")
        return value
    if kind == "sfixed64":
        return struct.unpack("<q", raw)[0]
    if kind == "double":
        return struct.unpack("<d", raw)[0]
    if kind == "fixed32":
        return struct.unpack("<I", raw)[0]
    if kind == "sfixed32":
        return struct.unpack("<i", raw)[0]
    if kind == "float":
        return struct.unpack("<f", raw)[0]
    raise DecodeError(f"{where}.{f.name}: unexpected kind {kind}")  # pragma: no cover


def resolve_forward_refs(classes: Iterable[type[Message]]) -> None:
    """Replace message-type names given as strings by the classes of the same name."""
    by_name = {c.__name__: c for c in classes}
    for cls in classes:
        for f in cls._fields:
            if isinstance(f.message, str):
                f.message = by_name[f.message]
