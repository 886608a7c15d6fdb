"""Random operations on a pair of cores (Yamux and Mplex alike), checked against a model:
every stream that was not reset delivers exactly the bytes sent, in order; buffers stay
within their bounds; no error is raised between two well-behaved cores."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from muxer_helpers import CorePair

from flarelab.muxers.events import InboundStreamOpened
from flarelab.muxers.mplex import MplexConfig
from flarelab.muxers.state import HalfState, StreamRecord
from flarelab.muxers.yamux import YamuxConfig

SIDES = ("client", "server")

op = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(SIDES)),
    st.tuples(st.just("send"), st.sampled_from(SIDES), st.integers(0, 9), st.integers(0, 150_000)),
    st.tuples(st.just("read"), st.sampled_from(SIDES), st.integers(0, 9), st.integers(1, 100_000)),
    st.tuples(st.just("eof"), st.sampled_from(SIDES), st.integers(0, 9)),
    st.tuples(st.just("close"), st.sampled_from(SIDES), st.integers(0, 9)),
    st.tuples(st.just("reset"), st.sampled_from(SIDES), st.integers(0, 9)),
    st.tuples(st.just("flush"), st.integers(1, 4000)),
)


def run_model(pair: CorePair, ops: list[tuple], window_bound: bool) -> None:
    cores = {"client": pair.client, "server": pair.server}
    streams: dict[str, list[StreamRecord]] = {"client": [], "server": []}
    sent: dict[tuple[str, int, str], bytearray] = {}
    got: dict[tuple[str, int, str], bytearray] = {}
    counter = 0

    def other(side: str) -> str:
        return "server" if side == "client" else "client"

    def key(side: str, rec: StreamRecord, sender: str) -> tuple[str, int, str]:
        """Name one direction of a stream: (who opened it, its id, who sends)."""
        return (side if rec.local else other(side), rec.stream_id, sender)

    def collect() -> None:
        for side in SIDES:
            for event in pair.take(side):
                if isinstance(event, InboundStreamOpened):
                    cores[side].accept_stream(event.stream)
                    streams[side].append(event.stream)

    def move(limit: int | None) -> None:
        for src, dst in (("client", "server"), ("server", "client")):
            data = bytes(cores[src].data_to_send())
            for start in range(0, len(data), limit or max(1, len(data))):
                cores[dst].receive_data(data[start : start + (limit or len(data))], 0.0)
        pair.client_events.extend(pair.client.take_events())
        pair.server_events.extend(pair.server.take_events())
        collect()

    def read(side: str, rec: StreamRecord, size: int) -> None:
        data = cores[side].read(rec, size, 0.0)
        got.setdefault(key(side, rec, other(side)), bytearray()).extend(data)

    for action in ops:
        kind = action[0]
        if kind == "flush":
            move(action[1])
            continue
        side = action[1]
        core = cores[side]
        if kind == "open":
            if core.can_open_stream and len(streams[side]) < 10:
                streams[side].append(core.open_stream(0.0))
            continue
        mine = streams[side]
        if not mine:
            continue
        rec = mine[action[2] % len(mine)]
        if kind == "send" and rec.send_state is HalfState.OPEN and not rec.removed:
            counter += 1
            payload = bytes([counter % 251]) * action[3]
            taken, _ = core.send_data(rec, memoryview(payload), 1 << 30)
            sent.setdefault(key(side, rec, side), bytearray()).extend(payload[:taken])
        elif kind == "read" and rec.buffered:
            read(side, rec, action[3])
        elif kind == "eof":
            core.send_eof(rec)
        elif kind == "close":
            core.close_stream(rec)
        elif kind == "reset":
            core.reset_stream(rec)
        for s in SIDES:
            for r in streams[s]:
                if window_bound:
                    assert r.buffered <= r.window_max  # type: ignore[attr-defined]
    for _ in range(200):  # drain: flush and read until nothing moves
        move(None)
        moved = False
        for side in SIDES:
            for rec in streams[side]:
                while rec.buffered:
                    read(side, rec, 1 << 20)
                    moved = True
        if not moved and not pair.client.pending_output and not pair.server.pending_output:
            break
    records = {
        (side if r.local else other(side), r.stream_id, side): r
        for side in SIDES
        for r in streams[side]
    }
    for (opener, stream_id, sender), out in sent.items():
        receiver = other(sender)
        into = bytes(got.get((opener, stream_id, sender), b""))
        sender_rec = records[(opener, stream_id, sender)]
        receiver_rec = records.get((opener, stream_id, receiver))
        reset = sender_rec.reset_cause is not None or (
            receiver_rec is not None and receiver_rec.reset_cause is not None
        )
        abandoned = receiver_rec is not None and receiver_rec.recv_state is HalfState.ABANDONED
        if reset or abandoned:
            assert bytes(out).startswith(into)
        else:
            assert into == bytes(out)


@settings(max_examples=150)
@given(st.lists(op, max_size=40))
def test_yamux_pair_model(ops: list[tuple]) -> None:
    run_model(CorePair.yamux(YamuxConfig(keepalive_interval=None, rtt_interval=None)), ops, True)


@settings(max_examples=150)
@given(st.lists(op, max_size=40))
def test_mplex_pair_model(ops: list[tuple]) -> None:
    run_model(CorePair.mplex(MplexConfig(max_stream_buffer=400_000)), ops, False)
