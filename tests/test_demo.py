"""`make demo` runs flarelab.demo: it must keep working and keep telling the whole story."""

from __future__ import annotations

import subprocess
import sys


def test_demo_prints_the_story_and_the_trace() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flarelab.demo", "--size", "1MiB"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "A dialled B: tcp + /noise + /yamux/1.0.0" in out
    assert "signed peer record verified" in out
    assert "perf: sent 1 MiB" in out
    assert "over quic + /tls/1.0.0" in out
    # the printed trace has both nodes' spans, handshake messages included
    for name in ("noise.handshake", "noise.msg1 e", "identify.exchange", "ping", "perf",
                 "quic.handshake"):
        assert name in out, name
    # Project Flare on simnet: both private, relayed, then a direct connection each way
    for transport in ("tcp", "quic"):
        assert f"{transport}: AutoNAT said A private, B private" in out
    assert out.count("relayed, then success") == 2
    for name in ("relay.reserve", "relay.connect", "dcutr.upgrade", "dcutr.attempt",
                 "holepunch.dial", "SYNC"):
        assert name in out.split("Project Flare on")[1], name
