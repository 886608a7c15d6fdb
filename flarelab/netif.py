"""Enumerate this host's interface addresses (Linux), to expand wildcard listen addresses.

The standard library has no ``getifaddrs``; on Linux the IPv4 addresses come from the
``SIOCGIFCONF`` ioctl and the IPv6 ones from ``/proc/net/if_inet6``. Elsewhere, or if
anything fails, only the loopback addresses are returned, which is always safe.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct

__all__ = ["interface_addresses"]

_SIOCGIFCONF = 0x8912
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux


def _ipv4_addresses() -> list[ipaddress.IPv4Address]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        buf = array.array("B", b"\0" * (_IFREQ_SIZE * 128))
        addr, _ = buf.buffer_info()
        ifconf = struct.pack("iL", len(buf), addr)
        out = fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, ifconf)
        size, _ = struct.unpack("iL", out)
    finally:
        sock.close()
    raw = buf.tobytes()[:size]
    result = []
    for off in range(0, size, _IFREQ_SIZE):
        result.append(ipaddress.IPv4Address(raw[off + 20 : off + 24]))
    return result


def _ipv6_addresses() -> list[ipaddress.IPv6Address]:
    result = []
    with open("/proc/net/if_inet6") as f:
        for line in f:
            fields = line.split()
            if not fields:
                continue
            addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            if addr.is_link_local:
                continue  # needs a zone to be dialled; never advertised
            result.append(addr)
    return result


def interface_addresses(family: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Return the unicast addresses of this host for ``AF_INET`` or ``AF_INET6``."""
    try:
        if family == socket.AF_INET:
            found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = list(_ipv4_addresses())
        else:
            found = list(_ipv6_addresses())
    except OSError:
        found = []
    if not found:
        found = [ipaddress.ip_address("127.0.0.1" if family == socket.AF_INET else "::1")]
    # loopback first, then the rest in a stable order, no duplicates
    unique = sorted(set(found), key=lambda a: (not a.is_loopback, a.packed))
    return unique
