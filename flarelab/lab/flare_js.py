"""js-libp2p peers in the lab: ``interop/js/peer.mjs`` in a namespace.

    async with js_relay(lab, "relay") as relay:
        print(relay.peer_id, relay.addrs)        # full multiaddrs ending /p2p/<id>

:func:`js_peer` runs ``ip netns exec <ns> node --import ./polyfill.mjs peer.mjs ARGS`` in
the repository's ``interop/js`` (``npm ci`` there first: ``make setup``) and reads its
JSON-lines events (see interop/js/README.md); :func:`js_relay` is one with
``--relay-server``, listening on TCP and QUIC port 4001 of every address of the host.
Leaving the block stops the peer: stdin closed, then SIGTERM, SIGKILL.
:func:`run_js_pair` is DESIGN.md's experiment: js-libp2p as A and B, DCUtR on, through a
relay in the lab.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from .errors import LabSetupError, LabUnavailableError
from .lab import Lab

if TYPE_CHECKING:
    from ..flare.report import FlareTrial

__all__ = ["JS_DIR", "JsRelay", "js_available", "js_peer", "js_relay", "run_js_pair"]

#: the js-libp2p interop peer's directory in a checkout of the repository
JS_DIR: Final = Path(__file__).resolve().parents[2] / "interop" / "js"
_MAX_LINE: Final = 1 << 20
_STDERR_KEEP: Final = 16_000


def js_available(js_dir: Path = JS_DIR) -> str | None:
    """Return why the js relay cannot run here (None if it can)."""
    if shutil.which("node") is None:
        return "`node` is not on PATH (Node >= 20 is needed)"
    if not (js_dir / "node_modules" / "libp2p" / "package.json").is_file():
        return f"{js_dir / 'node_modules'} is missing: run `make setup` (npm ci in {js_dir})"
    return None


@dataclass
class JsRelay:
    """A running js-libp2p relay: its peer id, addresses and events so far."""

    process: trio.Process
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)

    changed: trio.Event = field(default_factory=trio.Event)

    def count(self, name: str) -> int:
        """How many events called ``name`` it printed."""
        return sum(1 for e in self.events if e.get("event") == name)

    async def wait_for(self, test: Any) -> dict[str, Any]:
        """Wait for an event (old or new) that ``test(event)`` accepts; return it."""
        seen = 0
        while True:
            for event in self.events[seen:]:
                if test(event):
                    return event
            seen = len(self.events)
            await self.changed.wait()


async def _read_events(relay: JsRelay, listening: trio.Event) -> None:
    stdout = relay.process.stdout
    assert stdout is not None
    buffer = bytearray()
    while chunk := await stdout.receive_some(65536):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = bytes(buffer[:end]), buffer[end + 1:]
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    relay.events.append(event)
                    relay.changed.set()
                    relay.changed = trio.Event()
                    if event.get("event") == "listening":
                        relay.peer_id = str(event.get("peerId", ""))
                        relay.addrs = [str(a) for a in event.get("addrs", [])]
                        listening.set()
        if len(buffer) > _MAX_LINE:
            buffer.clear()


async def _read_stderr(relay: JsRelay) -> None:
    stderr = relay.process.stderr
    assert stderr is not None
    while chunk := await stderr.receive_some(65536):
        relay.stderr += chunk
        del relay.stderr[:-_STDERR_KEEP]


@contextlib.asynccontextmanager
async def js_relay(lab: Lab, host: str = "relay", *, port: int = 4001,
                   start_timeout: float = 30.0) -> AsyncIterator[JsRelay]:
    """Run a js-libp2p relay on ``host`` of ``lab`` for the block (see the module doc)."""
    listen: list[str] = []
    for ip in lab.topology.host(host).addresses():
        kind = "ip6" if ":" in ip else "ip4"
        listen += ["--listen", f"/{kind}/{ip}/tcp/{port}",
                   "--listen", f"/{kind}/{ip}/udp/{port}/quic-v1"]
    async with js_peer(lab, host, "--relay-server", *listen,
                       start_timeout=start_timeout) as relay:
        yield relay


@contextlib.asynccontextmanager
async def js_peer(lab: Lab, host: str, *args: str,
                  start_timeout: float = 30.0) -> AsyncIterator[JsRelay]:
    """Run ``peer.mjs ARGS`` on ``host`` of ``lab`` for the block; it is up (``listening``)
    when the block starts."""
    problem = js_available()
    if problem:
        raise LabUnavailableError(f"a js-libp2p peer cannot run: {problem}")
    node = shutil.which("node")
    assert node is not None
    argv = ["ip", "netns", "exec", lab.netns(host), node, "--import", "./polyfill.mjs",
            "peer.mjs", *args]
    process = await trio.lowlevel.open_process(
        argv, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    relay = JsRelay(process)
    listening = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_events, relay, listening)
            nursery.start_soon(_read_stderr, relay)
            with trio.move_on_after(start_timeout):
                await listening.wait()
            if not listening.is_set():
                raise LabSetupError(f"the js-libp2p peer on {host} did not start",
                                    stderr=relay.stderr.decode(errors="replace"))
            try:
                yield relay
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process)
                nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            _kill_group(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


async def _stop(process: trio.Process, grace: float = 5.0) -> None:
    if process.stdin is not None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await process.stdin.aclose()
    with trio.move_on_after(grace):
        await process.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.returncode is not None:
            break
        _kill_group(process.pid, sig)
        with trio.move_on_after(2.0):
            await process.wait()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        import os

        os.killpg(pgid, sig)


def _direct_to(peer: str) -> Any:
    def test(event: dict[str, Any]) -> bool:
        return (event.get("event") == "connection:open" and event.get("peerId") == peer
                and not event.get("limited") and "p2p-circuit" not in
                str(event.get("remoteAddr", "")))
    return test


async def run_js_pair(lab: Lab, relay_addr: str, *, trials: int = 10, first_port: int = 4300,
                      wait: float = 15.0) -> list[FlareTrial]:
    """js-libp2p 3.3 as A and B (``--dcutr``) through the relay at ``relay_addr``.

    B listens on TCP and through the relay; A dials B's circuit address and pings; then
    both wait ``wait`` seconds for DCUtR to open a direct connection. DESIGN.md: js-libp2p
    relays fine here but never goes direct (it drops reserved-range addresses and dials
    TCP from ephemeral ports).
    """
    from ..flare.report import FlareTrial

    out = []
    nat_a, nat_b = (lab.topology.nat_of(h) for h in ("a", "b"))
    for index in range(trials):
        await lab.flush_conntrack()
        port = first_port + index
        a_ip, b_ip = lab.topology.host("a").ip, lab.topology.host("b").ip
        common: dict[str, Any] = {"transport": "tcp", "trial": index,
                                  "nat_a": nat_a.value if nat_a else None,
                                  "nat_b": nat_b.value if nat_b else None}
        async with js_peer(lab, "b", "--dcutr", "--listen", f"/ip4/{b_ip}/tcp/{port}",
                           "--listen", f"{relay_addr}/p2p-circuit") as b:
            circuit = f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}"
            relayed = False
            for _ in range(5):  # B's reservation may still be on its way
                async with js_peer(lab, "a", "--dcutr", "--listen",
                                   f"/ip4/{a_ip}/tcp/{port + 1000}", "--dial", circuit,
                                   "--ping", "1", "--timeout", "5000") as a:
                    done = await a.wait_for(lambda e: e.get("event") == "done")
                    if not done.get("ok"):
                        await trio.sleep(0.5)
                        continue
                    relayed = True
                    started = trio.current_time()
                    with trio.move_on_after(wait):
                        await b.wait_for(_direct_to(a.peer_id))
                    direct = any(_direct_to(a.peer_id)(e) for e in b.events) or any(
                        _direct_to(b.peer_id)(e) for e in a.events)
                    elapsed = trio.current_time() - started
                    errors = [e.get("message", "") for e in [*a.events, *b.events]
                              if e.get("event") == "error"]
                    reason = "" if direct else (
                        f"no direct connection within {wait:g} s of the relayed one"
                        + (f" ({errors[0]})" if errors else ""))
                    out.append(FlareTrial(outcome="success" if direct else "failed",
                                          direct=direct, reason=reason,
                                          elapsed=elapsed if direct else None, **common))
                    break
            if not relayed:
                out.append(FlareTrial(outcome="not_started", direct=False,
                                      reason="A could not reach B through the relay",
                                      **common))
    return out
