"""libp2p transports for simulated hosts, and nodes made on them.

:class:`SimTcpTransport` is the ``tcp`` transport of a simulated host. It behaves like
:class:`flarelab.transports.tcp.TcpTransport`: it listens on ``/ip4|ip6/<ip>/tcp/<port>``,
dials from a listener's port when one fits the destination (``SO_REUSEPORT``; hole
punching needs it) and falls back to an ephemeral port when that 4-tuple is taken, and it
traces ``tcp.dial`` / ``tcp.listen`` with the same attributes. Its raw connections carry
``details={"simnet": True, ...}``.

:func:`make_node` builds a :class:`flarelab.node.Node` on a host with that transport, the
network's address policy (so the simulated internet counts as public) and its tracing.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from opentelemetry.trace import Tracer

from ..multiaddr import DEFAULT_POLICY, Multiaddr
from ..tracing import spans
from ..transports.base import (
    ConnectionHandler,
    Listener,
    RawConnection,
    Transport,
    transport_target,
)
from .packet import canonical_ip, ip_version
from .tcp import SimTcpListener

if TYPE_CHECKING:
    from ..identity import PeerId
    from ..node import Node, NodeConfig
    from .host import Host

__all__ = ["SimTcpTransport", "SimTransportListener", "make_node"]

_REUSE_FAILURES = {errno.EADDRINUSE, errno.EADDRNOTAVAIL}


def _tcp_target(addr: Multiaddr) -> tuple[str, str, int] | None:
    """Return (kind, ip, port) for /ip4|ip6/<ip>/tcp/<port>[/p2p/..], else None."""
    target = transport_target(addr, ("tcp",), hosts=("ip4", "ip6"))
    if target is None:
        return None
    kind, ip, port = target
    return kind, canonical_ip(ip), port


@dataclass(eq=False)
class SimTransportListener(Listener):
    """A listening simulated TCP socket; ``addrs`` name the host's real addresses."""

    listener: SimTcpListener
    addrs: list[Multiaddr]  # type: ignore[misc]

    @property
    def bound(self) -> tuple[str, int]:
        return self.listener.local

    async def aclose(self) -> None:
        await self.listener.aclose()


class SimTcpTransport(Transport):
    """The ``tcp`` transport of a simulated host (see the module docstring)."""

    name = "tcp"
    supports_reuse_port = True

    def __init__(self, host: Host, *, reuse_port: bool = True, connect_timeout: float = 10.0,
                 backlog: int = 128, tracer: Tracer = spans.NO_TRACER) -> None:
        self.host = host
        self.reuse_port = reuse_port
        self.connect_timeout = connect_timeout
        self.backlog = backlog
        self.tracer = tracer
        self._listeners: list[SimTransportListener] = []

    def can_dial(self, addr: Multiaddr) -> bool:
        return _tcp_target(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        target = _tcp_target(addr)
        if target is None or addr.peer_id is not None:
            return False
        ip = target[1]
        return ip in ("0.0.0.0", "::") or ip in self.host.addresses

    def reuse_source(self, dest_ip: str, *, reuse_port: bool | None = None
                     ) -> tuple[str, int] | None:
        """The (ip, port) a dial to ``dest_ip`` should leave from, or None (ephemeral).

        ``reuse_port`` overrides the transport's setting for one dial (None: keep it).
        """
        if not (self.reuse_port if reuse_port is None else reuse_port):
            return None
        version = ip_version(dest_ip)
        for lst in self._listeners:
            ip, port = lst.bound
            if ip_version(ip) == version:
                return (ip, port)
        return None

    async def dial(self, addr: Multiaddr, *, expected_peer: PeerId | None = None,
                   reuse_port: bool | None = None) -> RawConnection:
        """Connect to ``addr``; ``reuse_port=False`` leaves from an ephemeral port."""
        target = _tcp_target(addr)
        if target is None:
            raise ValueError(f"not a TCP address: {addr}")
        _, ip, port = target
        with self.tracer.start_as_current_span(
            spans.TCP_DIAL,
            attributes={
                spans.NETWORK_TRANSPORT: "tcp",
                spans.NETWORK_PEER_ADDRESS: ip,
                spans.NETWORK_PEER_PORT: port,
                spans.LIBP2P_MULTIADDR: str(addr),
            },
        ) as span:
            source = self.reuse_source(ip, reuse_port=reuse_port)
            try:
                with trio.fail_after(self.connect_timeout):
                    try:
                        stream = await self.host.tcp.connect((ip, port), source=source)
                    except OSError as exc:
                        if source is None or exc.errno not in _REUSE_FAILURES:
                            raise
                        span.add_event(spans.TCP_REUSE_PORT_FAILED, {"error": str(exc)})
                        source = None
                        stream = await self.host.tcp.connect((ip, port))
            except trio.TooSlowError:
                err = TimeoutError(f"TCP connect to {addr} timed out")
                spans.mark_error(span, err, side="remote")
                raise err from None
            except OSError as exc:
                spans.mark_error(span, exc, side="remote")
                raise
            local = stream.getsockname()
            span.set_attribute(spans.NETWORK_LOCAL_ADDRESS, local[0])
            span.set_attribute(spans.NETWORK_LOCAL_PORT, local[1])
            span.set_attribute(spans.LIBP2P_REUSE_PORT, source is not None)
            return RawConnection(
                stream=stream,
                local_addr=Multiaddr.from_ip_port(local[0], local[1], "tcp"),
                remote_addr=Multiaddr.from_ip_port(ip, port, "tcp"),
                is_initiator=True,
                transport="tcp",
                details={"reuse_port": source is not None, "simnet": True},
            )

    async def listen(
        self,
        addr: Multiaddr,
        handler: ConnectionHandler,
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        target = _tcp_target(addr)
        if target is None or not self.can_listen(addr):
            raise ValueError(f"cannot listen on {addr} on host {self.host.name}")
        _, ip, port = target
        sim_listener = self.host.tcp.listen(ip, port, self.backlog)
        bound_ip, bound_port = sim_listener.local
        if bound_ip in ("0.0.0.0", "::"):
            version = ip_version(bound_ip)
            ips = [a for a in self.host.addresses if ip_version(a) == version]
        else:
            ips = [bound_ip]
        listener = SimTransportListener(
            listener=sim_listener,
            addrs=[Multiaddr.from_ip_port(a, bound_port, "tcp") for a in ips],
        )
        self._listeners.append(listener)
        with self.tracer.start_as_current_span(
            spans.TCP_LISTEN, attributes={spans.LIBP2P_LOCAL_MULTIADDR: str(listener.addrs[0])}
        ):
            pass
        task_status.started(listener)
        try:
            while True:
                try:
                    stream = await sim_listener.accept()
                except trio.ClosedResourceError:
                    return
                local, remote = stream.getsockname(), stream.getpeername()
                conn = RawConnection(
                    stream=stream,
                    local_addr=Multiaddr.from_ip_port(local[0], local[1], "tcp"),
                    remote_addr=Multiaddr.from_ip_port(remote[0], remote[1], "tcp"),
                    is_initiator=False,
                    transport="tcp",
                    details={"simnet": True},
                )
                handler_nursery.start_soon(handler, conn)
        finally:
            self._listeners.remove(listener)
            with trio.CancelScope(shield=True):
                await sim_listener.aclose()

    def __repr__(self) -> str:
        return f"<SimTcpTransport on {self.host.name}>"


def make_node(host: Host, config: NodeConfig | None = None, **overrides: Any) -> Node:
    """A :class:`~flarelab.node.Node` on ``host`` with the host's TCP and QUIC transports.

    Defaults added to ``config`` (or to ``NodeConfig(**overrides)``): ``label`` = the host's
    name; ``listen_addrs`` = port 4001 on each of the host's addresses, over TCP and (when
    ``enable_quic`` and aioquic is installed) QUIC; the network's address policy (its
    internet counts as public) and its tracing template. QUIC runs on the host's virtual
    UDP sockets. Enter the node with ``async with`` inside ``async with network:``.
    """
    from ..node import Node, NodeConfig

    if config is None:
        config = NodeConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    quic_class = _quic_transport_class() if getattr(config, "enable_quic", False) else None
    changes: dict[str, Any] = {}
    if config.label is None:
        changes["label"] = host.name
    if not config.listen_addrs:
        listen = []
        for ip in host.addresses:
            version = ip_version(ip)
            listen.append(f"/ip{version}/{ip}/tcp/4001")
            if quic_class is not None:
                listen.append(f"/ip{version}/{ip}/udp/4001/quic-v1")
        changes["listen_addrs"] = listen
    if config.address_policy is DEFAULT_POLICY:
        changes["address_policy"] = host.network.address_policy
    if config.tracing is None and host.network.tracing is not None:
        changes["tracing"] = dataclasses.replace(host.network.tracing,
                                                 label=changes.get("label", config.label))
    if quic_class is not None and config.key is None:
        from ..identity import Ed25519PrivateKey

        changes["key"] = Ed25519PrivateKey.generate()  # QUIC needs it before the node
    if changes:
        config = dataclasses.replace(config, **changes)
    transports: list[Transport] = [SimTcpTransport(
        host, reuse_port=config.reuse_port, connect_timeout=config.connect_timeout)]
    if quic_class is not None:
        assert config.key is not None
        transports.append(quic_class(
            config.key, config=getattr(config, "quic", None),
            socket_factory=host.open_udp_socket, reuse_port=config.reuse_port))
    node = Node(config, transports=transports)
    for transport in transports:
        transport.tracer = node.tracer  # type: ignore[attr-defined]
    return node


def _quic_transport_class() -> Callable[..., Transport] | None:
    """The QUIC transport's class, if it (and aioquic) can be imported."""
    try:
        from ..transports.quic import QuicTransport
    except ImportError:
        return None
    return QuicTransport  # type: ignore[no-any-return]
