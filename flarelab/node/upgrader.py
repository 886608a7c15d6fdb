"""Turn a raw transport connection into a secure, multiplexed one.

raw stream -> multistream-select "/noise" -> Noise XX (peer authenticated) ->
muxer (agreed inside the Noise handshake when both sides offer lists, otherwise by a
second multistream-select) -> a running muxer.

Roles are explicit: the initiator of the *upgrade* is normally the dialer, but a TCP
simultaneous open (DCUtR) assigns them by protocol, not by who called ``connect``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from opentelemetry.trace import Tracer

from ..errors import LocalProtocolError, attach_context
from ..mss import MULTISTREAM_PROTOCOL, negotiate_initiator, negotiate_responder
from ..muxers.mplex import MplexConfig, MplexConnection
from ..muxers.yamux import YamuxConfig, YamuxConnection
from ..security.noise import NOISE_PROTOCOL_ID, noise_handshake
from ..tracing import spans

if TYPE_CHECKING:
    from ..identity import PeerId, PrivateKey, PublicKey
    from ..muxers.base import MuxedConnection

__all__ = ["MuxerFactory", "UpgradeResult", "Upgrader"]

MuxerFactory = Callable[[trio.abc.HalfCloseableStream, bool, "PeerId", Tracer], "MuxedConnection"]


@dataclass
class UpgradeResult:
    """What an upgrade produced."""

    muxer: MuxedConnection
    remote_peer: PeerId
    remote_public_key: PublicKey
    security: str
    early_muxer: bool


class Upgrader:
    """Runs security and muxer negotiation for one node."""

    def __init__(
        self,
        *,
        local_key: PrivateKey,
        muxers: Sequence[str],
        yamux: YamuxConfig | None = None,
        mplex: MplexConfig | None = None,
        tracer: Tracer = spans.NO_TRACER,
    ) -> None:
        self.local_key = local_key
        self.tracer = tracer
        yamux_cfg = yamux or YamuxConfig()
        mplex_cfg = mplex or MplexConfig()
        known: dict[str, MuxerFactory] = {
            YamuxConnection.PROTOCOL_ID: lambda s, init, peer, tr: YamuxConnection(
                s, is_initiator=init, config=yamux_cfg, peer=peer, tracer=tr
            ),
            MplexConnection.PROTOCOL_ID: lambda s, init, peer, tr: MplexConnection(
                s, is_initiator=init, config=mplex_cfg, peer=peer, tracer=tr
            ),
        }
        unknown = [m for m in muxers if m not in known]
        if unknown:
            raise LocalProtocolError(f"unknown stream muxers: {unknown}")
        if not muxers:
            raise LocalProtocolError("at least one stream muxer is needed")
        self.muxers = tuple(muxers)
        self._factories = {m: known[m] for m in muxers}

    async def upgrade(
        self,
        stream: trio.abc.HalfCloseableStream,
        *,
        is_initiator: bool,
        expected_peer: PeerId | None = None,
        progress: list[str] | None = None,
    ) -> UpgradeResult:
        """Secure and multiplex ``stream``; raise on any failure (the caller closes it).

        ``progress`` (if given) gets the protocol of each step as it starts, so a caller
        that times the upgrade out can say which step stalled.
        """
        steps = progress if progress is not None else []
        peer_hint = expected_peer
        try:
            steps.append(MULTISTREAM_PROTOCOL)
            if is_initiator:
                _, sec_stream = await negotiate_initiator(
                    stream, [NOISE_PROTOCOL_ID], tracer=self.tracer, peer=peer_hint
                )
            else:
                _, sec_stream = await negotiate_responder(
                    stream, (NOISE_PROTOCOL_ID,), tracer=self.tracer, peer=peer_hint
                )
            steps.append(NOISE_PROTOCOL_ID)
            secure = await noise_handshake(
                sec_stream,  # type: ignore[arg-type]
                local_key=self.local_key,
                is_initiator=is_initiator,
                expected_peer=expected_peer,
                muxers=self.muxers,
                tracer=self.tracer,
            )
            peer_hint = secure.remote_peer
            early = secure.early_muxer
            steps.append(f"{MULTISTREAM_PROTOCOL} (muxer)")
            if early is not None and early in self._factories:
                muxer_id: str = early
                mux_stream: trio.abc.Stream = secure
            elif is_initiator:
                muxer_id, mux_stream = await negotiate_initiator(
                    secure, self.muxers, tracer=self.tracer, peer=peer_hint
                )
            else:
                muxer_id, mux_stream = await negotiate_responder(
                    secure, self.muxers, tracer=self.tracer, peer=peer_hint
                )
        except BaseException as exc:
            attach_context(exc, peer=peer_hint)
            raise
        muxer = self._factories[muxer_id](
            mux_stream,  # type: ignore[arg-type]
            is_initiator,
            secure.remote_peer,
            self.tracer,
        )
        return UpgradeResult(
            muxer=muxer,
            remote_peer=secure.remote_peer,
            remote_public_key=secure.remote_public_key,
            security=NOISE_PROTOCOL_ID,
            early_muxer=early is not None,
        )
