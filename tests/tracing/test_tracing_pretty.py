"""The printed trace: exact output for a small fixed two-node case, and its layout rules."""

from __future__ import annotations

from flarelab.tracing.pretty import format_timeline, format_trace
from flarelab.tracing.records import SpanEventRecord as E
from flarelab.tracing.records import SpanRecord as R

A = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa"
B = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbbbb"
RA = {"libp2p.node_label": "A", "libp2p.peer_id": A}
RB = {"libp2p.node_label": "B", "libp2p.peer_id": B}
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
TA, TB = "a" * 32, "b" * 32


def case() -> list[R]:
    return [
        R("end", "node.dial", TA, "0000000000000001", None, T0, T0 + 9 * MS,
          {"libp2p.remote_peer_id": B, "libp2p.multiaddr": "/ip4/198.51.100.2/tcp/4001",
           "libp2p.outcome": "success"}, resource=RA),
        R("end", "tcp.dial", TA, "0000000000000002", "0000000000000001", T0, T0 + 1 * MS,
          {"network.peer.address": "198.51.100.2", "network.peer.port": 4001}, resource=RA),
        R("end", "noise.handshake", TA, "0000000000000003", "0000000000000001", T0 + 2 * MS,
          T0 + 5 * MS, {"libp2p.role": "initiator", "libp2p.remote_peer_id": B},
          (E("message.sent", T0 + 2 * MS, {"message.type": "e", "message.size": 34}),
           E("message.received", T0 + 3 * MS,
             {"message.type": "e, ee, s, es", "message.size": 130}),
           E("message.sent", T0 + 4 * MS, {"message.type": "s, se", "message.size": 98})),
          resource=RA),
        R("end", "ping", TA, "0000000000000004", "0000000000000001", T0 + 6 * MS, T0 + 9 * MS,
          {"libp2p.protocol": "/ipfs/ping/1.0.0", "libp2p.rtt_ms": 1.25},
          (E("message.sent", T0 + 6 * MS, {"message.type": "ping", "message.size": 32}),
           E("message.received", T0 + 7 * MS, {"message.type": "pong", "message.size": 32})),
          resource=RA),
        R("end", "tcp.accept", TB, "0000000000000005", None, T0 + 1 * MS, T0 + 8 * MS,
          {"network.peer.address": "203.0.113.7", "network.peer.port": 50123}, resource=RB),
        R("end", "noise.handshake", TB, "0000000000000006", "0000000000000005", T0 + 2 * MS,
          T0 + 4 * MS, {"libp2p.role": "responder", "libp2p.error_side": "remote"},
          (E("message.received", T0 + 2 * MS, {"message.type": "e", "message.size": 34}),
           E("exception", T0 + 4 * MS, {"exception.type": "flarelab.errors.HandshakeError",
                                        "exception.message": "bad signature"})),
          status="error", description="HandshakeError: bad signature", resource=RB),
        R("start", "identify.exchange", TB, "0000000000000007", "0000000000000005", T0 + 6 * MS,
          resource=RB, attributes={"libp2p.protocol": "/ipfs/id/1.0.0"}),
    ]


EXPECTED_TREE = """\
flarelab trace: 2 nodes, 2 traces, 7 spans, 9.000 ms, 1 running, 1 error
  A = 12*aaaaaa   B = 12*bbbbbb

  start ms    dur ms  node  span
── A · trace aaaaaaaa ──────────────────────────────────────────────────────────
     0.000     9.000  A     node.dial peer=B addr=/ip4/198.51.100.2/tcp/4001
                            │    outcome=success
     0.000     1.000  A     ├─ tcp.dial addr=198.51.100.2:4001
     2.000     3.000  A     ├─ noise.handshake peer=B role=initiator
     2.000                  │     → e  34 B
     3.000                  │     ← e, ee, s, es  130 B
     4.000                  │     → s, se  98 B
     6.000     3.000  A     └─ ping proto=/ipfs/ping/1.0.0 rtt=1.25ms
     6.000                        → ping  32 B
     7.000                        ← pong  32 B
── B · trace bbbbbbbb ──────────────────────────────────────────────────────────
     1.000     7.000  B     tcp.accept addr=203.0.113.7:50123
     2.000     2.000  B     ├─ noise.handshake role=responder fault=remote ERROR
                            │     ✗ HandshakeError: bad signature
     2.000                  │     ← e  34 B
     6.000   running  B     └─ identify.exchange proto=/ipfs/id/1.0.0
"""

EXPECTED_TIMELINE = """\
flarelab timeline: 2 nodes, 7 spans, 9.000 ms, 1 running, 1 error
  A = 12*aaaaaa   B = 12*bbbbbb

   time ms  node  what
     0.000  A     ┌ node.dial peer=B addr=/ip4/198.51.100.2/tcp/4001
     0.000  A     ┌ tcp.dial addr=198.51.100.2:4001
     1.000  A     └ tcp.dial 1.000 ms
     1.000  B     ┌ tcp.accept addr=203.0.113.7:50123
     2.000  A     ┌ noise.handshake peer=B role=initiator
     2.000  A       → e  34 B  (noise.handshake)
     2.000  B     ┌ noise.handshake role=responder
     2.000  B       ← e  34 B  (noise.handshake)
     3.000  A       ← e, ee, s, es  130 B  (noise.handshake)
     4.000  A       → s, se  98 B  (noise.handshake)
     4.000  B     └ noise.handshake 2.000 ms fault=remote ERROR HandshakeError: bad…
     5.000  A     └ noise.handshake 3.000 ms
     6.000  A     ┌ ping proto=/ipfs/ping/1.0.0
     6.000  A       → ping  32 B  (ping)
     6.000  B     ┌ identify.exchange proto=/ipfs/id/1.0.0
     7.000  A       ← pong  32 B  (ping)
     8.000  B     └ tcp.accept 7.000 ms
     9.000  A     └ ping 3.000 ms rtt=1.25ms
     9.000  A     └ node.dial 9.000 ms outcome=success
"""


def test_tree_exact() -> None:
    assert format_trace(case(), width=80) == EXPECTED_TREE


def test_timeline_exact() -> None:
    assert format_timeline(case(), width=84) == EXPECTED_TIMELINE


def test_start_and_end_records_merge_and_input_order_does_not_matter() -> None:
    records = case()
    starts = [
        R("start", r.name, r.trace_id, r.span_id, r.parent_id, r.start_ns, None, {},
          resource=r.resource)
        for r in records
        if r.ended
    ]
    assert format_trace(starts + records[::-1], width=80) == EXPECTED_TREE


def test_every_line_fits_the_width() -> None:
    for width in (60, 72, 100):
        for text in (format_trace(case(), width=width, verbose=True),
                     format_timeline(case(), width=width)):
            assert max(len(line) for line in text.splitlines()) <= width


def test_traces_of_different_nodes_interleave_by_start_time() -> None:
    records = case()
    late_root = R("end", "relay.reserve", "c" * 32, "0000000000000008", None,
                  T0 + int(0.5 * MS), T0 + 2 * MS, {}, resource=RB)
    text = format_trace([*records, late_root], width=80)
    headers = [line.split(" · ")[0] for line in text.splitlines() if line.startswith("── ")]
    assert headers == ["── A", "── B", "── B"]
    assert text.index("relay.reserve") < text.index("tcp.accept")


def test_colour_only_when_asked() -> None:
    plain = format_trace(case(), width=80)
    coloured = format_trace(case(), width=80, color=True)
    assert "\x1b[" not in plain
    assert "\x1b[31;1mnoise.handshake\x1b[0m" in coloured
    assert "\x1b[31;1m                            │     ✗ HandshakeError" in coloured
    assert "\x1b[" in format_timeline(case(), color=True)


def test_labels_fall_back_to_short_ids_and_unknown_peers_are_shortened() -> None:
    record = R("end", "ping", "d" * 32, "0000000000000009", None, T0, T0 + MS,
               {"libp2p.remote_peer_id": "12D3KooWZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZzzzzzz",
                "libp2p.bytes_sent": 123_456, "custom.key": "x y"},
               resource={"libp2p.peer_id": A})
    text = format_trace([record])
    assert "  12*aaaaaa  ping peer=12*zzzzzz sent=120.6KiB" in text
    assert "custom.key" not in text
    assert "custom.key='x y'" in format_trace([record], verbose=True)
    assert format_trace([]) == "flarelab trace: no spans\n"
    assert format_timeline([]) == "flarelab timeline: no spans\n"


def test_exception_event_explains_a_failure_without_description() -> None:
    record = R("end", "mss.negotiate", "e" * 32, "000000000000000a", None, T0, T0 + MS,
               {"libp2p.reason": "peer closed"},
               (E("exception", T0 + MS, {"exception.type": "flarelab.errors.IncompleteError",
                                         "exception.message": "stream ended"}),),
               status="error", resource=RA)
    text = format_trace([record], width=80)
    assert "mss.negotiate reason='peer closed' ERROR" in text
    assert "│     ✗ IncompleteError: stream ended" not in text  # a root has no tree line
    assert "✗ IncompleteError: stream ended" in text


def test_attribute_formatting_in_spans_and_events() -> None:
    record = R("end", "connection", "f" * 32, "000000000000000b", None, T0, T0 + MS,
               {"libp2p.limited": False, "libp2p.protocols_offered": ("/yamux/1.0.0",)},
               (E("message.received", T0, {"message.type": "pong", "message.size": 32,
                                           "libp2p.rtt_ms": 0.5}),
                E("stream.reset", T0, {"libp2p.stream_id": 3})),
               resource=RA)
    text = format_trace([record], width=80)
    assert "connection offered=[/yamux/1.0.0]\n" in text
    assert "limited" not in text
    assert "← pong  32 B  rtt=0.5ms" in text
    assert "• stream.reset  stream=3" in text
    relayed = R("end", "connection", "f" * 32, "000000000000000b", None, T0, T0 + MS,
                {"libp2p.limited": True}, resource=RA)
    assert "connection limited=True" in format_trace([relayed])
