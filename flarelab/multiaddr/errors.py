"""The one error a malformed multiaddr raises."""

from __future__ import annotations

from typing import Any

from ..errors import RemoteProtocolError

__all__ = ["MultiaddrError"]


class MultiaddrError(RemoteProtocolError, ValueError):
    """A multiaddr (text or binary) is malformed, too large, or uses an unknown protocol.

    It is a :class:`ValueError` because addresses come from users and configuration, and a
    :class:`~flarelab.errors.RemoteProtocolError` because they also come from peers (identify,
    DCUtR, relay reservations); a driver names the peer with
    :func:`flarelab.errors.attach_context`. The message says what is wrong and where (the
    component, or the byte offset in a binary address).
    """

    def __init__(self, message: str, *, offset: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        #: byte offset of the fault in a binary multiaddr, when parsing one
        self.offset = offset
