"""AutoNAT client and server drivers over in-memory streams (tier 2): the exchanges, the
server's refusals and limits, dial data, nonce checks, and bad input from either side.

The dial-backs themselves are stand-ins here (``dial_first``/``dial_fresh`` patched); the
loopback and simnet tests dial for real.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from autonat_helpers import (
    FakeConnection,
    FakeNetStream,
    FakeNode,
    Traces,
    events,
    pair,
    peer,
)
from opentelemetry.metrics import NoOpMeter

from flarelab.errors import DialError, FlarelabError, LimitExceededError, RemoteProtocolError
from flarelab.multiaddr import Multiaddr
from flarelab.pb import autonatv2 as pb2
from flarelab.protocols.autonat import attributes as attr
from flarelab.protocols.autonat import v1, v2
from flarelab.protocols.autonat.config import AutoNATConfig
from flarelab.protocols.autonat.messages import (
    V2DialResponse,
    V2DialStatus,
    V2ResponseStatus,
    encode_v1_request,
    encode_v1_response,
    encode_v2_dial_back,
    encode_v2_dial_data_response,
    encode_v2_request,
    encode_v2_response,
)
from flarelab.protocols.autonat.metrics import AutoNATMetrics
from flarelab.protocols.autonat.ratelimit import RateLimits
from flarelab.protocols.autonat.reachability import Observation
from flarelab.protocols.autonat.v1 import V1Server, exchange_v1, observation_of_v1
from flarelab.protocols.autonat.v2 import (
    DialBackReceiver,
    V2Server,
    _DialDataRefused,
    _judge,
    consistent_with,
    exchange_v2,
)
from flarelab.tracing import spans
from flarelab.wire import IncompleteError, encode_uvarint, length_prefixed

CLIENT, SERVER = peer(1), peer(2)
OBSERVED = Multiaddr("/ip4/203.0.113.9/tcp/51000")
HOME = Multiaddr("/ip4/203.0.113.9/tcp/4001")
ELSEWHERE = Multiaddr("/ip4/198.51.100.77/tcp/4001")
METRICS = AutoNATMetrics(NoOpMeter("test"))
Server = Callable[[trio.abc.Stream], Awaitable[Any]]
Client = Callable[[trio.abc.Stream], Awaitable[Any]]


async def converse(client: Client, server: Server) -> tuple[Any, Any]:
    """Run a client and a server against each other; return (client's, server's) result."""
    ours, theirs = pair()
    out: dict[str, Any] = {}

    async def serve() -> None:
        try:
            out["server"] = await server(theirs)
        finally:
            await theirs.aclose()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            out["client"] = await client(ours)
            await ours.aclose()
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None
    return out["client"], out.get("server")


def _first_leaf(exc: BaseException) -> BaseException:
    """The error a test asserts on inside (nested) exception groups: the first flarelab
    error, else the first of any kind (a side that gave up can break the other's stream)."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)
    return next((e for e in leaves if isinstance(e, FlarelabError)), leaves[0])


def v1_server(config: AutoNATConfig | None = None, **node: Any) -> V1Server:
    return V1Server(FakeNode(**node), config or AutoNATConfig(hide_dial_timing=False),  # type: ignore[arg-type]
                    METRICS)


def ask_v1(addrs: list[Multiaddr], local_peer: Any = CLIENT) -> Client:
    return lambda stream: exchange_v1(stream, local_peer=local_peer, addrs=addrs)


def serve_v1(server: V1Server, observed: Multiaddr | None = OBSERVED,
             requester: Any = CLIENT) -> Server:
    return lambda stream: server.serve(stream, requester=requester, observed=observed)


# ================================================================== v1
async def test_v1_dial_back_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[tuple[Any, list[Multiaddr]]] = []
    conn = FakeConnection(CLIENT, HOME)

    async def dial_first(node: Any, who: Any, addrs: list[Multiaddr], *,
                         stagger: float) -> tuple[Any, Multiaddr]:
        dialled.append((who, list(addrs)))
        return conn, addrs[0]

    monkeypatch.setattr(v1, "dial_first", dial_first)
    traces = Traces()
    server = v1_server(tracer=traces.tracer)

    async def traced(stream: trio.abc.Stream) -> Any:
        with traces.tracer.start_as_current_span(spans.STREAM_HANDLE):
            return await serve_v1(server)(stream)

    response, status = await converse(ask_v1([HOME, ELSEWHERE]), traced)
    assert (response.status, response.addr, status) == (0, HOME, v1.V1Status.OK)
    assert observation_of_v1(response) is Observation.PUBLIC
    assert dialled == [(CLIENT, [HOME])]  # the other IP was never dialled
    assert conn.closed  # the dial-back connection does not outlive the answer
    (handle,) = traces.named(spans.STREAM_HANDLE)
    assert events(handle) == [("message.received", "DIAL"), ("message.sent", "DIAL_RESPONSE")]
    assert handle.attributes[attr.STATUS] == "OK"


async def test_v1_failed_dial_is_answered_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock,
) -> None:
    async def dial_first(*args: Any, **kw: Any) -> Any:
        await trio.sleep(0.5)
        raise DialError("connection refused")

    monkeypatch.setattr(v1, "dial_first", dial_first)
    server = v1_server(AutoNATConfig(v1_dial_timeout=7.0))
    start = trio.current_time()
    response, _ = await converse(ask_v1([HOME]), serve_v1(server))
    assert (response.status, response.text) == (v1.V1Status.E_DIAL_ERROR, "dial failed")
    assert observation_of_v1(response) is Observation.PRIVATE
    assert trio.current_time() - start == pytest.approx(7.0)  # no timing leak


@pytest.mark.parametrize(("addrs", "observed", "requester_in_request", "status", "text"), [
    ([ELSEWHERE], OBSERVED, CLIENT, 101, "1 address not on the observed IP"),
    ([Multiaddr("/ip4/10.0.0.2/tcp/4001")], OBSERVED, CLIENT, 101, "not on the observed IP"),
    ([], OBSERVED, CLIENT, 101, "the request named no address"),
    ([HOME], None, CLIENT, 101, "relayed connection"),
    ([HOME], Multiaddr("/ip4/10.0.0.2/tcp/5"), CLIENT, 101, "is not public"),
    ([HOME], OBSERVED, SERVER, 200, "peer id in the request is not the requester's"),
])
async def test_v1_refusals(addrs: list[Multiaddr], observed: Multiaddr | None,
                           requester_in_request: Any, status: int, text: str) -> None:
    server = v1_server()

    async def client(stream: trio.abc.Stream) -> Any:
        return await exchange_v1(stream, local_peer=requester_in_request, addrs=addrs)

    response, _ = await converse(client, serve_v1(server, observed))
    assert response.status == status
    assert text in response.text


async def test_v1_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    async def dial_first(node: Any, who: Any, addrs: list[Multiaddr], **kw: Any) -> Any:
        return FakeConnection(who, HOME), addrs[0]

    monkeypatch.setattr(v1, "dial_first", dial_first)
    config = AutoNATConfig(hide_dial_timing=False, v1_limits=RateLimits(
        per_window=4, per_peer_per_window=3, max_in_flight_per_peer=1))
    server = v1_server(config)
    statuses = [(await converse(ask_v1([HOME]), serve_v1(server)))[0] for _ in range(4)]
    assert [r.status for r in statuses] == [0, 0, 0, 101]
    assert statuses[-1].text == "too many dials (peer rate limit)"
    other, _ = await converse(ask_v1([HOME], peer(9)), serve_v1(server, requester=peer(9)))
    assert other.status == 0  # another peer still gets an answer
    third, _ = await converse(ask_v1([HOME], peer(10)), serve_v1(server, requester=peer(10)))
    assert third.text == "too many dials (global rate limit)"


@pytest.mark.parametrize(("raw", "text"), [
    (length_prefixed(b"\x08\x01"), "expected a DIAL message"),
    (length_prefixed(b"\xff\xff"), "malformed"),
    (encode_uvarint(100_000), "exceeds the limit"),
])
async def test_v1_server_answers_bad_requests(raw: bytes, text: str) -> None:
    server = v1_server()

    async def client(stream: trio.abc.Stream) -> Any:
        await stream.send_all(raw)
        data = await v1.StreamReader(stream).read_length_prefixed(4096)
        return v1.decode_v1_response(data)

    response, status = await converse(client, serve_v1(server))
    assert (response.status, status) == (v1.V1Status.E_BAD_REQUEST, v1.V1Status.E_BAD_REQUEST)
    assert text in response.text


async def test_v1_server_gives_up_on_a_silent_or_truncated_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = v1_server(AutoNATConfig(server_stream_timeout=3.0))
    _silent, theirs = pair()
    with pytest.raises(RemoteProtocolError, match=r"no AutoNAT request within 3\.0 s"):
        await serve_v1(server)(theirs)
    ours, theirs = pair()
    await ours.send_all(length_prefixed(encode_v1_request(CLIENT, [HOME]))[:-2])
    await ours.send_eof()
    with pytest.raises(IncompleteError) as info:
        await serve_v1(server)(theirs)
    assert info.value.peer == CLIENT


@pytest.mark.parametrize(("answer", "error"), [
    (length_prefixed(encode_v1_request(SERVER, [HOME])), RemoteProtocolError),
    (length_prefixed(b"\x0a\x01"), RemoteProtocolError),
    (encode_uvarint(9000), LimitExceededError),
    (b"", IncompleteError),
])
async def test_v1_client_refuses_bad_answers(answer: bytes, error: type[Exception]) -> None:
    async def server(stream: trio.abc.Stream) -> None:
        await v1.StreamReader(stream).read_length_prefixed(8192)
        await stream.send_all(answer)

    with pytest.raises(error):
        await converse(ask_v1([HOME]), server)


def test_v1_observations() -> None:
    def response(status: int) -> Any:
        return v1.decode_v1_response(encode_v1_response(status))

    assert observation_of_v1(response(100)) is Observation.PRIVATE
    assert observation_of_v1(response(101)) is None  # refused: no verdict
    for status in (200, 300, 999):
        assert observation_of_v1(response(status)) is Observation.FAILED


# ================================================================== v2
class V2Scene:
    """A v2 server whose dial-backs reach a client's DialBackReceiver in memory."""

    def __init__(self, nursery: trio.Nursery, *, config: AutoNATConfig | None = None,
                 fresh: bool = True, answer_dial_back: bool = True) -> None:
        self.config = config or AutoNATConfig(amplification_dial_wait=0.0)
        self.traces = Traces()
        self.receiver = DialBackReceiver(timeout=5.0, tracer=self.traces.tracer)
        self.server = V2Server(FakeNode(tracer=self.traces.tracer), self.config,  # type: ignore[arg-type]
                               METRICS)
        self.nursery = nursery
        self.fresh = fresh
        self.answer_dial_back = answer_dial_back
        self.request_conn = FakeConnection(SERVER, HOME, direction="outbound")
        self.dialled: list[Multiaddr] = []
        self.conns: list[FakeConnection] = []

    async def dial_fresh(self, node: Any, who: Any, addr: Multiaddr) -> FakeConnection:
        self.dialled.append(addr)
        if not self.fresh:  # a server that answers over the connection we already have
            conn = self.request_conn
        else:
            conn = FakeConnection(SERVER, Multiaddr("/ip4/192.168.1.2/tcp/4001"),
                                  opened_at=trio.current_time())
        conn.serve = self.receiver.handle if self.answer_dial_back else _ignore
        conn.nursery = self.nursery
        self.conns.append(conn)
        return conn

    async def probe(self, addrs: list[Multiaddr], *, observed: Multiaddr | None = OBSERVED,
                    client: Client | None = None) -> tuple[Any, Any, v2.PendingDialBack]:
        nonce = 0x1234_5678_9ABC_DEF0
        pending = self.receiver.expect(nonce, trio.current_time())
        pending.request_connection = self.request_conn.id

        async def ask(stream: trio.abc.Stream) -> Any:
            return await exchange_v2(stream, addrs=addrs, nonce=nonce,
                                     max_dial_data=self.config.max_dial_data)

        try:
            result, answer = await converse(client or ask, lambda s: self.server.serve(
                s, requester=CLIENT, observed=observed))
        finally:
            self.receiver.forget(nonce)
        return result, answer, pending


async def _ignore(stream: Any) -> None:
    await stream.aclose()


@pytest.fixture
async def scene(monkeypatch: pytest.MonkeyPatch) -> Any:
    async with trio.open_nursery() as nursery:
        made: list[V2Scene] = []

        def make(**kw: Any) -> V2Scene:
            scene = V2Scene(nursery, **kw)
            monkeypatch.setattr(v2, "dial_fresh", scene.dial_fresh)
            made.append(scene)
            return scene

        yield make
        nursery.cancel_scope.cancel()


async def test_v2_nonce_comes_back_on_a_fresh_connection(scene: Any) -> None:
    s = scene()
    (response, paid), answer, pending = await s.probe([HOME])
    assert response == answer == V2DialResponse(V2ResponseStatus.OK, 0, V2DialStatus.OK)
    assert paid == 0 and s.dialled == [HOME]
    assert pending.done.is_set() and pending.fresh
    assert all(c.closed for c in s.conns)
    result = _judge(SERVER, [HOME], response, pending, paid)
    assert (result.addr, result.observation, result.outcome) == (
        HOME, Observation.PUBLIC, spans.OUTCOME_SUCCESS)
    received, sent = sorted(s.traces.named(spans.AUTONAT_DIAL_BACK),
                            key=lambda sp: sp.attributes[spans.LIBP2P_ROLE] != "responder")
    assert received.attributes[spans.LIBP2P_ROLE] == spans.ROLE_RESPONDER  # the client's
    assert received.attributes[attr.NONCE_VERIFIED] is True
    assert events(received) == [("message.received", "DialBack"),
                                ("message.sent", "DialBackResponse")]
    assert sent.attributes[spans.LIBP2P_ROLE] == spans.ROLE_INITIATOR  # the server's
    assert events(sent) == [("message.sent", "DialBack"), ("message.received", "DialBackResponse")]
    assert sent.attributes[spans.LIBP2P_OUTCOME] == spans.OUTCOME_SUCCESS


async def test_v2_a_dial_back_over_an_existing_connection_proves_nothing(scene: Any) -> None:
    """py-libp2p answered over the connection it had and reported closed ports reachable."""
    s = scene(fresh=False)
    (response, paid), _, pending = await s.probe([HOME])
    assert response.dial_status == V2DialStatus.OK  # the server believes it worked
    assert pending.done.is_set() and not pending.fresh
    result = _judge(SERVER, [HOME], response, pending, paid)
    assert result.observation is None
    assert result.outcome == spans.OUTCOME_PROTOCOL_ERROR
    assert "existing connection" in result.reason


async def test_v2_the_client_trusts_the_nonce_not_the_claim(scene: Any) -> None:
    s = scene(answer_dial_back=False)
    (response, paid), _, pending = await s.probe([HOME])
    assert response.dial_status == V2DialStatus.E_DIAL_BACK_ERROR
    result = _judge(SERVER, [HOME], response, pending, paid)
    assert result.observation is None and "no dial-back with our nonce" in result.reason
    lying = V2DialResponse(V2ResponseStatus.OK, 0, V2DialStatus.OK)
    assert _judge(SERVER, [HOME], lying, pending, 0).observation is None


async def test_v2_dial_data_for_another_ip(scene: Any, autojump_clock: trio.testing.MockClock
                                           ) -> None:
    s = scene(config=AutoNATConfig(amplification_dial_wait=3.0))
    traced = Traces()

    async def serve(stream: trio.abc.Stream) -> Any:
        with traced.tracer.start_as_current_span(spans.STREAM_HANDLE):
            return await s.server.serve(stream, requester=CLIENT, observed=OBSERVED)

    nonce = 77
    s.receiver.expect(nonce, trio.current_time())

    async def ask(stream: trio.abc.Stream) -> Any:
        return await exchange_v2(stream, addrs=[ELSEWHERE], nonce=nonce)

    (response, paid), _ = await converse(ask, serve)
    assert response.status == V2ResponseStatus.OK and s.dialled == [ELSEWHERE]
    assert 30_000 <= paid <= 100_000
    (handle,) = traced.named(spans.STREAM_HANDLE)
    assert events(handle) == [("message.received", "DialRequest"),
                              ("message.sent", "DialDataRequest"),
                              ("message.received", "DialDataResponse"),
                              ("message.sent", "DialResponse")]
    data_event = handle.events[2].attributes
    assert data_event is not None
    assert data_event[attr.DIAL_DATA_BYTES] == paid
    assert data_event[attr.CHUNKS] == -(-paid // 4096)


async def test_v2_client_refuses_to_pay_too_much(scene: Any) -> None:
    s = scene(config=AutoNATConfig(amplification_dial_wait=0.0, max_dial_data=10_000))
    with pytest.raises(_DialDataRefused, match="we pay at most 10000"):
        await s.probe([ELSEWHERE])
    assert s.dialled == []


async def _request_then(stream: trio.abc.Stream, chunks: list[bytes]) -> None:
    await stream.send_all(length_prefixed(encode_v2_request([ELSEWHERE], 1)))
    reader = v2.StreamReader(stream)
    await reader.read_length_prefixed(8192)  # the DialDataRequest
    await stream.send_all(b"".join(chunks))  # in one go: the server may hang up early


@pytest.mark.parametrize(("chunks", "match"), [
    ([length_prefixed(encode_v2_dial_data_response(b"x" * 50))] * 3, "too small"),
    ([length_prefixed(pb2.Message(dialDataResponse=pb2.DialDataResponse(data=b"x" * 4102))
                      .encode())], "at most 4096"),
    ([length_prefixed(encode_v2_request([HOME], 2))], "expected DialDataResponse"),
])
async def test_v2_server_refuses_dial_data_abuse(scene: Any, chunks: list[bytes],
                                                 match: str) -> None:
    s = scene()
    with pytest.raises(RemoteProtocolError, match=match):
        await converse(lambda st: _request_then(st, chunks), lambda st: s.server.serve(
            st, requester=CLIENT, observed=OBSERVED))
    assert s.dialled == []


async def test_v2_refusals_and_rejections(scene: Any) -> None:
    limits = RateLimits(per_window=10, per_peer_per_window=2, max_in_flight_per_peer=1,
                        dial_data_per_window=1)
    s = scene(config=AutoNATConfig(amplification_dial_wait=0.0, v2_limits=limits))
    (refused, _), _, _ = await s.probe([Multiaddr("/ip4/10.0.0.1/tcp/1"),
                                        Multiaddr("/ip4/198.51.100.5/udp/1/quic-v1")])
    assert refused.status == V2ResponseStatus.E_DIAL_REFUSED
    (first, _), _, _ = await s.probe([ELSEWHERE])
    assert first.status == V2ResponseStatus.OK
    (rejected, _), _, _ = await s.probe([HOME])  # third from this peer in the window
    assert rejected.status == V2ResponseStatus.E_REQUEST_REJECTED
    s.server.limiter.limits = RateLimits(per_window=10, per_peer_per_window=9,
                                         dial_data_per_window=1)
    (no_data, _), _, _ = await s.probe([ELSEWHERE])  # the dial-data budget is spent
    assert no_data.status == V2ResponseStatus.E_REQUEST_REJECTED
    for response in (refused, rejected):
        result = _judge(SERVER, [HOME], response, v2.PendingDialBack(1, 0.0), 0)
        assert result.observation is None and result.outcome == spans.OUTCOME_FAILED


async def test_v2_server_wants_a_dial_request_first(scene: Any) -> None:
    s = scene()

    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(length_prefixed(encode_v2_response(200)))

    with pytest.raises(RemoteProtocolError, match="expected a DialRequest"):
        await converse(client, lambda st: s.server.serve(st, requester=CLIENT,
                                                         observed=OBSERVED))


@pytest.mark.parametrize(("answer", "match"), [
    (encode_v2_request([HOME], 1), "expected a DialResponse"),
    (b"\x1a\x04\x08\x05\x10\x01", "DialDataRequest for address #5"),
])
async def test_v2_client_refuses_bad_answers(answer: bytes, match: str) -> None:
    async def server(stream: trio.abc.Stream) -> None:
        await v2.StreamReader(stream).read_length_prefixed(8192)
        await stream.send_all(length_prefixed(answer))

    with pytest.raises(RemoteProtocolError, match=match):
        await converse(lambda st: exchange_v2(st, addrs=[HOME], nonce=1), server)


def test_v2_judging_the_response() -> None:
    pending = v2.PendingDialBack(1, 0.0)

    def judge(status: int, idx: int, dial_status: int) -> Any:
        return _judge(SERVER, [HOME], V2DialResponse(status, idx, dial_status), pending, 0)

    assert judge(200, 0, 100).observation is Observation.PRIVATE
    assert judge(200, 3, 100).outcome == spans.OUTCOME_PROTOCOL_ERROR  # index out of range
    assert judge(200, 0, 0).outcome == spans.OUTCOME_PROTOCOL_ERROR  # UNUSED with OK
    assert judge(0, 0, 0).outcome == spans.OUTCOME_FAILED
    pending.done.set()
    pending.fresh = True
    pending.local_addr = Multiaddr("/ip4/192.168.1.2/udp/4001/quic-v1")
    wrong_kind = judge(200, 0, 200)  # a QUIC dial-back cannot be a test of a TCP address
    assert wrong_kind.observation is None and "cannot be" in wrong_kind.reason
    pending.local_addr = Multiaddr("/ip4/192.168.1.2/tcp/4001")
    assert judge(200, 0, 101).observation is Observation.PUBLIC  # nonce got through anyway


def test_consistency_of_dial_back_addresses() -> None:
    assert consistent_with(Multiaddr("/ip4/10.0.0.1/tcp/1"), HOME)
    assert not consistent_with(Multiaddr("/ip6/::1/tcp/1"), HOME)
    assert consistent_with(Multiaddr("/ip4/10.0.0.1/udp/1/quic-v1"),
                           Multiaddr(f"/ip4/1.2.3.4/udp/9/quic-v1/p2p/{CLIENT}"))


async def test_receiver_refuses_unknown_and_repeated_nonces() -> None:
    receiver = DialBackReceiver(timeout=1.0)
    conn = FakeConnection(SERVER, HOME)

    async def deliver(nonce: int) -> None:
        ours, theirs = pair()
        await ours.send_all(length_prefixed(encode_v2_dial_back(nonce)))
        await receiver.handle(FakeNetStream(theirs, conn))  # type: ignore[arg-type]

    with pytest.raises(RemoteProtocolError, match="nonce we are not waiting for"):
        await deliver(5)
    pending = receiver.expect(6, 0.0)
    await deliver(6)
    assert pending.done.is_set() and pending.local_addr == HOME
    with pytest.raises(RemoteProtocolError, match="repeated nonce"):
        await deliver(6)
    assert receiver.unexpected == 2
    ours, theirs = pair()
    await ours.send_all(b"\x03\xff\xff\xff")
    with pytest.raises(RemoteProtocolError, match="malformed DialBack"):
        await receiver.handle(FakeNetStream(theirs, conn))  # type: ignore[arg-type]
    for nonce in range(100, 163):
        receiver.expect(nonce, 0.0)
    with pytest.raises(Exception, match="in flight"):
        receiver.expect(999, 0.0)
