"""The small shared parts: transition tables, the stream record's buffer, the output queue,
and the set of peer stream ids."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from flarelab.muxers.mplex.session import MplexStreamRecord
from flarelab.muxers.output import OutputQueue
from flarelab.muxers.state import (
    CATCH_UP_ABOVE,
    JOIN_BELOW,
    RECV_ON_APP_CLOSE,
    RECV_TRANSITIONS,
    SEND_TRANSITIONS,
    HalfState,
    LocalInput,
    RemoteInput,
    ResetCause,
    StreamRecord,
)
from flarelab.muxers.yamux.stream_ids import StreamIdSet


def test_the_tables_cover_every_state_and_input() -> None:
    assert set(RECV_TRANSITIONS) == set(itertools.product(HalfState, RemoteInput))
    send_states = {HalfState.OPEN, HalfState.CLOSED, HalfState.RESET}  # never ABANDONED
    assert set(SEND_TRANSITIONS) == set(itertools.product(send_states, LocalInput))
    assert set(RECV_ON_APP_CLOSE) == set(HalfState)


def test_reset_keeps_a_finished_direction() -> None:
    rec = StreamRecord(1, local=True)
    rec.push(b"before fin")
    rec.recv_state = HalfState.CLOSED
    rec.mark_reset(ResetCause.BY_PEER)
    assert rec.recv_state is HalfState.CLOSED
    assert rec.buffered == 10
    assert rec.send_state is HalfState.RESET
    assert rec.finished
    rec2 = StreamRecord(1, local=True)
    rec2.push(b"unread")
    rec2.mark_reset(ResetCause.LOCAL, "why")
    assert rec2.buffered == 0
    assert rec2.close_reason == "why"


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=50), max_size=20),
    views=st.lists(st.booleans(), max_size=20),
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=60),
)
def test_take_returns_the_pushed_bytes_in_order(
    chunks: list[bytes], views: list[bool], sizes: list[int]
) -> None:
    rec = StreamRecord(1, local=False)
    for i, chunk in enumerate(chunks):
        as_view = i < len(views) and views[i]
        rec.push(memoryview(b"pad" + chunk)[3:] if as_view else bytearray(chunk))
    expected = b"".join(chunks)
    got = bytearray()
    for size in itertools.cycle(sizes):
        if not rec.buffered:
            break
        piece = rec.take(size)
        assert 0 < len(piece) <= size
        assert type(piece) in (bytes, bytearray)
        got += piece
    assert bytes(got) == expected
    assert rec.take(10) == b""
    assert rec.bytes_received == len(expected)


def test_a_reader_that_fell_behind_catches_up_in_one_call() -> None:
    """Big chunks go over one by one, unless the reader is far behind: then it gets all
    it asks for, or one chunk per scheduling round could never catch up with a sender
    (Mplex would reset the stream when its buffer overflows)."""
    rec = MplexStreamRecord(1, local=False, name="1")
    chunk = bytes(JOIN_BELOW)
    rec.push(chunk)
    rec.push(chunk)
    assert len(rec.take(1 << 20)) == JOIN_BELOW  # in step: the chunk itself, no copy
    rec.take(1 << 20)
    behind = CATCH_UP_ABOVE // JOIN_BELOW + 4
    for _ in range(behind):
        rec.push(chunk)
    assert len(rec.take(1 << 20)) == behind * JOIN_BELOW
    assert rec.buffered == 0


def test_output_queue_keeps_order_coalesces_control_and_borrows_data() -> None:
    queue = OutputQueue()
    queue.add_control(b"A")
    queue.add_control(b"B")
    payload = bytearray(b"data")
    ticket = queue.add_data([b"H", memoryview(payload)])
    queue.add_control(b"C")
    assert len(queue) == 8
    assert queue.control == 3
    assert not queue.is_taken(ticket)
    assert queue.take(3) == b"ABH"  # at least one part, about max_bytes
    assert not queue.is_taken(ticket)
    queue.own()  # the owner wants its buffer back before the writer got to it
    payload[:] = b"XXXX"
    assert queue.take() == b"dataC"
    assert queue.is_taken(ticket)
    assert not queue


@given(st.lists(st.integers(0, 60), max_size=80), st.integers(1, 5))
def test_stream_id_set_matches_a_plain_set(ids: list[int], max_gaps: int) -> None:
    tracked = StreamIdSet(1, max_gaps=max_gaps)
    seen: set[int] = set()
    for raw in ids:
        stream_id = raw * 2 + 1
        fresh = tracked.add(stream_id)
        if stream_id in seen:
            assert not fresh  # a reuse is always caught
        elif fresh:
            seen.add(stream_id)
        # else: a new id in a forgotten (oldest) gap counts as used: refused, never accepted
        assert tracked.gaps <= max_gaps
    for stream_id in seen:
        assert stream_id in tracked


def test_stream_id_set_remembers_gaps() -> None:
    tracked = StreamIdSet(1)
    assert tracked.add(7)  # 1, 3, 5 skipped
    assert tracked.gaps == 1
    assert 3 not in tracked
    assert 7 in tracked
    assert tracked.add(3)
    assert not tracked.add(3)
    assert not tracked.add(7)
    assert tracked.gaps == 2
    assert tracked.add(1)
    assert tracked.add(5)
    assert tracked.gaps == 0
