"""The ``flarelab`` command over quic-v1, run as a user runs it: real processes on loopback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flarelab.tracing.export import read_trace

CLI = [sys.executable, "-m", "flarelab.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def quic_server() -> Iterator[list[str]]:
    """A `flarelab node` listening on QUIC only; yields its peer id and address."""
    proc = subprocess.Popen(
        [*CLI, "node", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        yield [proc.stdout.readline().strip() for _ in range(2)]
    finally:
        proc.terminate()
        proc.communicate(timeout=20)  # waits, and closes the pipes


def test_ping_and_perf_over_quic(quic_server: list[str], tmp_path: Path) -> None:
    peer_id, addr = quic_server
    assert addr.startswith("/ip4/127.0.0.1/udp/") and f"/quic-v1/p2p/{peer_id}" in addr
    trace = tmp_path / "trace.jsonl"
    done = run("ping", addr, "-n", "3", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    assert f"connected to {peer_id} via {addr.split('/p2p/')[0]}" in done.stdout
    assert "ping 3:" in done.stdout
    names = {r.name for r in read_trace(trace)}
    assert {"node.dial", "quic.dial", "quic.handshake", "quic.connection", "ping"} <= names

    done = run("perf", addr, "--upload", "3MiB", "--download", "2MiB")
    assert done.returncode == 0, done.stderr
    assert "uploaded 3145728 bytes" in done.stdout
    assert "downloaded 2097152 bytes" in done.stdout


def test_quic_failures_exit_non_zero(quic_server: list[str]) -> None:
    peer_id, addr = quic_server
    other = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
    done = run("ping", addr.replace(peer_id, other), "--timeout", "10")
    assert done.returncode == 1
    assert "/tls/1.0.0" in done.stderr and other in done.stderr
    done = run("ping", addr, "--no-quic", "--timeout", "10")
    assert done.returncode == 1
    assert "no dialable address" in done.stderr
