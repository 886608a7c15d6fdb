"""The ``flarelab`` command, run as a user runs it: real processes on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flarelab.cli import parse_size
from flarelab.tracing.export import read_trace

CLI = [sys.executable, "-m", "flarelab.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def server() -> Iterator[list[str]]:
    """A `flarelab node` process; yields the lines it printed (peer id, then addresses)."""
    proc = subprocess.Popen(
        [*CLI, "node", "--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip6/::1/tcp/0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        yield lines
    finally:
        proc.terminate()
        proc.communicate(timeout=20)  # also closes the pipes


def test_parse_size() -> None:
    assert parse_size("1048576") == 1 << 20
    assert parse_size("10MiB") == 10 << 20
    assert parse_size("10MB") == 10_000_000
    assert parse_size("1.5k") == 1500
    with pytest.raises(Exception, match="not a size"):
        parse_size("ten")


def test_node_prints_peer_id_and_full_addresses(server: list[str]) -> None:
    peer_id, *addrs = server
    assert peer_id.startswith("12D3KooW")
    assert addrs[0].startswith("/ip4/127.0.0.1/tcp/")
    assert addrs[1].startswith("/ip6/::1/tcp/")
    assert all(a.endswith(f"/p2p/{peer_id}") for a in addrs)


def test_ping_perf_identify(server: list[str], tmp_path: Path) -> None:
    peer_id, addr4, addr6 = server
    trace = tmp_path / "trace.jsonl"
    done = run("ping", addr4, "-n", "2", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    assert "ping 2:" in done.stdout and f"connected to {peer_id}" in done.stdout
    names = {r.name for r in read_trace(trace)}
    assert {"node.dial", "noise.handshake", "ping"} <= names

    done = run("ping", addr6, "-n", "1")
    assert done.returncode == 0, done.stderr

    done = run("perf", addr4, "--upload", "1MiB", "--download", "2MiB")
    assert done.returncode == 0, done.stderr
    assert "uploaded 1048576 bytes" in done.stdout
    assert "downloaded 2097152 bytes" in done.stdout

    done = run("identify", addr4, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["peer_id"] == peer_id
    assert "/ipfs/ping/1.0.0" in info["protocols"]
    assert info["signed_peer_record"]["verified"] is True

    shown = run("trace", "show", str(trace))
    assert shown.returncode == 0 and "noise.handshake" in shown.stdout


def test_failures_exit_non_zero(server: list[str]) -> None:
    peer_id, addr4, _ = server
    # an address nobody listens on
    done = run("ping", "/ip4/127.0.0.1/tcp/1", "--timeout", "10")
    assert done.returncode == 1
    assert "could not connect" in done.stderr
    # the right address, the wrong peer id: the Noise handshake proves who answered
    other = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
    wrong = addr4.replace(peer_id, other)
    done = run("ping", wrong, "--timeout", "10")
    assert done.returncode == 1
    assert "/noise" in done.stderr and other in done.stderr
    done = run("ping", "not-an-address")
    assert done.returncode == 1


async def test_a_cli_relay_carries_a_cli_ping_to_a_peer_behind_it() -> None:
    """`flarelab node --serve-relay` relays; `flarelab ping .../p2p-circuit/p2p/B` dials
    through it (the relayed connection is limited, ping allows that)."""
    import trio

    from flarelab.node import Node, NodeConfig
    from flarelab.protocols.relay import RelayTransport

    relay = await trio.lowlevel.open_process(
        [*CLI, "node", "--serve-relay", "--no-quic", "--listen", "/ip4/127.0.0.1/tcp/0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert relay.stdout is not None
        buffer = b""
        with trio.fail_after(30):
            while buffer.count(b"\n") < 2:
                chunk = await relay.stdout.receive_some()
                assert chunk, "the relay exited early"
                buffer += chunk
        relay_addr = buffer.decode().splitlines()[1]
        config = NodeConfig(listen_addrs=["/ip4/127.0.0.1/tcp/0"], enable_quic=False)
        async with Node(config) as b:
            RelayTransport.install(b)
            with trio.fail_after(20):
                await b.listen(f"{relay_addr}/p2p-circuit")
            target = f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}"
            done = await trio.to_thread.run_sync(lambda: run("ping", target, "-n", "2"))
        assert done.returncode == 0, done.stderr
        assert f"connected to {b.peer_id}" in done.stdout and "ping 2:" in done.stdout
        assert "p2p-circuit" in done.stdout  # the connection went through the relay
    finally:
        relay.terminate()
        with trio.fail_after(20):
            await relay.wait()
