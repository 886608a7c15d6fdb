"""trio inside a Jupyter kernel: guest mode on the kernel's asyncio loop.

:class:`TrioRunner` starts ``trio`` in *guest mode* (``trio.lowlevel.start_guest_run``) on the
asyncio loop that ipykernel runs cells on. trio then runs on the kernel's own thread, between
cells and while a cell awaits, so peers keep running from one cell to the next, and widget and
Bokeh updates made from trio tasks are safe (Bokeh documents are not thread-safe)::

    runner = TrioRunner()                      # in any cell (sync or async)
    handle = runner.start_soon(serve_forever)  # a background task that outlives the cell
    rtts = await runner.run(node.ping, peer)   # run in trio, result (or error) in the cell
    await runner.aclose()                      # cancel everything and wait for trio to end

Guest-mode trio only moves while the kernel's loop is free: a cell that blocks (``time.sleep``)
freezes the peers too. An error in a background task does not end the runner: it is kept in
:attr:`TrioRunner.errors` (and logged); an error in ``await runner.run(...)`` is raised in the
cell. Interrupting a cell that awaits ``runner.run`` cancels that trio call.

Inside ipykernel the runner also guards the kernel's *parent message* (which request a cell's
outputs and its "idle" status belong to) against a race in ipykernel 7: a widget message
(``comm_msg``) that arrives while a cell runs is handled concurrently, and when it is done
ipykernel puts back the parent it saw when it arrived. If the next cell started meanwhile,
that is the previous cell's request: the running cell's later outputs and its "idle" go to a
finished cell, and the front end shows it running forever (JupyterLab's "Run All" with live
Bokeh widgets hit it in about one run in ten). :func:`guard_kernel_parent` turns such a stale
restore into the newest request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import outcome
import trio

from ..errors import LocalProtocolError

__all__ = ["RunnerClosedError", "TaskHandle", "TrioRunner", "guard_kernel_parent"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: background task errors kept for :attr:`TrioRunner.errors`
MAX_ERRORS: Final = 100
#: message ids :func:`guard_kernel_parent` remembers
SEEN_REQUESTS: Final = 1000


class RunnerClosedError(LocalProtocolError):
    """The runner was closed (or its trio run ended) before the call finished."""


class TaskHandle:
    """A background task started with :meth:`TrioRunner.start_soon`: cancel it, await it."""

    def __init__(self, runner: TrioRunner, name: str) -> None:
        self.name = name
        self._runner = runner
        self._scope = trio.CancelScope()
        #: resolves (on the kernel loop) when the task ends; holds its outcome
        self.finished: asyncio.Future[outcome.Outcome[Any]] = runner.loop.create_future()

    @property
    def done(self) -> bool:
        """True once the task has ended."""
        return self.finished.done()

    def cancel(self) -> None:
        """Cancel the task (from any cell)."""
        self._runner._call_soon(self._scope.cancel)

    def __repr__(self) -> str:
        return f"<TaskHandle {self.name} {'done' if self.done else 'running'}>"


class TrioRunner:
    """trio in guest mode on the running asyncio loop (see the module docstring).

    Make it inside the kernel (any cell: the loop is the one running the cell). ``clock``
    is passed to trio (a ``MockClock`` in tests). ``protect_sigint`` keeps "interrupt
    kernel" going to the cell rather than into trio.
    """

    def __init__(self, *, clock: trio.abc.Clock | None = None,
                 protect_sigint: bool = True) -> None:
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise LocalProtocolError(
                "TrioRunner needs a running asyncio loop: make it in a Jupyter cell "
                "(ipykernel runs one) or inside asyncio.run()") from None
        #: resolves once trio runs (its nursery is open)
        self.started: asyncio.Future[None] = self.loop.create_future()
        #: resolves with trio's final outcome once the run has ended
        self.done: asyncio.Future[outcome.Outcome[None]] = self.loop.create_future()
        #: errors raised by background tasks, oldest first (at most MAX_ERRORS)
        self.errors: list[tuple[str, BaseException]] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._closing = False
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        kernel = getattr(shell, "kernel", None)
        if kernel is not None:
            guard_kernel_parent(kernel)
        previous = signal.getsignal(signal.SIGINT)
        protect = protect_sigint and threading.current_thread() is threading.main_thread()
        if protect:
            # trio takes SIGINT over if it sees Python's default handler (ipykernel installs
            # it while a cell runs); hide it so "interrupt kernel" still reaches the cell
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            trio.lowlevel.start_guest_run(
                self._main,
                run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
                done_callback=self._on_done,
                host_uses_signal_set_wakeup_fd=True,
                clock=clock,
            )
        finally:
            if protect:
                signal.signal(signal.SIGINT, previous)

    # ------------------------------------------------------------------ trio side
    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self.started.set_result(None)
            await trio.sleep_forever()

    def _on_done(self, result: outcome.Outcome[None]) -> None:
        if not self.started.done():
            self.started.set_exception(RunnerClosedError("trio ended before it started"))
        if not self.done.done():
            self.done.set_result(result)

    def _call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in trio as soon as it runs (or now, if it already does)."""
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(fn, *args)
            return
        def later(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                self._call_soon(fn, *args)

        self.started.add_done_callback(later)

    # ------------------------------------------------------------------ from cells
    @property
    def running(self) -> bool:
        """True while trio runs and the runner is not closing."""
        return not self.done.done() and not self._closing

    def _check(self) -> None:
        if not self.running:
            raise RunnerClosedError("the trio runner is closed; make a new one")

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any,
                   name: str | None = None) -> TaskHandle:
        """Start a background trio task that keeps running between cells."""
        self._check()
        handle = TaskHandle(self, name or str(getattr(fn, "__qualname__", repr(fn))))

        async def task() -> None:
            result: outcome.Outcome[Any] = outcome.Value(None)
            try:
                with handle._scope:
                    result = outcome.Value(await fn(*args))
            except Exception as exc:
                result = outcome.Error(exc)
                self._keep_error(handle.name, exc)
            finally:
                self.loop.call_soon_threadsafe(_resolve, handle.finished, result)

        self._call_soon(self._spawn, task, handle.name)
        return handle

    def _spawn(self, task: Callable[[], Awaitable[None]], name: str) -> None:
        if self._nursery is not None and not self._closing:
            self._nursery.start_soon(task, name=name)

    def _keep_error(self, name: str, exc: BaseException) -> None:
        log.error("background task %s failed: %r", name, exc, exc_info=exc)
        self.errors.append((name, exc))
        del self.errors[:-MAX_ERRORS]

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` in trio; return its result (or raise its error)."""
        self._check()
        await asyncio.shield(self.started)
        future: asyncio.Future[outcome.Outcome[T]] = self.loop.create_future()
        scope = trio.CancelScope()

        async def call() -> None:
            result: outcome.Outcome[T] = outcome.Error(RunnerClosedError("cancelled"))
            try:
                with scope:
                    result = outcome.Value(await fn(*args, **kwargs))
            except Exception as exc:
                result = outcome.Error(exc)
            finally:
                self.loop.call_soon_threadsafe(_resolve, future, result)

        self._call_soon(self._spawn, call, getattr(fn, "__qualname__", "run"))
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:  # the cell was interrupted: stop the trio call too
            self._call_soon(scope.cancel)
            raise
        return result.unwrap()

    async def aclose(self) -> None:
        """Cancel every trio task, wait for trio to finish, and raise what trio raised."""
        if self.done.done():
            return
        self._closing = True
        try:
            await asyncio.shield(self.started)
        except RunnerClosedError:
            return
        self._call_soon(self._cancel_all)
        (await self.done).unwrap()

    def _cancel_all(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def __repr__(self) -> str:
        state = "running" if self.running else ("closing" if not self.done.done() else "done")
        return f"<TrioRunner {state}, {len(self.errors)} background errors>"


def guard_kernel_parent(kernel: Any) -> bool:
    """Make ipykernel's restore of an older parent message restore the running cell's.

    ipykernel (7.x) handles a ``comm_msg`` that arrives while a cell runs in a task of its
    own, then calls ``kernel.set_parent`` with the parent it read when the message arrived.
    Every request is set once when it is dispatched; a parent set a second time is such a
    restore, and if an execute request was dispatched after it, that request's cell is the
    one running (or the last one that ran): this wraps the kernel's ``set_parent`` to put
    that request back instead. Returns False if the kernel was guarded already (or has no
    ``set_parent``).
    """
    original = getattr(kernel, "set_parent", None)
    if original is None or getattr(original, "_flarelab_guard", False):
        return False
    order: dict[str, int] = {}  # msg_id -> when it was first set
    counter = itertools.count()
    newest: list[tuple[int, Any, dict[str, Any]]] = []  # the newest execute request
    current = kernel.get_parent("shell") if hasattr(kernel, "get_parent") else None
    current_id = _msg_id(current)
    if current_id is not None:
        order[current_id] = next(counter)  # the cell running now: set already

    def set_parent(ident: Any, parent: Any, channel: str = "shell") -> Any:
        msg_id = _msg_id(parent) if channel == "shell" else None
        if msg_id is not None:
            first = order.get(msg_id)
            if first is None:  # dispatched now
                order[msg_id] = seq = next(counter)
                if len(order) > SEEN_REQUESTS:
                    del order[next(iter(order))]
                if parent["header"].get("msg_type") == "execute_request":
                    newest[:] = [(seq, ident, parent)]
            elif newest and first < newest[0][0]:  # a stale restore
                log.debug("kept parent %s instead of the older %s", _msg_id(newest[0][2]), msg_id)
                _, ident, parent = newest[0]
        return original(ident, parent, channel)

    set_parent._flarelab_guard = True  # type: ignore[attr-defined]
    kernel.set_parent = set_parent
    return True


def _msg_id(parent: Any) -> str | None:
    header = parent.get("header") if isinstance(parent, dict) else None
    msg_id = header.get("msg_id") if isinstance(header, dict) else None
    return msg_id if isinstance(msg_id, str) and msg_id else None


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
