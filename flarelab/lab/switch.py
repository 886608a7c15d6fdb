"""The lab's internet with latency: a learning Ethernet switch in user space, over TAP devices.

``tc netem`` is not built into every kernel (this lab's is one), so when a topology asks for
latency the internet namespace holds TAP devices instead of a bridge, and this process
moves frames between them, each after the latency of the port it came in on plus that of
the port it goes out of (simnet's model: each crossing of a link adds its latency).

:class:`LatencySwitch` is the pure core (frames and time in, frames out: MAC learning,
flooding, a bounded queue ordered by delivery time); :func:`serve` drives it from the TAP
file descriptors with ``epoll``. Run ``python -m flarelab.lab.switch SPEC`` inside the
internet namespace: SPEC is JSON ``{"ports": [{"index": 0, "tap": "tap0", "latency":
0.01}, ...]}``; it creates the TAP devices, prints ``ready`` and switches until its stdin
closes (the lab then moves the TAPs into the hosts' namespaces). TAP devices vanish with
the process, so nothing outlives it.

Every frame crosses Python here (two system calls and a heap operation): fine for hole
punching and protocol traces, not a throughput benchmark -- use ``latency=0`` (the kernel
bridge) for those. Delays are accurate to about a millisecond (``epoll`` timeouts).
"""

from __future__ import annotations

import heapq
import json
import os
import select
import sys
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["LatencySwitch", "SwitchStats", "open_tap", "serve"]

#: a frame shorter than its Ethernet header is dropped
ETHERNET_HEADER: Final = 14
MAX_FRAME: Final = 65536
#: frames read from one TAP per wake-up, so one busy port cannot starve the others
READ_BATCH: Final = 64


@dataclass(slots=True)
class SwitchStats:
    """What the switch did: frames in, out, flooded, and dropped (and why)."""

    received: int = 0
    delivered: int = 0
    flooded: int = 0
    dropped_short: int = 0
    dropped_full: int = 0
    dropped_unknown_port: int = 0


class LatencySwitch:
    """A learning switch whose ports delay frames (pure: time passed in, no I/O).

    ``latencies`` maps each port to its one-way latency (seconds). A frame received on
    port *i* for port *j* is due ``latencies[i] + latencies[j]`` later. The queue holds at
    most ``max_queued_bytes`` (a full queue drops new frames, as a router's does) and the
    MAC table at most ``max_macs`` entries (the oldest is forgotten first).
    """

    def __init__(self, latencies: dict[int, float], *, max_queued_bytes: int = 32 << 20,
                 max_macs: int = 4096) -> None:
        if any(latency < 0 for latency in latencies.values()):
            raise ValueError("latencies must not be negative")
        self.latencies = dict(latencies)
        self.max_queued_bytes = max_queued_bytes
        self.max_macs = max_macs
        self.stats = SwitchStats()
        self._macs: dict[bytes, int] = {}
        self._queue: list[tuple[float, int, int, bytes]] = []
        self._queued_bytes = 0
        self._seq = 0

    def receive(self, port: int, frame: bytes, now: float) -> None:
        """Take a frame that arrived on ``port`` at ``now``."""
        self.stats.received += 1
        if port not in self.latencies:
            self.stats.dropped_unknown_port += 1
            return
        if len(frame) < ETHERNET_HEADER:
            self.stats.dropped_short += 1
            return
        destination, source = frame[0:6], frame[6:12]
        if not source[0] & 1:  # learn unicast sources only
            self._macs.pop(source, None)
            self._macs[source] = port
            if len(self._macs) > self.max_macs:
                del self._macs[next(iter(self._macs))]
        out = self._macs.get(destination) if not destination[0] & 1 else None
        if out is not None:
            targets = [out] if out != port else []
        else:
            self.stats.flooded += 1
            targets = [p for p in self.latencies if p != port]
        latency_in = self.latencies[port]
        for target in targets:
            if self._queued_bytes + len(frame) > self.max_queued_bytes:
                self.stats.dropped_full += 1
                continue
            self._seq += 1
            heapq.heappush(self._queue,
                           (now + latency_in + self.latencies[target], self._seq, target, frame))
            self._queued_bytes += len(frame)

    def next_due(self) -> float | None:
        """When the next frame is due (None: nothing queued)."""
        return self._queue[0][0] if self._queue else None

    def take_due(self, now: float) -> list[tuple[int, bytes]]:
        """Return the frames due by ``now`` as (port, frame), in delivery order."""
        out = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, _, port, frame = heapq.heappop(queue)
            self._queued_bytes -= len(frame)
            out.append((port, frame))
        self.stats.delivered += len(out)
        return out

    @property
    def queued(self) -> int:
        """Frames waiting for their time."""
        return len(self._queue)


# ---------------------------------------------------------------------- the TAP driver
_TUNSETIFF: Final = 0x400454CA
_IFF_TAP: Final = 0x0002
_IFF_NO_PI: Final = 0x1000


def open_tap(name: str) -> int:
    """Create the TAP device ``name`` in this namespace; return its non-blocking fd."""
    import fcntl
    import struct

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def serve(switch: LatencySwitch, taps: dict[int, int], stop_fd: int) -> None:
    """Switch frames between the TAP fds until ``stop_fd`` reaches end of file."""
    poller = select.epoll()
    port_of = {fd: port for port, fd in taps.items()}
    for fd in taps.values():
        poller.register(fd, select.EPOLLIN)
    poller.register(stop_fd, select.EPOLLIN | select.EPOLLHUP)
    try:
        while True:
            due = switch.next_due()
            timeout = -1.0 if due is None else max(0.0, due - time.monotonic())
            for fd, _ in poller.poll(timeout):
                if fd == stop_fd:
                    if not os.read(stop_fd, 4096):
                        return
                    continue
                port = port_of[fd]
                now = time.monotonic()
                for _ in range(READ_BATCH):
                    try:
                        frame = os.read(fd, MAX_FRAME)
                    except BlockingIOError:
                        break
                    except OSError:  # the TAP went away (its namespace is being deleted)
                        poller.unregister(fd)
                        break
                    switch.receive(port, frame, now)
            for port, frame in switch.take_due(time.monotonic()):
                try:
                    os.write(taps[port], frame)
                except OSError:  # full (the kernel drops too), or the device is gone
                    pass
    finally:
        poller.close()


def main(argv: list[str]) -> int:
    """Create the TAPs of SPEC, print ``ready``, switch until stdin closes."""
    if len(argv) != 1:
        print("usage: python -m flarelab.lab.switch SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(argv[0])
    ports = spec["ports"]
    taps = {int(p["index"]): open_tap(str(p["tap"])) for p in ports}
    switch = LatencySwitch({int(p["index"]): float(p["latency"]) for p in ports})
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        serve(switch, taps, sys.stdin.fileno())
    except KeyboardInterrupt:
        pass
    finally:
        for fd in taps.values():
            os.close(fd)
    stats = switch.stats
    print(f"switch: {stats}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
