"""What RFC 4787 predicts for a hole punch between two NATs, without simulating anything.

The scenario (the one :mod:`flarelab.simnet.punch` runs, and DCUtR performs):

1. A and B each use one port ``p`` (their listen port). Before the punch each talked from
   ``p`` to a public server S, which told it its *observed* endpoint (``A_obs``,
   ``B_obs``): the NAT session toward S is still alive.
2. They punch to each other's observed endpoint from ``p``. ``order`` says whose first
   packet gets where first: ``sync`` -- each side's first packet leaves its own NAT before
   the other's arrives there (crossing in the internet, as DCUtR aims for); ``a_first`` --
   A's first packet reaches B's NAT before B has sent anything; ``b_first`` -- mirrored.
3. Success. UDP (DCUtR over QUIC): A dials (sends datagrams to ``B_obs``, retrying), B
   sends punch packets to ``A_obs`` and answers every datagram of A at its source; success
   when an answer reaches A. TCP: both connect from ``p`` to the other's observed endpoint
   (retransmitting SYNs) while listening on ``p``; success when any TCP connection between
   them is established (simultaneous open, or one side's SYN accepted by the other's
   listener).

The reasoning uses only RFC 4787 properties (section numbers below) and the one Linux fact
the real lab measured (an answered unsolicited packet leaves a conntrack entry):

* *Predictable mapping* (4.1): the session toward the peer gets the same external endpoint
  as the one toward S -- endpoint-independent mapping, or Linux-style port preservation with
  per-remote port sharing. Otherwise (symmetric NAT, random ports) it gets another port.
* *Filtering* (5): an inbound packet that matches no session is let in by
  endpoint-independent filtering if any session uses its destination endpoint, by
  address-dependent filtering if one of those sessions talks to the packet's source IP;
  address-and-port-dependent filtering lets in exact matches only.
* *Unsolicited packets*: dropped, or answered by the router's stack (TCP RST, ICMP). An
  answered packet leaves a session on (own endpoint, sender) that (a) answers every later
  packet of that flow and (b) takes that tuple, so the local side's own session toward the
  sender's endpoint must move to another port. Under TCP, the RST also kills the
  sender's connect.

Scope: the named presets (:data:`~flarelab.simnet.nat.PRESETS`) and public hosts (no NAT).
The rules assume that endpoint-independent filtering comes with a predictable mapping,
which holds for every preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import LocalProtocolError
from .nat import FilteringBehavior, NatBehavior, UnsolicitedPolicy

__all__ = ["Order", "Prediction", "predict"]

Order = Literal["sync", "a_first", "b_first"]
Transport = Literal["udp", "tcp"]


@dataclass(frozen=True, slots=True)
class _Side:
    """The properties of one side's NAT that the rules use (None: a public host)."""

    name: str
    predictable: bool
    filtering: FilteringBehavior
    answers: bool

    @classmethod
    def of(cls, name: str, nat: NatBehavior | None) -> _Side:
        if nat is None:
            return cls(name, True, FilteringBehavior.ENDPOINT_INDEPENDENT, False)
        if nat.filtering is FilteringBehavior.ENDPOINT_INDEPENDENT and not nat.predictable:
            raise LocalProtocolError("the theory assumes EIF comes with a predictable mapping")
        return cls(name, nat.predictable, nat.filtering,
                   nat.unsolicited is UnsolicitedPolicy.ANSWER)

    @property
    def eif(self) -> bool:
        return self.filtering is FilteringBehavior.ENDPOINT_INDEPENDENT

    def accepts(self, *, own_on_obs: bool, peer_on_obs: bool) -> bool:
        """Whether a packet from the peer's mapped endpoint to our observed one gets in.

        ``own_on_obs``: our session toward the peer uses our observed endpoint (so it
        sits on the packet's destination); ``peer_on_obs``: the peer sends from its
        observed endpoint (the one we send to). RFC 4787 section 5.
        """
        if self.filtering is FilteringBehavior.ENDPOINT_INDEPENDENT:
            return True
        if self.filtering is FilteringBehavior.ADDRESS_DEPENDENT:
            return own_on_obs
        return own_on_obs and peer_on_obs


@dataclass(frozen=True, slots=True)
class Prediction:
    """The predicted outcome and the reasoning behind it, in words."""

    success: bool
    reason: str


def predict(a: NatBehavior | None, b: NatBehavior | None, *, transport: Transport,
            order: Order = "sync") -> Prediction:
    """Predict whether the punch described in the module docstring gets through."""
    if transport not in ("udp", "tcp") or order not in ("sync", "a_first", "b_first"):
        raise LocalProtocolError(f"unknown transport {transport!r} or order {order!r}")
    sa, sb = _Side.of("A", a), _Side.of("B", b)
    # First packets that reach a NAT before its own side sent anything are unsolicited:
    # only endpoint-independent filtering lets them in (the sessions there go to S).
    answered_at_b = order == "a_first" and sb.answers and not sb.eif
    answered_at_a = order == "b_first" and sa.answers and not sa.eif
    # An answered packet's session takes (own observed endpoint, sender's endpoint); the
    # local side's session toward the peer's observed endpoint collides with it when the
    # sender sent from its observed endpoint.
    a_on_obs = sa.predictable and not (answered_at_a and sb.predictable)
    b_on_obs = sb.predictable and not (answered_at_b and a_on_obs)
    a_in = sb.accepts(own_on_obs=b_on_obs, peer_on_obs=a_on_obs)  # A's packets into B
    b_in = sa.accepts(own_on_obs=a_on_obs, peer_on_obs=b_on_obs)  # B's packets into A
    notes = []
    if not sa.predictable or not sb.predictable:
        sides = [s.name for s in (sa, sb) if not s.predictable]
        notes.append(f"{' and '.join(sides)}'s NAT maps the session to the peer to a new "
                     "port (not the observed one)")
    if answered_at_b:
        notes.append("NAT B's stack answered A's first packet (its conntrack entry moves B's "
                     "own session to another port and answers A's later packets)")
    if answered_at_a:
        notes.append("NAT A's stack answered B's first packet (its conntrack entry moves A's "
                     "own session to another port and answers B's later packets)")
    if transport == "udp":
        # A is the QUIC client: its datagrams must get into B (past any conntrack entry of
        # B's router), and B's answers then come back through A's own session.
        success = a_in and not answered_at_b
        why = ("A's datagrams reach B and B's answers return through A's session"
               if success else "A's datagrams never reach B")
    else:
        # Either side's SYN gets through while its connect is alive (a RST kills it).
        via_a = a_in and not answered_at_b
        via_b = b_in and not answered_at_a
        success = via_a or via_b
        if success:
            why = ("A's SYN gets into B" if via_a else "B's SYN gets into A") + \
                  " and the SYN-ACK returns through the sender's own session"
        else:
            why = "neither side's SYN gets in while its connect is alive"
    return Prediction(success, "; ".join([*notes, why]))
