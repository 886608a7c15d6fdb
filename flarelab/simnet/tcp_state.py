"""TCP's connection states, the transitions the close handshake takes, and the config.

The transition tables are plain dicts (as h11's ``_state.py`` keeps its own), so the
docs can draw them: :class:`~flarelab.simnet.tcp_connection.TcpConnection` looks them up
instead of spreading the state machine over ``if`` statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ..errors import LocalProtocolError

__all__ = [
    "CAN_SEND",
    "MAX_OUT_OF_ORDER",
    "ON_FIN",
    "ON_FIN_ACKED",
    "ON_SHUTDOWN",
    "SYNCHRONISED",
    "TcpConfig",
    "TcpState",
]


class TcpState(StrEnum):
    """RFC 9293's connection states (LISTEN is the stack's listener, not a connection)."""

    CLOSED = "CLOSED"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


_S = TcpState
#: where our FIN takes us when the application shuts down its sending side
ON_SHUTDOWN: Final = {_S.ESTABLISHED: _S.FIN_WAIT_1, _S.CLOSE_WAIT: _S.LAST_ACK}
#: where the peer's FIN takes us
ON_FIN: Final = {_S.ESTABLISHED: _S.CLOSE_WAIT, _S.FIN_WAIT_1: _S.CLOSING,
                 _S.FIN_WAIT_2: _S.TIME_WAIT}
#: where the ACK of our FIN takes us
ON_FIN_ACKED: Final = {_S.FIN_WAIT_1: _S.FIN_WAIT_2, _S.CLOSING: _S.TIME_WAIT,
                       _S.LAST_ACK: _S.CLOSED}
#: states in which we may still send data
CAN_SEND: Final = frozenset({_S.ESTABLISHED, _S.CLOSE_WAIT})
#: states after the handshake (sequence numbers synchronised)
SYNCHRONISED: Final = frozenset({_S.ESTABLISHED, _S.FIN_WAIT_1, _S.FIN_WAIT_2, _S.CLOSE_WAIT,
                                 _S.CLOSING, _S.LAST_ACK, _S.TIME_WAIT})
MAX_OUT_OF_ORDER: Final = 512  # segments kept ahead of a gap


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Sizes and timers of simulated TCP (seconds, bytes); defaults follow Linux."""

    mss: int = 1460
    send_buffer: int = 256 * 1024
    receive_buffer: int = 256 * 1024
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 120.0
    syn_retries: int = 6  # net.ipv4.tcp_syn_retries
    synack_retries: int = 5  # net.ipv4.tcp_synack_retries
    retries: int = 15  # net.ipv4.tcp_retries2
    delayed_ack: float = 0.04
    time_wait: float = 60.0
    fin_timeout: float = 60.0  # an orphaned FIN-WAIT-2 (net.ipv4.tcp_fin_timeout)

    def __post_init__(self) -> None:
        if self.mss < 1 or self.send_buffer < 1 or self.receive_buffer < self.mss:
            raise LocalProtocolError("TCP buffers must hold at least one segment")
