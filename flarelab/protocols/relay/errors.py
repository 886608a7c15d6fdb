"""Errors of circuit relay v2: a peer that broke the protocol, and a request refused.

* :class:`RelayProtocolError` -- the peer sent a malformed, oversized or unexpected hop or
  stop message (its fault). It carries the status code the protocol answers it with
  (``MALFORMED_MESSAGE`` or ``UNEXPECTED_MESSAGE``).
* :class:`RelayRefusedError` -- the relay (or the target, through the relay) answered a
  RESERVE or CONNECT with a status other than OK. Not a protocol violation: relays refuse
  when they are full, when the target holds no reservation, and so on. ``status`` says
  which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import FlarelabError, RemoteProtocolError

if TYPE_CHECKING:
    from .messages import Status

__all__ = ["RelayProtocolError", "RelayRefusedError"]


class RelayProtocolError(RemoteProtocolError):
    """The peer sent a malformed or unexpected relay message."""

    def __init__(self, message: str, *, status: Status | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        from .messages import Status

        #: the status a relay or a stop handler answers this with
        self.status: Status = status if status is not None else Status.MALFORMED_MESSAGE


class RelayRefusedError(FlarelabError):
    """A RESERVE or CONNECT was answered with a status other than OK."""

    def __init__(self, message: str, *, status: Status, **kw: Any) -> None:
        super().__init__(f"{message}: {status.name} ({int(status)})", **kw)
        self.status = status
