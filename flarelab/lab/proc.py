"""Run Python functions inside the lab's namespaces, as subprocesses, and get their results.

Namespaces do not share loopback, so a program in the lab cannot hand its results back
through a socket the lab could reach; each runs as its own process (``ip netns exec <ns>
python -m flarelab.lab.agent``) and talks to the lab over its stdin and stdout, in JSON
lines. Spans go to the lab's trace file (one JSON line per span, appended by every
process), results to ``results.jsonl`` in the run directory, and what the function prints
to ``<host>-<n>.log`` there.

A function run in the lab is a module-level ``async def fn(ctx, *args)`` (pass keyword
arguments with :func:`functools.partial`); ``ctx`` is a
:class:`~flarelab.lab.agent.LabContext`. Arguments and results are JSON values.

Lab → agent: ``{"op": "call", "id": n, "fn": "module:qualname", "args": [...], "kwargs":
{...}}`` and ``{"op": "stop", "id": n}``; closing stdin stops every call and ends the agent.
Agent → lab: ``hello`` (pid), then per call ``ready`` (info), ``progress`` (data), and last
``result`` (value), ``stopped`` or ``error`` (type, message, traceback).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from ..errors import LocalProtocolError
from .errors import LabProcessError

__all__ = ["LabProcess", "LabTask", "function_reference"]

#: the longest line an agent may send (a result, a progress report)
MAX_LINE: Final = 16 << 20
#: how long an agent may take to say hello
START_TIMEOUT: Final = 30.0
#: how long ``aclose`` waits for an agent to exit before killing it
CLOSE_GRACE: Final = 15.0
_LOG_TAIL: Final = 4000

Record = Callable[[dict[str, Any]], None]


def function_reference(fn: Callable[..., Any]) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """Return (``module:qualname``, args, kwargs) for ``fn`` (a function or a partial)."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    while isinstance(fn, functools.partial):
        args = (*fn.args, *args)
        kwargs = {**fn.keywords, **kwargs}
        fn = fn.func
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise LocalProtocolError(f"{fn!r} cannot run in the lab: use a module-level "
                                 "async def fn(ctx, ...)")
    if module == "__main__":
        raise LocalProtocolError(f"{qualname} lives in __main__: the lab's processes import "
                                 "functions, so put it in an importable module")
    if not inspect.iscoroutinefunction(fn):
        raise LocalProtocolError(f"{module}.{qualname} must be an async def fn(ctx, ...)")
    return f"{module}:{qualname}", args, kwargs


def _parse(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("an agent message must be a JSON object")
    return message


def _json_line(message: dict[str, Any], what: str) -> bytes:
    try:
        return (json.dumps(message, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"the arguments of {what} are not JSON values: {exc}") from None


@dataclass(eq=False)
class _Call:
    id: int
    function: str
    ready: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    info: Any = None
    value: Any = None
    error: dict[str, Any] | None = None
    stopped: bool = False
    progress: list[Any] = field(default_factory=list)
    on_progress: Callable[[Any], None] | None = None


class LabProcess:
    """One agent process on one host of the lab; it runs any number of calls at once.

    Made by :meth:`spawn` (the lab does it: ``lab.agent(host)``, ``lab.run``, ``lab.start``).
    """

    def __init__(self, host: str, process: trio.Process, log_path: Path,
                 record: Record | None) -> None:
        self.host = host
        self.process = process
        self.log_path = log_path
        self._record = record
        self._calls: dict[int, _Call] = {}
        self._ids = 0
        self._hello = trio.Event()
        self._exited = trio.Event()
        self._send_lock = trio.Lock()
        self._closing = False
        self.pid: int | None = None

    @classmethod
    async def spawn(cls, *, host: str, argv: Sequence[str], log_path: Path,
                    nursery: trio.Nursery, record: Record | None = None,
                    timeout: float = START_TIMEOUT,  # noqa: ASYNC109 -- names the agent
                    ) -> LabProcess:
        """Start ``argv`` (an agent command line) and wait for its hello."""
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            process = await trio.lowlevel.open_process(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        finally:
            os.close(log)
        self = cls(host, process, log_path, record)
        nursery.start_soon(self._read)
        with trio.move_on_after(timeout):
            await self._hello.wait()
        if not self._hello.is_set():
            await self.aclose()
            raise LabProcessError(f"the agent did not start within {timeout:g} s",
                                  host=host, function="agent", stderr=self.log_tail())
        return self

    # ------------------------------------------------------------------ calls
    async def call(self, fn: Callable[..., Any], *args: Any,
                   timeout: float | None = None,  # noqa: ASYNC109 -- the call is stopped too
                   ) -> Any:
        """Run ``fn(ctx, *args)`` here and return its result (raise LabProcessError)."""
        call = await self._send_call(fn, args)
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await call.done.wait()
        if not call.done.is_set():
            await self._send({"op": "stop", "id": call.id})
            with trio.move_on_after(5.0):
                await call.done.wait()
            raise LabProcessError(f"timed out after {timeout:g} s", host=self.host,
                                  function=call.function, stderr=self.log_tail())
        return self._outcome(call)

    async def start(self, fn: Callable[..., Any], *args: Any,
                    timeout: float = 60.0,  # noqa: ASYNC109 -- the call is stopped too
                    on_progress: Callable[[Any], None] | None = None) -> LabTask:
        """Start ``fn(ctx, *args)`` here; return once it called ``ctx.ready()``."""
        call = await self._send_call(fn, args, on_progress)
        with trio.move_on_after(timeout):
            while not call.ready.is_set() and not call.done.is_set():
                await _first(call.ready, call.done)
        if call.done.is_set() and not call.ready.is_set():
            self._outcome(call)  # raises if it failed
            raise LabProcessError("returned without calling ctx.ready()", host=self.host,
                                  function=call.function)
        if not call.ready.is_set():
            await self._send({"op": "stop", "id": call.id})
            raise LabProcessError(f"not ready after {timeout:g} s", host=self.host,
                                  function=call.function, stderr=self.log_tail())
        return LabTask(self, call)

    async def _send_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                         on_progress: Callable[[Any], None] | None = None) -> _Call:
        if self._closing or self._exited.is_set():
            raise LocalProtocolError(f"the agent on {self.host} is closed")
        reference, bound_args, kwargs = function_reference(fn)
        self._ids += 1
        message = {"op": "call", "id": self._ids, "fn": reference,
                   "args": [*bound_args, *args], "kwargs": kwargs}
        line = _json_line(message, reference)
        call = _Call(self._ids, reference, on_progress=on_progress)
        self._calls[call.id] = call
        await self._send_line(line)
        return call

    def _outcome(self, call: _Call) -> Any:
        if call.error is not None:
            raise LabProcessError(
                f"{call.error.get('type', 'error')}: {call.error.get('message', '')}",
                host=self.host, function=call.function, error_type=call.error.get("type", ""),
                remote_traceback=call.error.get("traceback", ""), stderr=self.log_tail())
        if call.stopped:
            raise LabProcessError("was stopped before it returned", host=self.host,
                                  function=call.function)
        return call.value

    # ------------------------------------------------------------------ channel
    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_line(_json_line(message, "a command"))

    async def _send_line(self, line: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        async with self._send_lock:
            try:
                await stdin.send_all(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise LabProcessError("the agent is gone", host=self.host, function="agent",
                                      stderr=self.log_tail()) from None

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        buffer = b""
        try:
            while True:
                chunk = await stdout.receive_some(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                if len(buffer) > MAX_LINE:
                    raise ValueError("the agent sent a line over 16 MiB")
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._dispatch(_parse(line))
        except ValueError:  # not our agent's JSON: end it; its calls fail below
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        finally:
            with trio.CancelScope(shield=True):
                await self.process.wait()
            self._exited.set()
            for call in self._calls.values():
                if not call.done.is_set():
                    call.error = {"type": "ProcessExited", "message": (
                        f"the agent exited (code {self.process.returncode}) before the call "
                        "returned")}
                    call.ready.set()
                    call.done.set()
            self._hello.set()

    def _dispatch(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "hello":
            self.pid = message.get("pid")
            self._hello.set()
            return
        call = self._calls.get(int(message.get("id", -1)))
        if call is None:
            return
        if event == "ready":
            call.info = message.get("info")
            call.ready.set()
        elif event == "progress":
            call.progress.append(message.get("data"))
            if call.on_progress is not None:
                call.on_progress(message.get("data"))
        elif event in ("result", "error", "stopped"):
            if event == "result":
                call.value = message.get("value")
            elif event == "error":
                call.error = message
            else:
                call.stopped = True
            call.done.set()
            del self._calls[call.id]
            if self._record is not None:
                record = {"host": self.host, "function": call.function, "event": event}
                if event == "result":
                    record["value"] = call.value
                elif event == "error":
                    record["error"] = {k: message.get(k) for k in ("type", "message")}
                self._record(record)

    # ------------------------------------------------------------------ lifetime
    def log_tail(self) -> str:
        """The end of what the agent wrote to stderr."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, 2)
                size = log.tell()
                log.seek(max(0, size - _LOG_TAIL))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        """True until the agent exits."""
        return not self._exited.is_set()

    async def aclose(self, grace: float = CLOSE_GRACE) -> None:
        """Stop every call (close stdin), wait up to ``grace`` for the exit, then kill."""
        self._closing = True
        stdin = self.process.stdin
        with trio.CancelScope(shield=True):
            if stdin is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    async with self._send_lock:
                        await stdin.aclose()
            with trio.move_on_after(grace):
                await self._exited.wait()
            if not self._exited.is_set():
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self._exited.wait()


async def _first(*events: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        for event in events:
            async def wait(e: trio.Event = event) -> None:
                await e.wait()
                nursery.cancel_scope.cancel()
            nursery.start_soon(wait)


class LabTask:
    """A call started with ``start``: it said it is ready; stop it to get its result."""

    def __init__(self, process: LabProcess, call: _Call, *, owns_process: bool = False) -> None:
        self.process = process
        self._call = call
        self._owns_process = owns_process

    @property
    def host(self) -> str:
        """The host it runs on."""
        return self.process.host

    @property
    def info(self) -> Any:
        """What the function passed to ``ctx.ready()``."""
        return self._call.info

    @property
    def progress(self) -> list[Any]:
        """Its progress reports so far."""
        return self._call.progress

    @property
    def done(self) -> bool:
        """True once it returned, failed or stopped."""
        return self._call.done.is_set()

    async def wait(self) -> Any:
        """Wait until it returns by itself; return its result."""
        await self._call.done.wait()
        await self._release()
        return self.process._outcome(self._call)

    async def stop(self) -> Any:
        """Ask it to stop (``ctx.wait_stop()`` returns, or it is cancelled); return its
        result (None when it was cancelled)."""
        if not self._call.done.is_set() and self.process.running:
            with contextlib.suppress(LabProcessError):
                await self.process._send({"op": "stop", "id": self._call.id})
            with trio.CancelScope(shield=True):
                await self._call.done.wait()
        await self._release()
        if self._call.stopped:
            return None
        return self.process._outcome(self._call)

    async def _release(self) -> None:
        if self._owns_process:
            self._owns_process = False
            await self.process.aclose()

    async def aclose(self) -> None:
        """Stop it, ignoring how it ended, and end its process if it owns one."""
        with contextlib.suppress(LabProcessError):
            await self.stop()
        await self._release()
