"""What an AutoNAT server agrees to dial, and how often: pure rules (tier 1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import DEFAULT_POLICY, AddressPolicy, Multiaddr
from flarelab.protocols.autonat.dial_policy import (
    NO_TRANSPORT,
    NOT_IP,
    NOT_PUBLIC,
    OTHER_IP,
    OTHER_PEER,
    RELAYED,
    UNPARSABLE,
    observed_refusal,
    probe_candidates,
    same_ip,
    select_v1,
    select_v2,
)
from flarelab.protocols.autonat.ratelimit import (
    GLOBAL_RATE,
    PEER_CONCURRENCY,
    PEER_RATE,
    RateLimiter,
    RateLimits,
)

REQUESTER = PeerId.from_public_key(Ed25519PrivateKey.from_seed(b"\x03" * 32).public_key)
OTHER = PeerId.from_public_key(Ed25519PrivateKey.from_seed(b"\x04" * 32).public_key)
LAB = AddressPolicy(treat_as_public=("198.51.100.0/24", "203.0.113.0/24"))
OBSERVED = Multiaddr("/ip4/203.0.113.9/tcp/51000")
M = Multiaddr


def tcp_only(addr: Multiaddr) -> bool:
    return addr.protocol_names()[1] == "tcp"


def test_v1_dials_only_the_observed_ip() -> None:
    asked = [
        M("/ip4/203.0.113.9/tcp/4001"),                          # ok
        M(f"/ip4/203.0.113.9/tcp/4001/p2p/{REQUESTER}"),          # the same, deduplicated
        M("/ip4/203.0.113.10/tcp/4001"),                         # another public IP
        M("/ip4/192.168.1.2/tcp/4001"),                          # its LAN address
        M("/ip4/8.8.8.8/tcp/53"),                                # somebody else
        M("/dns4/example.com/tcp/4001"),                         # a name
        M(f"/ip4/203.0.113.9/tcp/4001/p2p/{OTHER}"),              # another peer
        M(f"/ip4/198.51.100.1/tcp/1/p2p/{OTHER}/p2p-circuit"),   # relayed
        M("/ip4/203.0.113.9/udp/4001/quic-v1"),                  # a transport we lack
        M("/ip4/203.0.113.9/tcp/4002"),                          # ok
    ]
    selection = select_v1(asked, observed=OBSERVED, requester=REQUESTER, policy=LAB,
                          can_dial=tcp_only)
    assert selection.candidates == (M("/ip4/203.0.113.9/tcp/4001"),
                                    M("/ip4/203.0.113.9/tcp/4002"))
    assert [why for _, why in selection.refused] == [
        OTHER_IP, OTHER_IP, OTHER_IP, NOT_IP, OTHER_PEER, RELAYED, NO_TRANSPORT]
    assert selection.reason() == ("3 addresses not on the observed IP; 1 address not an IP "
                                  "address with a TCP or UDP port; 1 address names another "
                                  "peer; 1 address a relayed address; 1 address no transport "
                                  "here dials it")


def test_v1_caps_the_candidates_and_needs_a_public_observed_ip() -> None:
    asked = [M(f"/ip4/203.0.113.9/tcp/{port}") for port in range(1000, 1040)]
    selection = select_v1(asked, observed=OBSERVED, requester=REQUESTER, policy=LAB,
                          can_dial=tcp_only, max_addrs=16)
    assert len(selection.candidates) == 16 and selection.refused == ()
    # by default 203.0.113.0/24 is documentation space: not public, so nothing to dial
    strict = select_v1(asked[:1], observed=OBSERVED, requester=REQUESTER,
                       policy=DEFAULT_POLICY, can_dial=tcp_only)
    assert strict.candidates == () and strict.refused[0][1] == NOT_PUBLIC
    assert observed_refusal(OBSERVED, LAB) is None
    assert "not public" in str(observed_refusal(OBSERVED, DEFAULT_POLICY))
    assert "relayed" in str(observed_refusal(None, LAB))
    relayed = M(f"/ip4/198.51.100.1/tcp/1/p2p/{OTHER}/p2p-circuit")
    assert "relayed" in str(observed_refusal(relayed, LAB))
    assert "no observed IP" in str(observed_refusal(M("/dns4/a.example/tcp/1"), LAB))


def test_same_ip_sees_through_ipv4_mapped_addresses() -> None:
    assert same_ip(M("/ip6/::ffff:203.0.113.9/tcp/1"), OBSERVED)
    assert not same_ip(M("/ip6/2001:db8::1/tcp/1"), OBSERVED)
    assert not same_ip(M("/dns4/a.example/tcp/1"), OBSERVED)


def test_v2_picks_the_first_dialable_address() -> None:
    asked = [None, M("/ip4/10.0.0.1/tcp/1"), M("/ip4/203.0.113.9/udp/1/quic-v1"),
             M("/ip4/198.51.100.20/tcp/4001"), M("/ip4/203.0.113.9/tcp/4001")]
    choice = select_v2(asked, observed=OBSERVED, requester=REQUESTER, policy=LAB,
                       can_dial=tcp_only)
    assert (choice.index, choice.addr) == (3, M("/ip4/198.51.100.20/tcp/4001"))
    assert choice.needs_dial_data  # another IP than the observed one: pay first
    assert choice.refused == ((0, UNPARSABLE), (1, NOT_PUBLIC), (2, NO_TRANSPORT))
    assert choice.reason() == f"#0 {UNPARSABLE}; #1 {NOT_PUBLIC}; #2 {NO_TRANSPORT}"
    same = select_v2(asked[4:], observed=OBSERVED, requester=REQUESTER, policy=LAB,
                     can_dial=tcp_only)
    assert (same.index, same.needs_dial_data) == (0, False)
    nothing = select_v2(asked[:3], observed=OBSERVED, requester=REQUESTER, policy=LAB,
                        can_dial=tcp_only)
    assert (nothing.index, nothing.addr, len(nothing.refused)) == (None, None, 3)
    unobserved = select_v2(asked[4:], observed=None, requester=REQUESTER, policy=LAB,
                           can_dial=tcp_only)
    assert unobserved.needs_dial_data


def test_client_candidates_are_public_plain_and_unique() -> None:
    ours = [M("/ip4/192.168.1.2/tcp/4001"), M("/ip4/203.0.113.9/tcp/4001"),
            M(f"/ip4/203.0.113.9/tcp/4001/p2p/{REQUESTER}"), M("/ip4/203.0.113.9/udp/4001/quic-v1"),
            M(f"/ip4/198.51.100.1/tcp/1/p2p/{OTHER}/p2p-circuit"), M("/dns4/a.example/tcp/1")]
    assert probe_candidates(ours, LAB) == [M("/ip4/203.0.113.9/tcp/4001"),
                                           M("/ip4/203.0.113.9/udp/4001/quic-v1")]
    assert probe_candidates(ours, LAB, limit=1) == [M("/ip4/203.0.113.9/tcp/4001")]
    assert probe_candidates(ours, DEFAULT_POLICY) == []


# ---------------------------------------------------------------- rate limits
def test_rate_limits_per_peer_global_and_in_flight() -> None:
    limiter: RateLimiter[str] = RateLimiter(RateLimits(
        per_window=4, per_peer_per_window=2, max_in_flight_per_peer=1, dial_data_per_window=1,
        window=60.0))
    assert limiter.acquire("a", 0.0) is None
    assert limiter.acquire("a", 1.0) == PEER_CONCURRENCY
    limiter.release("a")
    assert limiter.acquire("a", 2.0) is None
    limiter.release("a")
    assert limiter.acquire("a", 3.0) == PEER_RATE
    for peer in ("b", "c"):
        assert limiter.acquire(peer, 4.0) is None
        limiter.release(peer)
    assert limiter.acquire("d", 5.0) == GLOBAL_RATE
    assert limiter.acquire("a", 60.0) is None  # a's first request has left the window
    limiter.release("a")
    assert limiter.acquire("d", 61.0) == GLOBAL_RATE
    assert limiter.acquire("d", 64.0) is None  # b's and c's have left too
    limiter.release("d")
    assert limiter.acquire_dial_data(0.0) and not limiter.acquire_dial_data(59.0)
    assert limiter.acquire_dial_data(60.0)
    limiter.release("nobody")  # harmless
    assert limiter.in_flight("a") == 0


@given(st.lists(st.tuples(st.integers(0, 30), st.floats(0, 10), st.booleans()), max_size=300))
def test_rate_limit_invariants(events: list[tuple[int, float, bool]]) -> None:
    limits = RateLimits(per_window=10, per_peer_per_window=3, max_in_flight_per_peer=2,
                        window=60.0)
    limiter: RateLimiter[int] = RateLimiter(limits)
    now = 0.0
    accepted: list[tuple[float, int]] = []
    for peer, step, release in events:
        now += step
        if limiter.acquire(peer, now) is None:
            accepted.append((now, peer))
            if release:
                limiter.release(peer)
        recent = [(t, p) for t, p in accepted if t > now - limits.window]
        assert len(recent) <= limits.per_window
        assert sum(1 for _, p in recent if p == peer) <= limits.per_peer_per_window
        assert limiter.in_flight(peer) <= limits.max_in_flight_per_peer
        assert limiter.tracked_peers <= limits.per_window
