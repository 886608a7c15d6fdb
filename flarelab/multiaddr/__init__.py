"""Multiaddrs (multiformats/multiaddr) and the policy that says which addresses are public.

>>> addr = Multiaddr("/ip4/198.51.100.7/udp/4001/quic-v1")
>>> addr.host_port()
('198.51.100.7', 4001)
>>> DEFAULT_POLICY.is_public(addr)
False
>>> AddressPolicy(treat_as_public=("198.51.100.0/24",)).is_public(addr)
True
"""

from __future__ import annotations

from .codec import MAX_COMPONENTS, MAX_MULTIADDR_BYTES
from .errors import MultiaddrError
from .multiaddr import Component, Multiaddr
from .policy import DEFAULT_POLICY, AddressPolicy, AddressScope

__all__ = [
    "DEFAULT_POLICY",
    "MAX_COMPONENTS",
    "MAX_MULTIADDR_BYTES",
    "AddressPolicy",
    "AddressScope",
    "Component",
    "Multiaddr",
    "MultiaddrError",
]
