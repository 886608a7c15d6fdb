"""One TCP connection as a pure state machine (RFC 9293): segments in, segments out.

No I/O, no trio: the owner passes the time into every call, sends what
:meth:`TcpConnection.segments_to_send` returns, and calls :meth:`handle_timer` at
:meth:`timer`. What it does:

* the three-way handshake, simultaneous open (SYN crossing SYN), RST handling
  (a refused connect, a reset connection), FIN and half-close, TIME_WAIT;
* in-order, reliable delivery: out-of-order segments are kept, losses are repaired by
  retransmission (RFC 6298 timer and back-off, with RTT samples from RFC 7323 timestamps
  on every ACK; fast retransmit after three duplicate ACKs and NewReno's
  one-segment-per-partial-ACK recovery, RFC 6582),
  delayed ACKs (every second segment or after ``delayed_ack``);
* flow control with the receive window (bounded buffers on both sides), zero-window
  probing;
* Linux's close semantics: closing with unread data, or receiving data after a full
  close, resets the connection.

Not simulated: congestion control (the simulated links have no bandwidth limit), Nagle,
options other than the MSS from the config, urgent data, sequence-number wrap.
"""

from __future__ import annotations

from ..errors import LocalProtocolError
from .packet import ACK, FIN, RST, SYN, Segment
from .tcp_state import (
    CAN_SEND,
    MAX_OUT_OF_ORDER,
    ON_FIN,
    ON_FIN_ACKED,
    ON_SHUTDOWN,
    SYNCHRONISED,
    TcpConfig,
    TcpState,
)

__all__ = ["TcpConfig", "TcpConnection", "TcpState"]  # (config and states: tcp_state)


class TcpConnection:
    """The state of one TCP connection; see the module docstring.

    ``error`` is None, or why the connection died: ``"refused"`` (RST to our SYN),
    ``"reset"`` (RST later), ``"timeout"`` (retransmissions gave up).
    """

    def __init__(self, config: TcpConfig, iss: int) -> None:
        self.config = config
        self.state = TcpState.CLOSED
        self.error: str | None = None
        self.passive = False
        # send side: sequence space [iss] SYN, [iss+1, fin_seq) data, [fin_seq] FIN
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self._wl1 = 0
        self._wl2 = 0
        self._sndbuf = bytearray()
        self._buf_seq = iss + 1  # sequence number of _sndbuf[0]
        self.fin_seq: int | None = None
        # receive side
        self.irs: int | None = None
        self.rcv_nxt = 0
        self._rcvbuf = bytearray()
        self._ooo: dict[int, bytes] = {}
        self._ooo_fin: int | None = None
        self.fin_received = False
        self._last_window = 0
        # acknowledgements
        self._ack_now = False
        self._ack_at: float | None = None
        self._unacked_segments = 0
        self._pending_rst: Segment | None = None
        # timers
        self.rto = config.initial_rto
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._ts_recent: float | None = None  # the peer's TSval to echo (RFC 7323)
        self._last_ack_sent = 0
        self._rtx_at: float | None = None
        self._retries = 0
        self._dupacks = 0
        self._fast_retransmit = False
        self._recover: int | None = None  # snd_max when loss recovery began
        self._probe = False
        self._time_wait_at: float | None = None
        self._fin_wait2_at: float | None = None
        self.orphaned = False
        #: True once the handshake completed (stays True while and after closing)
        self.was_established = False
        #: counters for traces and tests
        self.retransmissions = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    # ================================================================== opening
    def connect(self, now: float) -> None:
        """Active open: send a SYN."""
        if self.state is not TcpState.CLOSED or self.irs is not None:
            raise LocalProtocolError(f"connect in state {self.state.value}")
        self.state = TcpState.SYN_SENT
        self._arm(now)

    @classmethod
    def from_syn(cls, config: TcpConfig, iss: int, syn: Segment, now: float) -> TcpConnection:
        """Passive open: a listener received ``syn``; answer with a SYN-ACK."""
        conn = cls(config, iss)
        conn.passive = True
        conn.state = TcpState.SYN_RECEIVED
        conn._take_syn(syn)
        conn._arm(now)
        return conn

    def _take_syn(self, syn: Segment) -> None:
        self.irs = syn.seq
        self.rcv_nxt = syn.seq + 1
        self._ts_recent = syn.ts_val
        self.snd_wnd = syn.window
        self._wl1, self._wl2 = syn.seq, syn.ack

    # ================================================================== application side
    @property
    def send_space(self) -> int:
        """Bytes :meth:`send` accepts now."""
        return max(0, self.config.send_buffer - len(self._sndbuf))

    @property
    def readable(self) -> int:
        """Bytes waiting to be read."""
        return len(self._rcvbuf)

    @property
    def at_eof(self) -> bool:
        """True when everything was read and the peer sent FIN."""
        return self.fin_received and not self._rcvbuf

    @property
    def unacknowledged(self) -> int:
        """Bytes queued or in flight that the peer has not acknowledged."""
        return len(self._sndbuf)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as fits; return how many bytes were taken."""
        if self.state not in CAN_SEND or self.fin_seq is not None:
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        n = min(len(data), self.send_space)
        if n:
            self._sndbuf += data[:n]
        return n

    def read(self, max_bytes: int) -> bytes:
        """Take up to ``max_bytes`` received bytes (b"" if none); may open the window."""
        n = min(max_bytes, len(self._rcvbuf))
        if not n:
            return b""
        data = bytes(self._rcvbuf[:n])
        del self._rcvbuf[:n]
        if self.state in SYNCHRONISED and not self.fin_received:
            opened = self._window() - self._last_window
            if opened >= min(self.config.receive_buffer // 2, self.config.mss):
                self._ack_now = True  # a window update
        return data

    def shutdown(self, now: float) -> None:
        """Send FIN once the queued data is out (half-close); repeated calls are no-ops."""
        if self.fin_seq is not None or self.state not in ON_SHUTDOWN:
            return
        self.fin_seq = self._buf_seq + len(self._sndbuf)
        self.state = ON_SHUTDOWN[self.state]
        self._arm(now)

    def close(self, now: float) -> None:
        """Full close by the application: FIN, or RST if received data was never read."""
        self.orphaned = True
        if self._rcvbuf or (self.state in SYNCHRONISED and self._ooo):
            self.abort()
            return
        if self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            self.abort()
            return
        self.shutdown(now)
        if self.state is TcpState.FIN_WAIT_2:
            self._fin_wait2_at = now + self.config.fin_timeout

    def abort(self) -> None:
        """Drop the connection at once, telling the peer with a RST when it knows us."""
        if self.state in SYNCHRONISED - {TcpState.TIME_WAIT} or (
            self.state is TcpState.SYN_RECEIVED
        ):
            self._pending_rst = Segment(self.snd_nxt, self.rcv_nxt, RST | ACK)
        self._enter_closed()

    def lose(self, error: str = "reset") -> None:
        """End the connection at once without a word to the peer (its network is gone)."""
        if self.state is not TcpState.CLOSED:
            self._pending_rst = None
            self._fail(error)

    # ================================================================== network side
    def receive(self, seg: Segment, now: float) -> None:
        """Process one segment addressed to this connection."""
        state = self.state
        if state is TcpState.CLOSED:
            return
        if state is TcpState.SYN_SENT:
            self._receive_in_syn_sent(seg, now)
            return
        if seg.rst:
            self._receive_rst(seg)
            return
        if seg.syn:
            if seg.seq != self.irs:  # a new SYN on a live connection: answer with an ACK
                self._ack_now = True
                return
            if not seg.has_ack:  # their SYN again: our SYN-ACK (or ACK) was lost
                self._ack_now = True
                if state is TcpState.SYN_RECEIVED:
                    self.snd_nxt = self.iss  # resend the SYN-ACK now
                return
        if not seg.has_ack:
            return
        if state is TcpState.SYN_RECEIVED:
            if not self.snd_una < seg.ack <= self.snd_max:
                self._pending_rst = Segment(seg.ack, 0, RST)
                return
            self._establish()
        self._receive_ack(seg, now)
        if self.state is TcpState.CLOSED:
            return
        self._receive_payload(seg, now)
        self._arm(now)

    def _receive_in_syn_sent(self, seg: Segment, now: float) -> None:
        acceptable = seg.has_ack and self.iss < seg.ack <= self.snd_max
        if seg.has_ack and not acceptable:
            if not seg.rst:
                self._pending_rst = Segment(seg.ack, 0, RST)
            return
        if seg.rst:
            if acceptable:
                self._fail("refused")
            return
        if not seg.syn:
            return
        self._take_syn(seg)
        self._ack_now = True
        if acceptable:  # SYN-ACK: the ordinary handshake
            self.snd_una = seg.ack
            self._wl1, self._wl2 = seg.seq, seg.ack
            self._rtt_sample(seg, now)
            self._establish()
        else:  # a bare SYN crossed ours: simultaneous open, answer with SYN-ACK
            self.state = TcpState.SYN_RECEIVED
            self.snd_nxt = self.iss
        self._arm(now, restart=True)

    def _establish(self) -> None:
        self.state = TcpState.ESTABLISHED
        self.was_established = True

    def _receive_rst(self, seg: Segment) -> None:
        window = max(self._window(), 1)
        if not self.rcv_nxt <= seg.seq < self.rcv_nxt + window:
            return  # not in the window: ignore it (RFC 5961 would send a challenge ACK)
        if self.state is TcpState.TIME_WAIT:
            self._enter_closed()
        elif self.state is TcpState.SYN_RECEIVED and self.passive:
            self._enter_closed()  # back to LISTEN, which is the listener's business
        else:
            self._fail("refused" if self.state is TcpState.SYN_RECEIVED else "reset")

    def _receive_ack(self, seg: Segment, now: float) -> None:
        ack = seg.ack
        if ack > self.snd_max:
            self._ack_now = True  # acknowledges what we never sent
            return
        if self.snd_wnd == 0 and seg.window == 0:
            self._retries = 0  # a probe was answered: the peer is alive
        if ack > self.snd_una:
            self._dupacks = 0
            if self._recover is not None:
                if ack < self._recover:
                    self._fast_retransmit = True  # a partial ACK: the next hole (RFC 6582)
                else:
                    self._recover = None
            self._rtt_sample(seg, now)
            data_acked = min(ack, self._buf_seq + len(self._sndbuf)) - self._buf_seq
            if data_acked > 0:
                del self._sndbuf[:data_acked]
                self._buf_seq += data_acked
            self.snd_una = ack
            if self.snd_nxt < ack:
                self.snd_nxt = ack
            self._retries = 0
            if self._srtt is not None:  # progress ends the back-off (as Linux does)
                self._set_rto()
            self._arm(now, restart=True)
            if self.fin_seq is not None and ack > self.fin_seq and self.state in ON_FIN_ACKED:
                self._fin_acked(now)
        elif (ack == self.snd_una and not seg.data and not seg.fin and not seg.syn
              and self.snd_max > self.snd_una and seg.window and self.snd_wnd):
            # a duplicate ACK (RFC 5681), but window changes do not disqualify it: our
            # receiver's window moves whenever its application reads
            self._dupacks += 1
            if self._dupacks == 3 and self._recover is None:
                self._fast_retransmit = True
                self._recover = self.snd_max
        if self._wl1 < seg.seq or (self._wl1 == seg.seq and self._wl2 <= ack):
            self.snd_wnd = seg.window
            self._wl1, self._wl2 = seg.seq, ack

    def _fin_acked(self, now: float) -> None:
        self.state = ON_FIN_ACKED[self.state]
        if self.state is TcpState.TIME_WAIT:
            self._enter_time_wait(now)
        elif self.state is TcpState.CLOSED:
            self._enter_closed()
        elif self.state is TcpState.FIN_WAIT_2 and self.orphaned:
            self._fin_wait2_at = now + self.config.fin_timeout

    def _receive_payload(self, seg: Segment, now: float) -> None:
        if (seg.ts_val is not None and seg.seq <= self._last_ack_sent
                and (self._ts_recent is None or seg.ts_val >= self._ts_recent)):
            self._ts_recent = seg.ts_val  # RFC 7323 4.3: echo the oldest unacknowledged
        seq = seg.seq + (1 if seg.syn else 0)
        data = seg.data
        fin = seg.fin
        end = seq + len(data)  # where the FIN sits, if any
        if end < self.rcv_nxt or (end == self.rcv_nxt and not fin):
            if data or fin or seg.syn:
                self._ack_now = True  # an old duplicate: tell them where we are
                if fin and self.state is TcpState.TIME_WAIT:
                    self._enter_time_wait(now)  # their FIN again: our last ACK was lost
            return
        if data and self.orphaned:
            self.abort()  # new data after a full close: Linux answers with RST
            return
        if seq < self.rcv_nxt:
            data = data[self.rcv_nxt - seq:]
            seq = self.rcv_nxt
        limit = self.rcv_nxt + self._window()
        if seq + len(data) > limit:
            if data or fin:  # never answer a bare ACK: two closed windows would ping-pong
                self._ack_now = True
            data = data[: max(0, limit - seq)]
            fin = False
        if data:
            if seq == self.rcv_nxt:
                self._take_in_order(data)
                self._unacked_segments += 1
                if self._unacked_segments >= 2 or self._ooo:
                    self._ack_now = True
                elif self._ack_at is None:
                    self._ack_at = now + self.config.delayed_ack
            else:
                if len(self._ooo) < MAX_OUT_OF_ORDER and len(self._ooo.get(seq, b"")) < len(data):
                    self._ooo[seq] = data
                self._ack_now = True  # a duplicate ACK tells the sender about the gap
        if fin:
            self._ooo_fin = end
        if self._ooo_fin is not None and self._ooo_fin == self.rcv_nxt:
            self._ooo_fin = None
            self.rcv_nxt += 1
            self.fin_received = True
            self._ack_now = True
            if self.state in ON_FIN:
                self.state = ON_FIN[self.state]
                if self.state is TcpState.TIME_WAIT:
                    self._enter_time_wait(now)

    def _take_in_order(self, data: bytes) -> None:
        self._rcvbuf += data
        self.rcv_nxt += len(data)
        self.bytes_received += len(data)
        ooo = self._ooo
        while ooo:
            ready = [s for s in ooo if s <= self.rcv_nxt]
            if not ready:
                break
            for s in sorted(ready):
                chunk = ooo.pop(s)
                tail = chunk[self.rcv_nxt - s:] if s + len(chunk) > self.rcv_nxt else b""
                if tail:
                    self._rcvbuf += tail
                    self.rcv_nxt += len(tail)
                    self.bytes_received += len(tail)

    # ================================================================== output
    def segments_to_send(self, now: float) -> list[Segment]:
        """Return the segments to transmit now (in order)."""
        out: list[Segment] = []
        if self._pending_rst is not None:
            out.append(self._pending_rst)
            self._pending_rst = None
        state = self.state
        if state is TcpState.CLOSED:
            return out
        if state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            if self.snd_nxt == self.iss:
                if state is TcpState.SYN_SENT:
                    out.append(Segment(self.iss, 0, SYN, self._window(), ts_val=now))
                else:
                    out.append(self._stamp(self.iss, SYN | ACK, now))
                self._sent_seq(self.iss, 1, now)
            elif self._ack_now and state is TcpState.SYN_RECEIVED:
                out.append(self._stamp(self.snd_nxt, ACK, now))
            self._ack_now = False
            return out
        sent_any = False
        if self._fast_retransmit:
            self._fast_retransmit = False
            seg = (self._data_segment(self.snd_una, now, retransmit=True)
                   if self.snd_max > self.snd_una else None)
            if seg is not None:
                out.append(seg)
                sent_any = True
        window = self.snd_wnd
        if self._probe:
            self._probe = False
            window = max(window, self.snd_nxt - self.snd_una + 1)
        while True:
            if self.snd_una + window <= self.snd_nxt and not self._fin_next():
                break
            seg = self._data_segment(self.snd_nxt, now, window=window)
            if seg is None:
                break
            out.append(seg)
            sent_any = True
        if not sent_any and (self._ack_now or (self._ack_at is not None and now >= self._ack_at)):
            out.append(self._stamp(self.snd_nxt, ACK, now))
            sent_any = True
        if sent_any:
            self._acked_everything()
        self._arm(now)
        return out

    def _fin_next(self) -> bool:
        return self.fin_seq is not None and self.snd_nxt == self.fin_seq

    def _data_segment(self, seq: int, now: float, *, window: int | None = None,
                      retransmit: bool = False) -> Segment | None:
        """Build the segment starting at ``seq`` (data, FIN or both) and account for it."""
        data_end = self._buf_seq + len(self._sndbuf)
        if retransmit:  # only what was sent before
            data_end = min(data_end, self.snd_max)
        n = min(self.config.mss, data_end - seq) if seq < data_end else 0
        if window is not None and n:
            n = min(n, self.snd_una + window - seq)
        if n <= 0:
            n = 0
            if not (self.fin_seq is not None and seq == self.fin_seq
                    and (not retransmit or self.fin_seq < self.snd_max)):
                return None
        flags = ACK
        if self.fin_seq is not None and seq + n == self.fin_seq and (
                not retransmit or self.fin_seq < self.snd_max):
            flags |= FIN
        offset = seq - self._buf_seq
        data = bytes(self._sndbuf[offset:offset + n])
        seg = self._stamp(seq, flags, now, data)
        length = n + (1 if flags & FIN else 0)
        if retransmit:
            self.retransmissions += 1
            if seq + length > self.snd_max:
                self.snd_max = seq + length
        else:
            self._sent_seq(seq, length, now)
        return seg

    def _sent_seq(self, seq: int, length: int, now: float) -> None:
        end = seq + length
        if end <= self.snd_max:
            self.retransmissions += 1
        else:
            self.bytes_sent += max(0, min(end, self._buf_seq + len(self._sndbuf))
                                   - max(seq, self.snd_max, self.iss + 1))
            self.snd_max = end
        self.snd_nxt = end

    def _stamp(self, seq: int, flags: int, now: float, data: bytes = b"") -> Segment:
        window = self._window()
        self._last_window = window
        self._last_ack_sent = self.rcv_nxt
        return Segment(seq, self.rcv_nxt, flags, window, data, now, self._ts_recent)

    def _acked_everything(self) -> None:
        self._ack_now = False
        self._ack_at = None
        self._unacked_segments = 0

    def _window(self) -> int:
        return max(0, self.config.receive_buffer - len(self._rcvbuf))

    # ================================================================== timers
    def timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (None: no timer)."""
        times = [t for t in (self._rtx_at, self._ack_at, self._time_wait_at,
                             self._fin_wait2_at) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Run whatever timers are due at ``now``."""
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_at = None
            self._ack_now = True
        if self._time_wait_at is not None and now >= self._time_wait_at:
            self._enter_closed()
            return
        if self._fin_wait2_at is not None and now >= self._fin_wait2_at:
            self._enter_closed()
            return
        if self._rtx_at is not None and now >= self._rtx_at:
            self._on_retransmission_timeout(now)

    def _on_retransmission_timeout(self, now: float) -> None:
        self._rtx_at = None
        self.rto = min(self.rto * 2, self.config.max_rto)
        self._dupacks = 0
        in_handshake = self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED)
        zero_window = (self.snd_wnd == 0 and not in_handshake
                       and self.snd_max - self.snd_una <= 1)
        if zero_window:
            self._probe = True  # persist: probe the closed window (not counted as a retry)
            self.snd_nxt = self.snd_una
        else:
            self._retries += 1
            limit = (self.config.syn_retries if self.state is TcpState.SYN_SENT
                     else self.config.synack_retries if in_handshake else self.config.retries)
            if self._retries > limit:
                self._fail("timeout")
                return
            if in_handshake:
                self.snd_nxt = self.iss  # the SYN (or SYN-ACK) again
            else:
                # resend the oldest segment; partial ACKs then repair the other holes
                self._fast_retransmit = True
                self._recover = self.snd_max
        self._arm(now)

    def _arm(self, now: float, *, restart: bool = False) -> None:
        outstanding = (self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED)
                       or self.snd_max > self.snd_una
                       or self._buf_seq + len(self._sndbuf) > self.snd_nxt
                       or (self.fin_seq is not None and self.snd_una <= self.fin_seq))
        if self.state in (TcpState.CLOSED, TcpState.TIME_WAIT) or not outstanding:
            self._rtx_at = None
        elif restart or self._rtx_at is None:
            self._rtx_at = now + self.rto

    def _rtt_sample(self, seg: Segment, now: float) -> None:
        """Take an RTT sample from the timestamp the ACK echoes (RFC 7323 section 4)."""
        if seg.ts_ecr is None:
            return
        sample = max(0.0, now - seg.ts_ecr)
        if self._srtt is None:
            self._srtt, self._rttvar = sample, sample / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
            self._srtt = 0.875 * self._srtt + 0.125 * sample
        self._set_rto()

    def _set_rto(self) -> None:
        assert self._srtt is not None
        rto = self._srtt + max(0.001, 4 * self._rttvar)
        self.rto = min(max(rto, self.config.min_rto), self.config.max_rto)

    @property
    def srtt(self) -> float | None:
        """The smoothed round-trip time (None before the first sample)."""
        return self._srtt

    # ================================================================== endings
    def _enter_time_wait(self, now: float) -> None:
        self.state = TcpState.TIME_WAIT
        self._rtx_at = None
        self._fin_wait2_at = None
        if self.config.time_wait <= 0:
            self._enter_closed()
        else:
            self._time_wait_at = now + self.config.time_wait

    def _fail(self, error: str) -> None:
        self.error = error
        self._enter_closed()

    def _enter_closed(self) -> None:
        self.state = TcpState.CLOSED
        self._rtx_at = self._ack_at = self._time_wait_at = self._fin_wait2_at = None
        self._ack_now = False

    def __repr__(self) -> str:
        return (f"<TcpConnection {self.state.value} una={self.snd_una - self.iss} "
                f"nxt={self.snd_nxt - self.iss} wnd={self.snd_wnd} "
                f"queued={len(self._sndbuf)} readable={len(self._rcvbuf)}>")
