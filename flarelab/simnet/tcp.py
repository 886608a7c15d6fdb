"""Simulated TCP on a host: listeners, connects, and connections as trio streams.

:class:`SimTcpStream` drives one pure :class:`~flarelab.simnet.tcp_connection.TcpConnection`
and is a ``trio.abc.HalfCloseableStream`` (it passes
``trio.testing.check_half_closeable_stream``), so Noise and Yamux run on it unchanged.
Segments arrive from the network's scheduler; segments that arrive at one instant are
answered with one flush (one ACK). Timers are scheduler entries, not tasks.

Errors are those of ``trio.SocketStream``: a reset or timed-out connection raises
``trio.BrokenResourceError`` (from ``ConnectionResetError`` / ``TimeoutError``), use after
``aclose`` raises ``trio.ClosedResourceError``, a refused connect raises
``ConnectionRefusedError``. Every local port may be shared by a listener and dials
(as with ``SO_REUSEPORT``), but a 4-tuple in use -- including TIME-WAIT -- refuses a
second connect with ``EADDRNOTAVAIL``, as Linux does.
"""

from __future__ import annotations

import errno
import math
import operator
import os
from collections import deque
from typing import TYPE_CHECKING, Final

import trio

from .packet import Endpoint, Packet, Segment, canonical_ip, ip_version
from .tcp_connection import TcpConnection, TcpState

if TYPE_CHECKING:
    from .host import Host
    from .network import TimerHandle

__all__ = ["SimTcpListener", "SimTcpStream", "TcpStack"]

DEFAULT_RECEIVE_SIZE: Final = 65536
_WILDCARDS: Final = ("0.0.0.0", "::")
ConnKey = tuple[str, int, str, int]


def _wildcard(ip: str) -> str:
    return "::" if ":" in ip else "0.0.0.0"


def _stream_error(error: str) -> trio.BrokenResourceError:
    cause: OSError
    if error == "timeout":
        cause = TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
    else:
        cause = ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
    broken = trio.BrokenResourceError(f"simulated TCP connection broken: {cause.strerror}")
    broken.__cause__ = cause
    return broken


class SimTcpStream(trio.abc.HalfCloseableStream):
    """One simulated TCP connection, from the application's side."""

    def __init__(self, stack: TcpStack, local: Endpoint, remote: Endpoint,
                 core: TcpConnection) -> None:
        self._stack = stack
        self.local = local
        self.remote = remote
        self.core = core
        self._lot = trio.lowlevel.ParkingLot()
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf
        self._corked = False
        self._closed = False
        self._eof_sent = False
        self._sending = False
        self._receiving = False
        self._announced = False
        self._listener: SimTcpListener | None = None

    # ================================================================== info
    @property
    def host(self) -> Host:
        return self._stack.host

    def getsockname(self) -> Endpoint:
        """Our (ip, port)."""
        return self.local

    def getpeername(self) -> Endpoint:
        """The peer's (ip, port) as this host sees it (after any NAT)."""
        return self.remote

    @property
    def state(self) -> TcpState:
        return self.core.state

    # ================================================================== network side
    def _cork(self) -> None:
        """Send what the application wrote at the end of this instant, not write by write.

        Writes made at one virtual instant (a Noise frame per Yamux frame, ...) leave as
        full segments together, as Linux's autocorking coalesces small writes; no virtual
        time passes.
        """
        if not self._corked:
            self._corked = True
            network = self.host.network
            network.call_at(trio.current_time(), self._uncork, None)

    def _uncork(self, _: object) -> None:
        self._corked = False
        self._flush()

    def _on_segment(self, seg: Segment) -> None:
        self.core.receive(seg, trio.current_time())
        self._after_change()
        self.host.network.defer(id(self), self._flush)

    def _flush(self) -> None:
        core = self.core
        now = trio.current_time()
        segments = core.segments_to_send(now)
        if segments:
            host = self.host
            local, remote = self.local, self.remote
            for seg in segments:
                host.send(Packet("tcp", local, remote, seg))
        if core.state is TcpState.CLOSED:
            self._stack._forget(self)
            self._set_timer(None)
            return
        self._set_timer(core.timer())

    def _set_timer(self, when: float | None) -> None:
        """Keep exactly one scheduler entry, at the core's next timer (none if None)."""
        if when == self._timer_at or (when is None and self._timer is None):
            return
        network = self.host.network
        network.cancel(self._timer)
        if when is None:
            self._timer, self._timer_at = None, math.inf
        else:
            self._timer, self._timer_at = network.call_at(when, self._on_timer, None), when

    def _on_timer(self, _: object) -> None:
        self._timer, self._timer_at = None, math.inf
        core = self.core
        due = core.timer()
        if due is None:
            return
        now = trio.current_time()
        if due <= now:
            core.handle_timer(now)
            self._after_change()
        self._flush()

    def _after_change(self) -> None:
        core = self.core
        if not self._announced and core.was_established and self._listener is not None:
            self._announced = True
            self._listener._established(self)
        self._lot.unpark_all()

    # ================================================================== application side
    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if self.core.error is not None:
            raise _stream_error(self.core.error)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_usable()
            if self._eof_sent:
                raise trio.ClosedResourceError("send_eof was called on this stream")
            view = memoryview(data).cast("B")
            while view:
                if self.core.state not in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                    raise _stream_error(self.core.error or "reset")
                taken = self.core.send(view)
                if taken:
                    view = view[taken:]
                    self._cork()
                if view:
                    await self._lot.park()
                    self._check_usable()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            while True:
                self._check_usable()
                if self.core.send_space > 0 or self._eof_sent:
                    return
                await self._lot.park()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if self._eof_sent:
                return
            self._eof_sent = True
            if self.core.error is not None:
                raise _stream_error(self.core.error)
            self.core.shutdown(trio.current_time())
            self._flush()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            core = self.core
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the stream was closed")
                if core.readable:
                    data = core.read(max_bytes)
                    self._flush()  # maybe a window update
                    return data
                if core.fin_received:
                    return b""
                if core.error is not None:
                    raise _stream_error(core.error)
                if core.state is TcpState.CLOSED:
                    return b""
                await self._lot.park()
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._stack.host.network.running:
                self.core.close(trio.current_time())
                self._flush()
            else:
                self.core.abort()
                self._stack._forget(self)
            self._lot.unpark_all()
        await trio.lowlevel.checkpoint()

    def _abort(self) -> None:
        """Drop the connection at once (RST if the peer knows it); no application error."""
        self.core.abort()
        self._closed = True
        if self._stack.host.network.running:
            self._flush()
        else:
            self._stack._forget(self)
        self._lot.unpark_all()

    def _break(self) -> None:
        """The network shut down: make every waiter fail instead of hanging."""
        self.core.lose("reset")
        self._lot.unpark_all()

    # ================================================================== connecting
    async def _wait_established(self) -> None:
        core = self.core
        while not core.was_established:
            if core.error is not None or core.state is TcpState.CLOSED:
                error = core.error or "refused"
                if error == "timeout":
                    raise TimeoutError(errno.ETIMEDOUT, "simulated TCP connect timed out")
                raise ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
            await self._lot.park()

    def __repr__(self) -> str:
        return (f"<SimTcpStream {self.host.name} {self.local[0]}:{self.local[1]} -> "
                f"{self.remote[0]}:{self.remote[1]} {self.core.state.value}>")


class SimTcpListener(trio.abc.Listener[SimTcpStream]):
    """A listening socket; ``accept()`` returns established connections in order."""

    def __init__(self, stack: TcpStack, local: Endpoint, backlog: int) -> None:
        self._stack = stack
        self.local = local
        self.backlog = backlog
        self._queue: deque[SimTcpStream] = deque()
        self._half_open: set[SimTcpStream] = set()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        #: SYNs dropped because the backlog was full
        self.dropped_syns = 0

    def getsockname(self) -> Endpoint:
        return self.local

    async def accept(self) -> SimTcpStream:
        await trio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the listener was closed")
            if self._queue:
                return self._queue.popleft()
            await self._lot.park()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._stack._unlisten(self)
            for stream in [*self._queue, *self._half_open]:
                stream._abort()
            self._queue.clear()
            self._half_open.clear()
            self._lot.unpark_all()
        await trio.lowlevel.checkpoint()

    def _on_syn(self, packet: Packet) -> None:
        if len(self._queue) + len(self._half_open) >= self.backlog:
            self.dropped_syns += 1
            return
        stack = self._stack
        host = stack.host
        local = packet.dst
        core = TcpConnection.from_syn(host.network.tcp_config, host.random.getrandbits(32),
                                      packet.segment, trio.current_time())
        stream = SimTcpStream(stack, local, packet.src, core)
        stream._listener = self
        self._half_open.add(stream)
        stack._register(stream)
        stream._flush()

    def _established(self, stream: SimTcpStream) -> None:
        self._half_open.discard(stream)
        if self._closed:
            stream._abort()
            return
        self._queue.append(stream)
        self._lot.unpark_all()

    def _gone(self, stream: SimTcpStream) -> None:
        self._half_open.discard(stream)

    def __repr__(self) -> str:
        return f"<SimTcpListener {self._stack.host.name} {self.local[0]}:{self.local[1]}>"


class TcpStack:
    """The TCP of one host: demultiplexes segments to connections and listeners."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._conns: dict[ConnKey, SimTcpStream] = {}
        self._listeners: dict[Endpoint, SimTcpListener] = {}
        self._local_ports: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------ sockets
    def listen(self, ip: str, port: int, backlog: int = 128) -> SimTcpListener:
        """Listen on (ip, port); ip may be a wildcard; port 0 picks a free port."""
        ip = canonical_ip(ip)
        if ip not in _WILDCARDS and ip not in self.host.addresses:
            raise OSError(errno.EADDRNOTAVAIL, f"{ip} is not an address of {self.host.name}")
        if port == 0:
            port = self.host.ephemeral_port(lambda p: self._port_used(ip, p))
        elif self._listener_clash(ip, port):
            raise OSError(errno.EADDRINUSE, f"tcp {ip}:{port} is already listening")
        listener = SimTcpListener(self, (ip, port), max(1, backlog))
        self._listeners[(ip, port)] = listener
        return listener

    async def connect(self, dst: Endpoint, *, source: Endpoint | None = None) -> SimTcpStream:
        """Open a connection to ``dst``, from ``source`` (ip, port) if given."""
        host = self.host
        host.network.check_running()
        await trio.lowlevel.checkpoint()
        rip, rport = canonical_ip(dst[0]), int(dst[1])
        if not 0 < rport <= 65535:
            raise OSError(errno.EINVAL, f"bad port {rport}")
        if source is None or source[0] in _WILDCARDS:
            lip = host.source_ip(rip)
        else:
            lip = canonical_ip(source[0])
            if lip not in host.addresses or ip_version(lip) != ip_version(rip):
                raise OSError(errno.EADDRNOTAVAIL, f"cannot connect from {lip} to {rip}")
        if source is None or source[1] == 0:
            lport = host.ephemeral_port(lambda p: self._port_used(lip, p))
        else:
            lport = source[1]
            if (lip, lport, rip, rport) in self._conns:
                raise OSError(errno.EADDRNOTAVAIL,
                              f"tcp {lip}:{lport} -> {rip}:{rport} exists already")
        core = TcpConnection(host.network.tcp_config, host.random.getrandbits(32))
        core.connect(trio.current_time())
        stream = SimTcpStream(self, (lip, lport), (rip, rport), core)
        self._register(stream)
        stream._flush()
        try:
            await stream._wait_established()
        except BaseException:
            if stream.core.state is not TcpState.CLOSED:
                stream._abort()
            else:
                self._forget(stream)
            raise
        return stream

    def connections(self) -> list[SimTcpStream]:
        """Every connection this host's TCP still tracks (including TIME-WAIT)."""
        return list(self._conns.values())

    # ------------------------------------------------------------------ segments
    def receive(self, packet: Packet) -> bool:
        """Deliver one segment; False if nothing wanted it (a RST was sent instead)."""
        seg = packet.segment
        (lip, lport), (rip, rport) = packet.dst, packet.src
        stream = self._conns.get((lip, lport, rip, rport))
        is_syn = seg.syn and not seg.has_ack and not seg.rst
        if stream is not None:
            if not (is_syn and stream.core.state is TcpState.TIME_WAIT
                    and self._find_listener(lip, lport) is not None):
                stream._on_segment(seg)
                return True
            self._forget(stream)  # a new SYN ends TIME-WAIT (Linux accepts it)
        listener = self._find_listener(lip, lport)
        if listener is not None and is_syn:
            listener._on_syn(packet)
            return True
        reply = seg.reset_reply()
        if reply is not None:
            self.host.send(Packet("tcp", packet.dst, packet.src, reply))
        return False

    def _find_listener(self, ip: str, port: int) -> SimTcpListener | None:
        return self._listeners.get((ip, port)) or self._listeners.get((_wildcard(ip), port))

    # ------------------------------------------------------------------ bookkeeping
    def _register(self, stream: SimTcpStream) -> None:
        key = (*stream.local, *stream.remote)
        self._conns[key] = stream  # type: ignore[index]
        local = stream.local
        self._local_ports[local] = self._local_ports.get(local, 0) + 1

    def _forget(self, stream: SimTcpStream) -> None:
        key = (*stream.local, *stream.remote)
        if self._conns.get(key) is stream:  # type: ignore[call-overload]
            del self._conns[key]  # type: ignore[arg-type]
            count = self._local_ports.get(stream.local, 1) - 1
            if count:
                self._local_ports[stream.local] = count
            else:
                self._local_ports.pop(stream.local, None)
        if stream._listener is not None:
            stream._listener._gone(stream)
        stream._lot.unpark_all()

    def _unlisten(self, listener: SimTcpListener) -> None:
        if self._listeners.get(listener.local) is listener:
            del self._listeners[listener.local]

    def _listener_clash(self, ip: str, port: int) -> bool:
        if (ip, port) in self._listeners:
            return True
        if ip in _WILDCARDS:
            return any(p == port and ip_version(i) == ip_version(ip) for i, p in self._listeners)
        return (_wildcard(ip), port) in self._listeners

    def _port_used(self, ip: str, port: int) -> bool:
        if self._listener_clash(ip, port):
            return True
        if ip in _WILDCARDS:
            return any(p == port for _, p in self._local_ports)
        return (ip, port) in self._local_ports

    def shutdown(self) -> None:
        """The network is going away: break every connection and listener."""
        for stream in list(self._conns.values()):
            stream._break()
        for listener in list(self._listeners.values()):
            listener._closed = True
            listener._lot.unpark_all()
        self._conns.clear()
        self._listeners.clear()
        self._local_ports.clear()
