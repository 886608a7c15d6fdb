"""The error tree: every error says whose fault it is.

Two levels, as in h11 and httpcore:

* :class:`LocalProtocolError` -- *you* misused the API (wrong state, bad argument).
* :class:`RemoteProtocolError` -- the *peer* violated a protocol. It names the peer and
  the protocol, so a log line or a span says who sent what.

Everything else is an outcome of talking to the network (a dial that failed, a protocol the
peer does not speak, a stream the peer reset) and has its own class below.

Protocol cores raise these errors without knowing the peer; drivers fill in the peer (and
the protocol, if the core did not) at the boundary with :func:`attach_context`.
"""

from __future__ import annotations

from typing import Any

import trio

__all__ = [
    "ConnectionClosedError",
    "DialError",
    "FlarelabError",
    "HandshakeError",
    "LimitExceededError",
    "LocalProtocolError",
    "PeerIdMismatchError",
    "ProtocolNotSupportedError",
    "RemoteProtocolError",
    "StreamResetError",
    "attach_context",
]


class FlarelabError(Exception):
    """Base class of every error flarelab raises on purpose.

    ``peer`` (a PeerId or its string) and ``protocol`` (a protocol id such as
    ``/yamux/1.0.0``) are optional context; ``str(err)`` shows them.
    """

    def __init__(self, message: str, *, peer: Any = None, protocol: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.peer = peer
        self.protocol = protocol

    def __str__(self) -> str:
        where = []
        if self.protocol:
            where.append(self.protocol)
        if self.peer is not None:
            where.append(f"peer {self.peer}")
        if where:
            return f"{self.message} ({', '.join(where)})"
        return self.message


class LocalProtocolError(FlarelabError):
    """The caller misused the API: the fault is local, not the peer's."""


class RemoteProtocolError(FlarelabError):
    """The remote peer violated a protocol (malformed, oversized or unexpected input)."""


class HandshakeError(RemoteProtocolError):
    """A security handshake failed because of what the peer sent."""


class PeerIdMismatchError(HandshakeError):
    """The peer authenticated as a different peer id than the one we dialled."""

    def __init__(self, message: str, *, expected: Any, actual: Any, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.expected = expected
        self.actual = actual


class LimitExceededError(RemoteProtocolError):
    """The peer exceeded a limit we enforce (size, count or rate)."""


class ProtocolNotSupportedError(FlarelabError):
    """multistream-select found no protocol both sides speak."""

    def __init__(self, message: str, *, offered: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.offered = offered


class DialError(FlarelabError):
    """A dial failed; ``attempts`` lists (address, error) for every address tried."""

    def __init__(
        self, message: str, *, attempts: list[tuple[Any, BaseException]] | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.attempts = attempts or []

    def __str__(self) -> str:
        base = super().__str__()
        if not self.attempts:
            return base
        tried = "; ".join(f"{addr}: {err}" for addr, err in self.attempts)
        return f"{base} [{tried}]"


class StreamResetError(FlarelabError, trio.BrokenResourceError):
    """The stream was reset (by the peer, or locally) and can carry no more data."""


class ConnectionClosedError(FlarelabError, trio.BrokenResourceError):
    """The connection under a stream went away."""


def attach_context(err: BaseException, *, peer: Any = None, protocol: str | None = None) -> None:
    """Fill in ``peer``/``protocol`` on a flarelab error that does not name them yet."""
    if isinstance(err, FlarelabError):
        if err.peer is None and peer is not None:
            err.peer = peer
        if err.protocol is None and protocol is not None:
            err.protocol = protocol
