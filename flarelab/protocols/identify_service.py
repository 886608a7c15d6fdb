"""Identify as a node service: run it on every connection, answer it, push updates.

* On every new connection we ask the peer to identify itself (both sides do this).
* We answer identify requests with our key, advertised addresses, protocols, the address we
  see the peer at, and a signed peer record.
* When our addresses or protocols change, we push a fresh message to every connected peer
  that speaks identify push (coalesced: changes that arrive during a push trigger one more
  push, not one each). Each connection remembers which version of our state it last got;
  a peer whose identify finishes after a change (so we did not yet know it speaks push)
  gets the push then -- with any latency, that race is the common case.
* What we learn goes into the peerstore and the event bus; observed addresses go to the
  node's observed-address manager, which trusts them once enough distinct peers agree.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from opentelemetry import trace

from ..errors import FlarelabError, RemoteProtocolError, attach_context
from ..identity import Envelope, PeerRecord
from ..identity.peer_record import new_seq
from ..node.events import ObservedAddressConfirmed, PeerIdentified, PeerProtocolsUpdated
from ..node.peerstore import AddrTTL
from ..tracing import spans
from .identify import (
    IDENTIFY_PROTOCOL,
    IDENTIFY_PUSH_PROTOCOL,
    IdentifyInfo,
    encode_identify,
    info_attributes,
    read_identify,
    write_identify,
)

if TYPE_CHECKING:
    from ..multiaddr import Multiaddr
    from ..node.connection import Connection, NetStream
    from ..node.node import Node

__all__ = ["IdentifyService"]

log = logging.getLogger("flarelab.identify")


class IdentifyService:
    """Identify and identify push for one node."""

    def __init__(self, node: Node, *, timeout: float = 15.0) -> None:
        self.node = node
        self.timeout = timeout
        self._push_wanted = trio.Event()
        self._record: Envelope | None = None
        self._record_addrs: tuple[Multiaddr, ...] | None = None
        self._results: dict[int, tuple[trio.Event, list[IdentifyInfo | BaseException]]] = {}
        #: version of our advertised state (addresses, protocols), bumped on every change
        self._generation = 0
        #: connection id -> the version of our state that connection last received
        self._sent: dict[int, int] = {}
        node.set_handler(IDENTIFY_PROTOCOL, self._answer, allow_limited=True)
        node.set_handler(IDENTIFY_PUSH_PROTOCOL, self._receive_push, allow_limited=True)

    # ------------------------------------------------------------------ our message
    def signed_record(self) -> Envelope:
        """Our signed peer record for the current advertised addresses (re-signed on change)."""
        addrs = tuple(self.node.advertised_addrs())
        if self._record is None or addrs != self._record_addrs:
            record = PeerRecord(peer_id=self.node.peer_id, seq=new_seq(), addrs=addrs)
            self._record = record.seal(self.node.key)
            self._record_addrs = addrs
        return self._record

    def message_for(self, conn: Connection) -> bytes:
        """The identify message we send over ``conn`` (noting which version it carries)."""
        self._sent[conn.id] = self._generation
        return encode_identify(
            public_key=self.node.key.public_key,
            listen_addrs=self.node.advertised_addrs(),
            protocols=self.node.protocols(),
            observed_addr=None if conn.limited else conn.remote_addr,
            agent_version=self.node.config.agent_version,
            protocol_version=self.node.config.protocol_version,
            signed_record=self.signed_record(),
        )

    # ------------------------------------------------------------------ asking
    def _slot(self, conn: Connection) -> tuple[trio.Event, list[IdentifyInfo | BaseException]]:
        slot = self._results.get(conn.id)
        if slot is None:
            slot = (trio.Event(), [])
            self._results[conn.id] = slot
        return slot

    async def identify_connection(self, conn: Connection) -> IdentifyInfo | None:
        """Ask the peer on ``conn`` to identify itself; record and return the answer.

        Runs in the connection's nursery; a failure is traced and logged and leaves the
        connection open.
        """
        done, box = self._slot(conn)
        attrs: dict[str, spans.AttributeValue] = {
            spans.LIBP2P_REMOTE_PEER_ID: str(conn.remote_peer),
            spans.LIBP2P_CONNECTION_ID: conn.id,
            spans.LIBP2P_PROTOCOL: IDENTIFY_PROTOCOL,
        }
        try:
            with self.node.tracer.start_as_current_span(
                spans.IDENTIFY_EXCHANGE, attributes=attrs
            ) as span:
                try:
                    with trio.fail_after(self.timeout):
                        stream = await conn.new_stream(IDENTIFY_PROTOCOL)
                        try:
                            info = await read_identify(stream, peer=conn.remote_peer, span=span)
                        finally:
                            with trio.CancelScope(shield=True), trio.move_on_after(1):
                                await stream.aclose()
                except trio.TooSlowError:
                    err: BaseException = RemoteProtocolError(
                        f"identify did not finish within {self.timeout} s",
                        peer=conn.remote_peer,
                        protocol=IDENTIFY_PROTOCOL,
                    )
                    spans.mark_error(span, err)
                    box.append(err)
                    return None
                except (FlarelabError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    attach_context(exc, peer=conn.remote_peer, protocol=IDENTIFY_PROTOCOL)
                    spans.mark_error(span, exc)
                    log.info("identify of %s failed: %s", conn.remote_peer, exc)
                    box.append(exc)
                    return None
                for key, value in info_attributes(info).items():
                    span.set_attribute(key, value)
                self.apply(conn, info, push=False)
                box.append(info)
                if self._stale(conn):
                    self._push_wanted.set()  # our state changed since this peer heard it
                return info
        finally:
            done.set()

    async def wait_identified(self, conn: Connection) -> IdentifyInfo:
        """Wait for the identify of ``conn`` to finish; raise what it failed with."""
        done, box = self._slot(conn)
        await done.wait()
        result = box[-1]
        if isinstance(result, BaseException):
            raise result
        return result

    # ------------------------------------------------------------------ answering
    async def _answer(self, stream: NetStream) -> None:
        span = trace.get_current_span()
        await write_identify(stream, self.message_for(stream.connection), span=span)

    async def _receive_push(self, stream: NetStream) -> None:
        conn = stream.connection
        with self.node.tracer.start_as_current_span(
            spans.IDENTIFY_PUSH,
            attributes={
                spans.LIBP2P_REMOTE_PEER_ID: str(conn.remote_peer),
                spans.LIBP2P_ROLE: "responder",
            },
        ) as span:
            try:
                with trio.fail_after(self.timeout):
                    info = await read_identify(stream, peer=conn.remote_peer, span=span)
            except trio.TooSlowError:
                raise RemoteProtocolError(
                    f"identify push did not finish within {self.timeout} s",
                    peer=conn.remote_peer,
                    protocol=IDENTIFY_PUSH_PROTOCOL,
                ) from None
            for key, value in info_attributes(info).items():
                span.set_attribute(key, value)
            self.apply(conn, info, push=True)

    # ------------------------------------------------------------------ learning
    def apply(self, conn: Connection, info: IdentifyInfo, *, push: bool) -> None:
        """Record what ``info`` says about the peer on ``conn`` (and about us)."""
        node = self.node
        peer = conn.remote_peer
        now = trio.current_time()
        store = node.peerstore
        if info.public_key is not None:
            store.add_public_key(peer, info.public_key, now)
        if info.signed_record is not None:
            store.consume_peer_record(info.signed_record, now)
        if not push or "listenAddrs" in info.present or info.signed_record is not None:
            store.replace_addrs(peer, info.certified_addrs, AddrTTL.CONNECTED, now)
        if not push or "protocols" in info.present:
            added, removed = store.set_protocols(peer, info.protocols, now)
            if added or removed:
                node.events.publish(PeerProtocolsUpdated(peer, added, removed))
        if info.agent_version is not None or info.protocol_version is not None:
            store.set_agent(peer, info.agent_version, info.protocol_version, now)
        if info.observed_addr is not None and not conn.limited:
            self._observe(conn, info.observed_addr, now)
        node.events.publish(PeerIdentified(peer, info, push=push))

    def _observe(self, conn: Connection, observed: Multiaddr, now: float) -> None:
        """Count an observation of us, if it is about a port we listen on."""
        local = conn.local_addr
        listen = self.node.listen_addrs()
        local_port = _port(local)
        if local_port is None or not any(_port(a) == local_port for a in listen):
            return  # an ephemeral port: the mapping it reveals is of no use to anyone
        if observed.protocol_names()[1:2] != local.protocol_names()[1:2]:
            return  # a different transport than the connection's
        confirmed = self.node.observed_addrs.record(
            observed, conn.remote_peer, conn.remote_addr, now
        )
        if confirmed is not None:
            count = len(self.node.observed_addrs.all(now))
            self.node.events.publish(ObservedAddressConfirmed(confirmed, count))
            self.node.addresses_changed()

    # ------------------------------------------------------------------ pushing
    def schedule_push(self) -> None:
        """Our advertised state changed: push it to every connected peer soon (coalesced)."""
        self._generation += 1
        self._push_wanted.set()

    def _stale(self, conn: Connection) -> bool:
        """Whether ``conn``'s peer speaks push and has heard an older version of our state."""
        sent = self._sent.get(conn.id)
        speaks_push = IDENTIFY_PUSH_PROTOCOL in self.node.peerstore.protocols(conn.remote_peer)
        return speaks_push and sent is not None and sent < self._generation

    async def run(self) -> None:
        """The push loop; runs in the node's nursery for the node's lifetime."""
        while True:
            await self._push_wanted.wait()
            self._push_wanted = trio.Event()
            conns = [c for c in self.node.connections() if self._stale(c)]
            async with trio.open_nursery() as nursery:
                for conn in conns:
                    nursery.start_soon(self.push, conn)

    async def push(self, conn: Connection) -> None:
        """Send an identify push over ``conn`` (failures are traced, not raised)."""
        with self.node.tracer.start_as_current_span(
            spans.IDENTIFY_PUSH,
            attributes={
                spans.LIBP2P_REMOTE_PEER_ID: str(conn.remote_peer),
                spans.LIBP2P_ROLE: "initiator",
            },
        ) as span:
            try:
                with trio.fail_after(self.timeout):
                    stream = await conn.new_stream(IDENTIFY_PUSH_PROTOCOL)
                    try:
                        await write_identify(stream, self.message_for(conn), span=span)
                    finally:
                        with trio.CancelScope(shield=True), trio.move_on_after(1):
                            await stream.aclose()
            except (FlarelabError, trio.TooSlowError, trio.BrokenResourceError,
                    trio.ClosedResourceError) as exc:
                spans.mark_error(span, exc)
                log.debug("identify push to %s failed: %s", conn.remote_peer, exc)

    def forget(self, conn: Connection) -> None:
        """Drop what we kept about a closed connection."""
        self._results.pop(conn.id, None)
        self._sent.pop(conn.id, None)


def _port(addr: Multiaddr) -> int | None:
    comps = addr.components()
    if len(comps) >= 2 and comps[1].name in ("tcp", "udp") and comps[1].value is not None:
        return int(comps[1].value)
    return None
