"""Run real js-libp2p peers (``interop/js/peer.mjs``) from trio tests.

::

    async with run_js_peer("--muxer", "yamux") as listener:
        async with run_js_peer("--dial", listener.addr, "--ping", "3",
                               "--exit-after-actions") as dialer:
            ping = await dialer.next_event("ping")
            assert await dialer.wait() == 0

Every peer prints one JSON object per line on stdout (the events, documented in
``interop/js/README.md``) and human logs on stderr. :class:`JsPeer` collects both;
every failure it raises is a :class:`JsPeerError` (an ``AssertionError``) whose message
shows the peer's arguments, exit code, recent events and the tail of its stderr.

These peers are real processes on real sockets: tests that use them must run on trio's
real clock (no ``autojump_clock``), and every wait here is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio

__all__ = [
    "JS_DIR",
    "JsPeer",
    "JsPeerError",
    "JsSetupError",
    "require_js_setup",
    "run_js_peer",
]

JS_DIR = Path(__file__).resolve().parents[2] / "interop" / "js"

Event = dict[str, Any]

_MAX_LINE = 1 << 20  # a longer stdout line is a bug in peer.mjs, not an event
_STDERR_KEEP = 64 * 1024  # bytes of stderr kept for assertion messages
_STOP_GRACE = 5.0  # seconds a peer gets to stop after stdin closes
_KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL


class JsSetupError(RuntimeError):
    """Node or the npm packages of interop/js are missing."""


class JsPeerError(AssertionError):
    """A JS peer did not do what the test expected (its stderr is in the message)."""


def require_js_setup(js_dir: Path = JS_DIR) -> str:
    """Return the path of ``node``, or raise JsSetupError saying how to install what is missing."""
    node = shutil.which("node")
    if node is None:
        raise JsSetupError("`node` is not on PATH: the js-libp2p interop tests need Node >= 20")
    if not (js_dir / "node_modules" / "libp2p" / "package.json").is_file():
        raise JsSetupError(
            f"{js_dir / 'node_modules'} is missing: run `make setup` (it runs `npm ci` in {js_dir})"
        )
    return node


class JsPeer:
    """A running js-libp2p peer: its events so far, its stderr, and ways to wait for both."""

    def __init__(self, process: trio.Process, args: tuple[str, ...]) -> None:
        self.process = process
        self.args = args
        self.events: list[Event] = []
        self.peer_id: str = ""
        self.addrs: list[str] = []
        self._consumed: set[int] = set()
        self._stderr = bytearray()
        self._stdout_done = False
        self._changed = trio.Event()

    # -- what the peer said ------------------------------------------------------------

    @property
    def addr(self) -> str:
        """Return the first listen address (with its /p2p/ part)."""
        if not self.addrs:
            raise JsPeerError(self.describe("the peer has no listen address yet"))
        return self.addrs[0]

    @property
    def stderr(self) -> str:
        """Return the captured stderr (its last 64 KiB)."""
        return self._stderr.decode("utf-8", errors="replace")

    @property
    def returncode(self) -> int | None:
        """Return the exit code, or None while the peer runs."""
        return self.process.returncode

    def events_named(self, name: str) -> list[Event]:
        """Return every event with this name so far, consumed or not."""
        return [ev for ev in self.events if ev.get("event") == name]

    async def next_event(
        self,
        name: str,
        timeout: float = 10.0,  # noqa: ASYNC109 -- a timeout here explains what the peer did
        where: Callable[[Event], bool] | None = None,
    ) -> Event:
        """Return the oldest event called ``name`` (and matching ``where``) not yet returned.

        Each event is returned once, so three calls for "ping" give three pings. Raise
        JsPeerError if none comes within ``timeout`` seconds or the peer stops printing.
        """
        with trio.move_on_after(timeout):
            while True:
                for index, event in enumerate(self.events):
                    if (
                        index not in self._consumed
                        and event.get("event") == name
                        and (where is None or where(event))
                    ):
                        self._consumed.add(index)
                        return event
                if self._stdout_done:
                    await self._reap()
                    raise JsPeerError(self.describe(f"the peer exited without a {name!r} event"))
                await self._changed.wait()
        raise JsPeerError(self.describe(f"no {name!r} event within {timeout} s"))

    # -- telling the peer things ---------------------------------------------------------

    async def send_command(self, command: Mapping[str, Any]) -> None:
        """Write one JSON command line to the peer's stdin (see README: stdin commands)."""
        assert self.process.stdin is not None
        line = json.dumps(dict(command)).encode() + b"\n"
        try:
            await self.process.stdin.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
            raise JsPeerError(self.describe(f"cannot send {command!r}: stdin is closed")) from err

    async def close_stdin(self) -> None:
        """Close the peer's stdin, which asks it to stop (unless it runs with --ignore-stdin)."""
        if self.process.stdin is not None:
            await self.process.stdin.aclose()

    def terminate(self) -> None:
        """Send SIGTERM, which asks the peer to stop."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 10.0) -> int:  # noqa: ASYNC109 -- as next_event
        """Wait for the peer to exit and return its exit code."""
        with trio.move_on_after(timeout):
            return await self._reap()
        raise JsPeerError(self.describe(f"the peer did not exit within {timeout} s"))

    async def stop(self, timeout: float = _STOP_GRACE) -> int:  # noqa: ASYNC109 -- as next_event
        """Close stdin and wait for a clean exit; return the exit code."""
        await self.close_stdin()
        return await self.wait(timeout)

    # -- diagnostics ---------------------------------------------------------------------

    def describe(self, problem: str, last_events: int = 20) -> str:
        """Explain a problem with the peer's arguments, exit code, events and stderr."""
        events = "\n".join(
            "  " + json.dumps(ev, separators=(",", ":"))[:500] for ev in self.events[-last_events:]
        )
        stderr = self.stderr[-8000:].rstrip() or "(empty)"
        return (
            f"js peer {self.peer_id or '(not listening yet)'}: {problem}\n"
            f"args: {' '.join(self.args)}\n"
            f"exit code: {self.returncode}\n"
            f"last {min(last_events, len(self.events))} of {len(self.events)} events:\n"
            f"{events or '  (none)'}\n"
            f"stderr:\n{stderr}"
        )

    # -- plumbing ------------------------------------------------------------------------

    async def _reap(self) -> int:
        code = await self.process.wait()
        # stdout may still hold the last events after the process is gone
        while not self._stdout_done:
            await self._changed.wait()
        return code

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _add_line(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            event = {"event": "<not-an-event>", "text": text[:1000]}
        if event["event"] == "listening":
            self.peer_id = str(event.get("peerId", ""))
            self.addrs = [str(a) for a in event.get("addrs", [])]
        self.events.append(event)
        self._notify()

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = bytearray()
        try:
            while chunk := await self.process.stdout.receive_some(65536):
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    self._add_line(bytes(buffer[:end]))
                    del buffer[: end + 1]
                if len(buffer) > _MAX_LINE:
                    self._add_line(bytes(buffer[:1000]))
                    buffer.clear()
            if buffer:
                self._add_line(bytes(buffer))
        finally:
            self._stdout_done = True
            self._notify()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some(65536):
            self._stderr += chunk
            if len(self._stderr) > _STDERR_KEEP:
                del self._stderr[: len(self._stderr) - _STDERR_KEEP]

    async def _shut_down(self, grace: float) -> None:
        """Stop the peer: stdin closed, then SIGTERM, then SIGKILL, always to its whole group."""
        if self.process.returncode is None:
            try:
                await self.close_stdin()
            except trio.BrokenResourceError:
                pass
            with trio.move_on_after(grace):
                await self.process.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.returncode is not None:
                break
            _signal_group(self.process.pid, sig)
            with trio.move_on_after(_KILL_GRACE):
                await self.process.wait()
        # anything the peer started shares its process group; leave nothing behind
        _signal_group(self.process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@asynccontextmanager
async def run_js_peer(
    *args: str,
    ready: bool = True,
    ready_timeout: float = 20.0,
    stop_grace: float = _STOP_GRACE,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[JsPeer]:
    """Start ``node peer.mjs *args`` in interop/js and stop it (and its process group) on exit.

    With ``ready`` (the default) wait for the ``listening`` event first, so
    ``peer.peer_id`` and ``peer.addrs`` are set. On exit, even on failure, the peer's
    stdin is closed and it gets ``stop_grace`` seconds to stop by itself, then SIGTERM,
    then SIGKILL. ``env`` adds environment variables (``{"DEBUG": "libp2p:*"}`` turns on
    js-libp2p's own logs, on stderr).
    """
    node = require_js_setup()
    command = [node, "--import", "./polyfill.mjs", "peer.mjs", *args]
    process = await trio.lowlevel.open_process(
        command,
        cwd=JS_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so it can be killed as a whole
        env={**os.environ, **(env or {})},
    )
    peer = JsPeer(process, tuple(args))
    try:
        with _unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer._read_stdout)
                nursery.start_soon(peer._read_stderr)
                try:
                    if ready:
                        await peer.next_event("listening", timeout=ready_timeout)
                    yield peer
                finally:
                    with trio.CancelScope(shield=True):
                        await peer._shut_down(stop_grace)
                        # give the readers the last bytes, then stop them
                        with trio.move_on_after(1.0):
                            await peer._reap()
                    nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:  # only if something above failed badly
            _signal_group(process.pid, signal.SIGKILL)
        await _close_pipes(process)


@contextmanager
def _unwrap_single_exception() -> Iterator[None]:
    """Re-raise the test's own exception rather than the group the nursery wraps it in."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        (exc,) = group.exceptions
        cause, context = exc.__cause__, exc.__context__
        try:
            raise exc
        finally:
            exc.__cause__, exc.__context__ = cause, context


async def _close_pipes(process: trio.Process) -> None:
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
