"""Span attribute keys only AutoNAT uses (namespaced ``autonat.*``, tracing rule 4).

The spans are ``autonat.probe`` (a client asking a server) and ``autonat.dial_back`` (a
server dialling a client back, and a v2 client receiving the dial-back); both carry the
shared keys ``libp2p.remote_peer_id``, ``libp2p.protocol``, ``libp2p.outcome`` and
``libp2p.reason`` too, and every message as a ``message.sent``/``message.received`` event.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADDRS",
    "CHUNKS",
    "DIALED_ADDR",
    "DIAL_DATA_BYTES",
    "DIAL_STATUS",
    "FRESH_CONNECTION",
    "NONCE_VERIFIED",
    "REACHABILITY",
    "STATUS",
    "VERSION",
]

VERSION: Final = "autonat.version"  # 1 or 2
ADDRS: Final = "autonat.addrs"  # the addresses a request named (or a server will dial)
STATUS: Final = "autonat.status"  # the response status's name: OK, E_DIAL_ERROR, ...
DIAL_STATUS: Final = "autonat.dial_status"  # v2: OK, E_DIAL_ERROR, E_DIAL_BACK_ERROR
DIALED_ADDR: Final = "autonat.dialed_addr"  # the address the server dialled
REACHABILITY: Final = "autonat.reachability"  # what the answer says: public/private/none
DIAL_DATA_BYTES: Final = "autonat.dial_data_bytes"  # v2 amplification-guard data
CHUNKS: Final = "autonat.chunks"  # DialDataResponse messages summed into one event
NONCE_VERIFIED: Final = "autonat.nonce_verified"  # v2: the dial-back carried our nonce
FRESH_CONNECTION: Final = "autonat.fresh_connection"  # the dial-back came on a new connection
