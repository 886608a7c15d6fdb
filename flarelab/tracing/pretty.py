"""A trace for the terminal: span trees with times, key attributes, messages and errors.

:func:`format_trace` turns span records (from a trace file or the bus) into text such as::

    flarelab trace: 2 nodes, 2 traces, 4 spans, 3.000 ms
      A = 12*AAAAAA   B = 12*BBBBBB

     start ms    dur ms  node  span
    ── A · trace 0af76519 ───────────────────────────────
        0.000     3.000  A     node.dial peer=B addr=/ip4/10.0.0.2/tcp/4001 outcome=success
        0.100     1.000  A     └─ noise.handshake peer=B role=initiator
        0.200                     → e  32 B

Every line starts with its offset from the first span in the records (so lines of
different nodes compare), then the duration. Traces are ordered by start time, so the
traces of different nodes interleave; within a trace, spans form a tree and each line
names the node that made it. ``→``/``←`` lines are the messages a span sent/received;
failed spans end in ``ERROR`` with the reason on the next line.

:func:`format_timeline` shows the same records as one list in time order across all nodes
(span starts ``┌``, ends ``└`` and messages), a text sequence diagram of who sent what when.
"""

from __future__ import annotations

import heapq
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from .records import AttributeValue, SpanEventRecord, SpanRecord, latest_records, short_peer_id
from .spans import (
    LIBP2P_AGENT,
    LIBP2P_ATTEMPT,
    LIBP2P_BYTES_RECEIVED,
    LIBP2P_BYTES_SENT,
    LIBP2P_CLOSE_REASON,
    LIBP2P_DIRECTION,
    LIBP2P_ERROR_SIDE,
    LIBP2P_LIMITED,
    LIBP2P_MULTIADDR,
    LIBP2P_MUXER,
    LIBP2P_OBSERVED_ADDR,
    LIBP2P_OUTCOME,
    LIBP2P_PROTOCOL,
    LIBP2P_PROTOCOLS_OFFERED,
    LIBP2P_REASON,
    LIBP2P_REMOTE_PEER_ID,
    LIBP2P_ROLE,
    LIBP2P_RTT_MS,
    LIBP2P_SECURITY,
    LIBP2P_STREAM_ID,
    LIBP2P_THROUGHPUT_MBPS,
    MESSAGE_RECEIVED,
    MESSAGE_SENT,
    MESSAGE_SIZE,
    MESSAGE_TYPE,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
)

__all__ = ["format_timeline", "format_trace"]

_START_W: Final = 10  # "    12.345"
_DUR_W: Final = 9
_MIN_WIDTH: Final = 60
_ELLIPSIS: Final = "…"
_NEVER: Final = 1 << 64

#: (attribute key, short name) in the order they are shown on a span's line.
_KEY_ATTRIBUTES: Final = (
    (LIBP2P_REMOTE_PEER_ID, "peer"),
    (LIBP2P_ROLE, "role"),
    (LIBP2P_DIRECTION, "dir"),
    (LIBP2P_MULTIADDR, "addr"),
    (LIBP2P_PROTOCOL, "proto"),
    (LIBP2P_PROTOCOLS_OFFERED, "offered"),
    (LIBP2P_SECURITY, "sec"),
    (LIBP2P_MUXER, "mux"),
    (LIBP2P_LIMITED, "limited"),
    (LIBP2P_STREAM_ID, "stream"),
    (LIBP2P_ATTEMPT, "attempt"),
    (LIBP2P_RTT_MS, "rtt"),
    (LIBP2P_BYTES_SENT, "sent"),
    (LIBP2P_BYTES_RECEIVED, "recv"),
    (LIBP2P_THROUGHPUT_MBPS, "speed"),
    (LIBP2P_AGENT, "agent"),
    (LIBP2P_OBSERVED_ADDR, "observed"),
    (LIBP2P_OUTCOME, "outcome"),
    (LIBP2P_REASON, "reason"),
    (LIBP2P_CLOSE_REASON, "closed"),
)
_SHORT_NAMES: Final = dict(_KEY_ATTRIBUTES)
#: Short names the timeline shows on a span's end line rather than its start line.
_END_NAMES: Final = frozenset(
    {"rtt", "sent", "recv", "speed", "outcome", "reason", "closed", "fault"}
)
_SHOWN: Final = frozenset(_SHORT_NAMES) | {
    NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT, LIBP2P_ERROR_SIDE,
}

_RED: Final = "\x1b[31;1m"
_DIM: Final = "\x1b[2m"
_RESET: Final = "\x1b[0m"
_NODE_COLORS: Final = ("\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m")


@dataclass
class _Node:
    span: SpanRecord
    children: list[_Node] = field(default_factory=list)


@dataclass
class _Layout:
    """What every line needs: time zero, column widths, node names and colours."""

    t0: int
    width: int
    node_w: int
    peer_names: Mapping[str, str]
    node_colors: Mapping[str, str]
    color: bool
    verbose: bool


def format_trace(
    records: Iterable[SpanRecord], *, width: int = 100, color: bool = False, verbose: bool = False
) -> str:
    """Render span records as a text trace, lines at most ``width`` characters long.

    Start and end records of one span are merged (a span without its end record shows as
    running). ``color`` adds ANSI colours (node labels, errors, messages); ``verbose``
    shows every attribute, not just the key ones.
    """
    spans = latest_records(records)
    if not spans:
        return "flarelab trace: no spans\n"
    layout, nodes = _layout(spans, width, color, verbose)
    traces = _build_trees(spans)
    lines = [_summary("trace", spans, len(nodes), len(traces), layout)]
    lines.extend(_legend(nodes, layout))
    lines.append(
        f"{'start ms':>{_START_W}} {'dur ms':>{_DUR_W}}  {'node':<{layout.node_w}}  span"
    )
    for trace_id, roots in traces:
        lines.append(_trace_header(trace_id, roots, layout))
        for i, root in enumerate(roots):
            _render(root, "", i == len(roots) - 1, layout, lines, top=True)
    return "\n".join(lines) + "\n"


def format_timeline(
    records: Iterable[SpanRecord], *, width: int = 100, color: bool = False
) -> str:
    """Render span records as one time-ordered list across all nodes: a text sequence diagram.

    Each span contributes a line when it starts (``┌``) and when it ends (``└``, with its
    duration and its outcome or error); each message is a line (``→`` sent, ``←``
    received) naming its span. Lines of all nodes interleave by time, so what A sent
    appears next to what B received; equal times keep the nesting order of the spans.
    """
    spans = latest_records(records)
    if not spans:
        return "flarelab timeline: no spans\n"
    layout, nodes = _layout(spans, width, color, verbose=False)
    lines = [_summary("timeline", spans, len(nodes), None, layout)]
    lines.extend(_legend(nodes, layout))
    lines.append(f"{'time ms':>{_START_W}}  {'node':<{layout.node_w}}  what")
    trees = _build_trees(spans)
    per_trace = [_timeline_items(root, layout) for _, roots in trees for root in roots]
    for at, label, text, paint in heapq.merge(*per_trace, key=lambda item: item[0]):
        pad = " " * (layout.node_w - len(label))
        head = f"{_ms(at - layout.t0):>{_START_W}}  "
        line = _fit(head + label + pad + "  " + text, layout.width)
        body = line[len(head) + len(label):]
        node = _paint(label, layout.node_colors.get(label, ""), layout)
        lines.append(head + node + _paint(body, paint, layout))
    return "\n".join(lines) + "\n"


def _timeline_items(node: _Node, layout: _Layout) -> list[tuple[int, str, str, str]]:
    """Return (time, node, text, colour) for a span and its subtree, in time order."""
    span = node.span
    label = _node_label(span)
    start_tokens = [t for t in _span_tokens(span, layout) if t.split("=")[0] not in _END_NAMES]
    items = [(span.start_ns, label, " ".join(["┌", span.name, *start_tokens]), "")]
    events = [
        (event.time_ns, label, f"  {text}  ({span.name})", _DIM)
        for event in span.events
        if (text := _event_text(event, span, layout)) is not None
    ]
    children = [_timeline_items(child, layout) for child in node.children]
    items.extend(heapq.merge(events, *children, key=lambda item: item[0]))
    if span.end_ns is not None:
        end_tokens = [t for t in _span_tokens(span, layout) if t.split("=")[0] in _END_NAMES]
        text = " ".join(["└", span.name, f"{_ms(span.end_ns - span.start_ns)} ms", *end_tokens])
        paint = ""
        if span.status == "error":
            text += f" ERROR {_error_reason(span) or ''}".rstrip()
            paint = _RED
        items.append((span.end_ns, label, text, paint))
    return items


# ---------------------------------------------------------------- structure
def _layout(
    spans: list[SpanRecord], width: int, color: bool, verbose: bool
) -> tuple[_Layout, dict[str, str | None]]:
    nodes = _nodes_in_order(spans)
    layout = _Layout(
        t0=min(span.start_ns for span in spans),
        width=max(width, _MIN_WIDTH),
        node_w=max(4, *(len(label) for label in nodes)),
        peer_names={peer: label for label, peer in nodes.items() if peer},
        node_colors={label: _NODE_COLORS[i % len(_NODE_COLORS)] for i, label in enumerate(nodes)},
        color=color,
        verbose=verbose,
    )
    return layout, nodes


def _legend(nodes: dict[str, str | None], layout: _Layout) -> list[str]:
    legend = [
        f"{label} = {short_peer_id(peer)}"
        for label, peer in nodes.items()
        if peer and label != short_peer_id(peer)
    ]
    lines = _wrap("  " + legend[0], legend[1:], "  ", layout.width, sep="   ") if legend else []
    return [*lines, ""]


def _node_label(span: SpanRecord) -> str:
    if span.node_label:
        return span.node_label
    if span.peer_id:
        return short_peer_id(span.peer_id)
    return "?"


def _nodes_in_order(spans: list[SpanRecord]) -> dict[str, str | None]:
    """Map each node's label to its peer id (if known), in the order of their first span."""
    nodes: dict[str, str | None] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        nodes.setdefault(_node_label(span), span.peer_id)
    return nodes


def _build_trees(spans: list[SpanRecord]) -> list[tuple[str, list[_Node]]]:
    """Group spans by trace and link them into trees; traces ordered by start time."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    traces = []
    for trace_id, members in by_trace.items():
        # equal start times (common on a mock clock): the span that ended first goes first
        members.sort(key=lambda s: (s.start_ns, _NEVER if s.end_ns is None else s.end_ns))
        nodes = {span.span_id: _Node(span) for span in members}
        roots = []
        for span in members:
            parent = nodes.get(span.parent_id) if span.parent_id else None
            if parent is None or parent.span is span:
                roots.append(nodes[span.span_id])
            else:
                parent.children.append(nodes[span.span_id])
        traces.append((trace_id, roots))
    traces.sort(key=lambda item: (item[1][0].span.start_ns, item[0]))
    return traces


# ---------------------------------------------------------------- lines
def _summary(
    view: str, spans: list[SpanRecord], nodes: int, traces: int | None, layout: _Layout
) -> str:
    end = max((s.end_ns if s.end_ns is not None else s.start_ns) for s in spans)
    errors = sum(1 for s in spans if s.status == "error")
    running = sum(1 for s in spans if not s.ended)
    parts = [_plural(nodes, "node")]
    if traces is not None:
        parts.append(_plural(traces, "trace"))
    parts += [_plural(len(spans), "span"), _ms(end - layout.t0) + " ms"]
    if running:
        parts.append(f"{running} running")
    if errors:
        parts.append(_paint(_plural(errors, "error"), _RED, layout))
    parts = [part + "," for part in parts[:-1]] + parts[-1:]
    return "\n".join(_wrap(f"flarelab {view}: {parts[0]}", parts[1:], "  ", layout.width))


def _trace_header(trace_id: str, roots: list[_Node], layout: _Layout) -> str:
    labels = sorted({_node_label(root.span) for root in roots})
    text = f"── {', '.join(labels)} · trace {trace_id[:8]}"
    if any(root.span.parent_id for root in roots):
        text += " (parent span not recorded)"
    text += " "
    return _fit(text + "─" * max(0, layout.width - len(text)), layout.width)


def _render(
    node: _Node, prefix: str, last: bool, layout: _Layout, lines: list[str],
    *, top: bool = False,
) -> None:
    span = node.span
    if top:
        branch, cont = "", ""
    else:
        branch = prefix + ("└─ " if last else "├─ ")
        cont = prefix + ("   " if last else "│  ")
    offset = _ms(span.start_ns - layout.t0)
    duration = _ms(span.duration_ns) if span.duration_ns is not None else "running"
    label = _node_label(span)
    head = f"{offset:>{_START_W}} {duration:>{_DUR_W}}  "
    pad = " " * (layout.node_w - len(label))
    tokens = _span_tokens(span, layout)
    error = span.status == "error"
    if error:
        tokens.append("ERROR")
    gutter = " " * (len(head) + layout.node_w + 2)
    first = head + label + pad + "  " + branch + span.name
    wrap_indent = gutter + cont + ("│    " if node.children else "     ")
    body = _wrap(first, tokens, wrap_indent, layout.width)
    if layout.color:
        painted = _paint(span.name, _RED, layout) if error else span.name
        body[0] = (
            head + _paint(label, layout.node_colors.get(label, ""), layout) + pad + "  " + branch
            + painted + body[0][len(first):]
        )
    lines.extend(body)
    event_prefix = gutter + cont + ("│  " if node.children else "   ")
    if error:
        why = _error_reason(span)
        if why:
            room = max(20, layout.width - len(event_prefix) - 2)
            for i, part in enumerate(textwrap.wrap(why, room, break_on_hyphens=False)):
                line = event_prefix + ("✗ " if i == 0 else "  ") + part
                lines.append(_paint(_fit(line, layout.width), _RED, layout))
    for event in span.events:
        text = _event_text(event, span, layout)
        if text is not None:
            at = _ms(event.time_ns - layout.t0)
            start = f"{at:>{_START_W}} {'':>{_DUR_W}}  "
            line = _fit(start + event_prefix[len(start):] + text, layout.width)
            lines.append(_paint(line, _DIM, layout))
    for i, child in enumerate(node.children):
        _render(child, cont, i == len(node.children) - 1, layout, lines)


def _span_tokens(span: SpanRecord, layout: _Layout) -> list[str]:
    attrs = span.attributes
    tokens = []
    for key, short in _KEY_ATTRIBUTES:
        if key == LIBP2P_MULTIADDR and key not in attrs:
            addr = _socket_address(attrs)
            if addr:
                tokens.append(f"addr={addr}")
            continue
        if key not in attrs or (key == LIBP2P_LIMITED and not attrs[key]):
            continue
        tokens.append(f"{short}={_attr_text(key, attrs[key], layout)}")
    if span.status == "error" and LIBP2P_ERROR_SIDE in attrs:
        tokens.append(f"fault={_value(attrs[LIBP2P_ERROR_SIDE])}")
    if layout.verbose:
        tokens.extend(f"{k}={_value(v)}" for k, v in sorted(attrs.items()) if k not in _SHOWN)
    return tokens


def _attr_text(key: str, value: AttributeValue, layout: _Layout) -> str:
    """Format one attribute value the way a reader wants it (peer names, units)."""
    if key == LIBP2P_REMOTE_PEER_ID and isinstance(value, str):
        return layout.peer_names.get(value) or short_peer_id(value)
    if key == LIBP2P_RTT_MS:
        return f"{_num(value)}ms"
    if key in (LIBP2P_BYTES_SENT, LIBP2P_BYTES_RECEIVED):
        return _bytes(value).replace(" ", "")
    if key == LIBP2P_THROUGHPUT_MBPS:
        return f"{_num(value)}Mbit/s"
    return _value(value)


def _socket_address(attrs: Mapping[str, AttributeValue]) -> str | None:
    host = attrs.get(NETWORK_PEER_ADDRESS)
    if not isinstance(host, str):
        return None
    port = attrs.get(NETWORK_PEER_PORT)
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _error_reason(span: SpanRecord) -> str | None:
    """Return why a span failed: its status description, else the exception event."""
    if span.description:
        return span.description
    for event in span.events:
        if event.name == "exception":
            kind = str(event.attributes.get("exception.type", "error")).rsplit(".", 1)[-1]
            return f"{kind}: {event.attributes.get('exception.message', '')}"
    return None


def _event_text(event: SpanEventRecord, span: SpanRecord, layout: _Layout) -> str | None:
    attrs = event.attributes
    if event.name in (MESSAGE_SENT, MESSAGE_RECEIVED):
        arrow = "→" if event.name == MESSAGE_SENT else "←"
        kind = attrs.get(MESSAGE_TYPE, "?")
        text = f"{arrow} {kind if isinstance(kind, str) and kind else _value(kind)}"
        if MESSAGE_SIZE in attrs:
            text += f"  {_bytes(attrs[MESSAGE_SIZE])}"
        extra = [
            f"{_SHORT_NAMES.get(k, k)}={_attr_text(k, v, layout)}"
            for k, v in attrs.items()
            if k not in (MESSAGE_TYPE, MESSAGE_SIZE)
        ]
        return text + ("  " + " ".join(extra) if extra else "")
    if event.name == "exception":
        if span.status == "error" and span.description:
            return None  # the span's error line already says it
        kind = str(attrs.get("exception.type", "error")).rsplit(".", 1)[-1]
        return f"✗ {kind}: {_value(attrs.get('exception.message', ''))}"
    shown = " ".join(
        f"{_SHORT_NAMES.get(k, k)}={_attr_text(k, v, layout)}" for k, v in attrs.items()
    )
    return f"• {event.name}" + (f"  {shown}" if shown else "")


# ---------------------------------------------------------------- formatting
def _wrap(first: str, tokens: list[str], indent: str, width: int, *, sep: str = " ") -> list[str]:
    """Append tokens to ``first``, wrapping onto ``indent``-ed lines to fit ``width``."""
    lines = [first]
    for token in tokens:
        if len(lines[-1]) + len(sep) + len(token) <= width:
            lines[-1] += sep + token
        else:
            lines.append(_fit(indent + token, width))
    lines[0] = _fit(lines[0], width)
    return lines


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + _ELLIPSIS


def _paint(text: str, code: str, layout: _Layout) -> str:
    return f"{code}{text}{_RESET}" if layout.color and code else text


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f}"


def _num(value: AttributeValue) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    return str(value)


def _bytes(value: AttributeValue) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return _value(value)
    if value < 10_000:
        return f"{value} B"
    if value < 10 * 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / (1024 * 1024):.1f} MiB"


def _value(value: AttributeValue) -> str:
    if isinstance(value, str):
        return repr(value) if (" " in value or not value) else value
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
