"""Span records: plain, immutable snapshots of spans that the bus, the files and the views share.

A :class:`SpanRecord` is what a span looked like when it started (``kind == "start"``) or
when it ended (``kind == "end"``). It is independent of the OpenTelemetry SDK: the JSON-lines
trace file holds one record per line, and the live span bus hands records to its
subscribers. Attribute values are OpenTelemetry's: ``str``, ``bool``, ``int``, ``float``,
``None``, tuples of those and (rarely) string-keyed mappings; ``bytes`` become hex text.

This module imports no SDK: :meth:`SpanRecord.from_readable_span` takes any object shaped
like the SDK's ``ReadableSpan``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from .spans import LIBP2P_NODE_LABEL, LIBP2P_PEER_ID

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "AttributeValue",
    "Attributes",
    "RecordKind",
    "SpanEventRecord",
    "SpanRecord",
    "StatusName",
    "TraceFormatError",
    "latest_records",
    "short_peer_id",
]

AttributeValue: TypeAlias = (
    "str | bool | int | float | tuple[AttributeValue, ...] | Mapping[str, AttributeValue] | None"
)
Attributes: TypeAlias = Mapping[str, AttributeValue]
RecordKind: TypeAlias = Literal["start", "end"]
StatusName: TypeAlias = Literal["unset", "ok", "error"]

_KINDS: Final = frozenset({"start", "end"})
_STATUSES: Final = frozenset({"unset", "ok", "error"})
_SPAN_KINDS: Final = frozenset({"internal", "server", "client", "producer", "consumer"})
_STATUS_NAMES: Final = {0: "unset", 1: "ok", 2: "error"}  # opentelemetry StatusCode values
#: How deeply attribute values may nest in a trace file (OpenTelemetry's AnyValue can nest).
MAX_VALUE_DEPTH: Final = 8


class TraceFormatError(ValueError):
    """A span record (a trace-file line) is not valid JSON or not shaped like a record."""


def short_peer_id(peer_id: str) -> str:
    """Shorten a peer id the way go-libp2p's ``ShortString`` does: ``12*Ab3xYz``."""
    if len(peer_id) <= 10:
        return peer_id
    return f"{peer_id[:2]}*{peer_id[-6:]}"


@dataclass(frozen=True, slots=True)
class SpanEventRecord:
    """One span event: a name, when it happened, and its attributes."""

    name: str
    time_ns: int
    attributes: Attributes = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        return {"name": self.name, "time_ns": self.time_ns, "attributes": dict(self.attributes)}

    @classmethod
    def from_dict(cls, data: object) -> SpanEventRecord:
        """Validate and convert the JSON form; :class:`TraceFormatError` if malformed."""
        obj = _expect_dict(data, "event")
        return cls(
            name=_expect_str(obj.get("name"), "event name"),
            time_ns=_expect_int(obj.get("time_ns"), "event time_ns"),
            attributes=_attributes_from_json(obj.get("attributes", {}), "event attributes"),
        )


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """A snapshot of one span at its start (``kind="start"``) or its end (``kind="end"``).

    ``trace_id``, ``span_id`` and ``parent_id`` are lowercase hex (32, 16, 16 digits);
    times are nanoseconds since the Unix epoch; ``end_ns`` is ``None`` while the span runs.
    ``status`` is ``"unset"``, ``"ok"`` or ``"error"`` with an optional ``description``;
    ``span_kind`` is OpenTelemetry's SpanKind in lowercase; ``resource`` holds the node's
    resource attributes (``libp2p.node_label``, ``libp2p.peer_id``, ``service.*``, ...).
    """

    kind: RecordKind
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int | None = None
    attributes: Attributes = field(default_factory=dict)
    events: tuple[SpanEventRecord, ...] = ()
    status: StatusName = "unset"
    description: str | None = None
    resource: Attributes = field(default_factory=dict)
    span_kind: str = "internal"

    @property
    def ended(self) -> bool:
        """True for the record of an ended span."""
        return self.kind == "end"

    @property
    def duration_ns(self) -> int | None:
        """Return how long the span ran, or ``None`` while it runs."""
        return None if self.end_ns is None else self.end_ns - self.start_ns

    @property
    def node_label(self) -> str | None:
        """Return the label of the node that produced the span ("A", "relay", ...)."""
        value = self.resource.get(LIBP2P_NODE_LABEL)
        return value if isinstance(value, str) else None

    @property
    def peer_id(self) -> str | None:
        """Return the peer id of the node that produced the span."""
        value = self.resource.get(LIBP2P_PEER_ID)
        return value if isinstance(value, str) else None

    # ------------------------------------------------------------ from the SDK
    @classmethod
    def from_readable_span(cls, span: ReadableSpan, ended: bool) -> SpanRecord:
        """Snapshot an SDK span (``ended=False`` from ``on_start``, True from ``on_end``).

        The end record of a span is built once and shared by every processor that asks
        (the bus and the file get the same ``ReadableSpan`` in ``on_end``).
        """
        global _last_end
        if ended:
            last = _last_end
            if last[0] is span:
                return last[1]
        record = cls._snapshot(span, ended)
        if ended:
            _last_end = (span, record)
        return record

    @classmethod
    def _snapshot(cls, span: ReadableSpan, ended: bool) -> SpanRecord:
        ctx = span.context
        parent = span.parent
        status = span.status
        events = tuple(
            SpanEventRecord(ev.name, ev.timestamp, _clean_attributes(ev.attributes))
            for ev in span.events
        )
        return cls(
            kind="end" if ended else "start",
            name=span.name,
            trace_id=format(ctx.trace_id, "032x") if ctx is not None else "0" * 32,
            span_id=format(ctx.span_id, "016x") if ctx is not None else "0" * 16,
            parent_id=format(parent.span_id, "016x") if parent is not None else None,
            start_ns=span.start_time or 0,
            end_ns=span.end_time if ended else None,
            attributes=_clean_attributes(span.attributes),
            events=events,
            status=_STATUS_NAMES.get(status.status_code.value, "unset"),  # type: ignore[arg-type]
            description=status.description,
            resource=_resource_attributes(span.resource),
            span_kind=span.kind.name.lower(),
        )

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form (the shape of one trace-file line)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "span_kind": self.span_kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "description": self.description,
            "attributes": dict(self.attributes),
            "events": [ev.to_dict() for ev in self.events],
            "resource": dict(self.resource),
        }

    def to_json(self) -> str:
        """Return the record as one line of JSON (no newline inside, ASCII only)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_dict(cls, data: object) -> SpanRecord:
        """Validate and convert the JSON form; :class:`TraceFormatError` if malformed."""
        obj = _expect_dict(data, "span record")
        kind = obj.get("kind")
        if not isinstance(kind, str) or kind not in _KINDS:
            raise TraceFormatError(f"kind must be 'start' or 'end', not {kind!r}")
        status = obj.get("status", "unset")
        if not isinstance(status, str) or status not in _STATUSES:
            raise TraceFormatError(f"status must be unset, ok or error, not {status!r}")
        span_kind = obj.get("span_kind", "internal")
        if not isinstance(span_kind, str) or span_kind not in _SPAN_KINDS:
            raise TraceFormatError(f"unknown span_kind {span_kind!r}")
        end_ns = obj.get("end_ns")
        if end_ns is not None:
            end_ns = _expect_int(end_ns, "end_ns")
        if (kind == "end") != (end_ns is not None):
            raise TraceFormatError("an 'end' record needs end_ns and a 'start' record has none")
        parent_id = obj.get("parent_id")
        if parent_id is not None:
            parent_id = _expect_hex(parent_id, 16, "parent_id")
        description = obj.get("description")
        if description is not None:
            description = _expect_str(description, "description")
        events = obj.get("events", [])
        if not isinstance(events, list):
            raise TraceFormatError("events must be a list")
        return cls(
            kind=kind,  # type: ignore[arg-type]  # checked against _KINDS above
            name=_expect_str(obj.get("name"), "name"),
            trace_id=_expect_hex(obj.get("trace_id"), 32, "trace_id"),
            span_id=_expect_hex(obj.get("span_id"), 16, "span_id"),
            parent_id=parent_id,
            start_ns=_expect_int(obj.get("start_ns"), "start_ns"),
            end_ns=end_ns,
            attributes=_attributes_from_json(obj.get("attributes", {}), "attributes"),
            events=tuple(SpanEventRecord.from_dict(ev) for ev in events),
            status=status,  # type: ignore[arg-type]  # checked against _STATUSES above
            description=description,
            resource=_attributes_from_json(obj.get("resource", {}), "resource"),
            span_kind=span_kind,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SpanRecord:
        """Parse one JSON line; :class:`TraceFormatError` if it is not a valid record."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise TraceFormatError(f"not JSON: {exc}") from None
        return cls.from_dict(data)


def latest_records(records: Iterable[SpanRecord]) -> list[SpanRecord]:
    """Keep the latest record of each span (its end record supersedes its start record)."""
    latest: dict[tuple[str, str], SpanRecord] = {}
    for record in records:
        key = (record.trace_id, record.span_id)
        if record.ended or key not in latest:
            latest[key] = record
    return list(latest.values())


# ---------------------------------------------------------------- helpers
_resource_cache: dict[int, tuple[object, Attributes]] = {}
_last_end: tuple[object, SpanRecord] = (None, None)  # type: ignore[assignment]
_PLAIN: Final = frozenset({str, bool, int, float, type(None)})


def _resource_attributes(resource: Any) -> Attributes:
    """Return a resource's attributes as a dict, computed once per resource object."""
    cached = _resource_cache.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    attrs = _clean_attributes(resource.attributes if resource is not None else None)
    if len(_resource_cache) >= 256:
        _resource_cache.clear()
    _resource_cache[id(resource)] = (resource, attrs)
    return attrs


def _clean_attributes(attrs: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """Copy span attributes into plain values (tuples for sequences, hex for bytes)."""
    if not attrs:
        return {}
    copy = getattr(attrs, "copy", None)  # BoundedAttributes.copy() is a plain dict copy
    out = dict(copy()) if copy is not None else dict(attrs)
    for key, value in out.items():
        if type(value) not in _PLAIN:
            out[key] = _clean_value(value)
    return out


def _clean_value(value: Any) -> AttributeValue:
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): _clean_value(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return tuple(_clean_value(v) for v in value)
    return str(value)


def _attributes_from_json(data: object, what: str) -> dict[str, AttributeValue]:
    obj = _expect_dict(data, what)
    return {key: _value_from_json(value, what, 0) for key, value in obj.items()}


def _value_from_json(value: object, what: str, depth: int) -> AttributeValue:
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value
    if depth >= MAX_VALUE_DEPTH:
        raise TraceFormatError(f"{what}: values nest deeper than {MAX_VALUE_DEPTH}")
    if isinstance(value, list):
        return tuple(_value_from_json(v, what, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _value_from_json(v, what, depth + 1) for k, v in value.items()}
    raise TraceFormatError(f"{what}: unsupported value {value!r}")  # pragma: no cover


def _expect_dict(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TraceFormatError(f"{what} must be a JSON object, not {type(data).__name__}")
    return data


def _expect_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TraceFormatError(f"{what} must be a string, not {value!r:.60}")
    return value


def _expect_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TraceFormatError(f"{what} must be a non-negative integer, not {value!r:.60}")
    return value


def _expect_hex(value: object, digits: int, what: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) != digits
        or any(c not in "0123456789abcdef" for c in value)
    ):
        raise TraceFormatError(f"{what} must be {digits} lowercase hex digits, not {value!r:.60}")
    return value

