"""TrioRunner: trio in guest mode on a running asyncio loop (as in a Jupyter kernel).

These tests run their own asyncio loop (``asyncio.run``) from plain sync test functions, the
way ipykernel runs cells; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.lowlevel

from flarelab.errors import LocalProtocolError
from flarelab.workbench.runner import RunnerClosedError, TrioRunner, guard_kernel_parent


def _run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro_fn(), 10))


def test_tasks_keep_running_between_awaits_and_results_come_back() -> None:
    async def main() -> None:
        runner = TrioRunner()
        ticks = []

        async def ticker() -> None:
            while True:
                ticks.append(trio.current_time())
                await trio.sleep(0.01)

        handle = runner.start_soon(ticker)
        await asyncio.sleep(0.1)  # the "kernel" does something else: trio keeps going
        assert len(ticks) >= 3

        async def add(a: int, b: int, *, c: int = 0) -> int:
            await trio.lowlevel.checkpoint()
            return a + b + c

        assert await runner.run(add, 1, 2, c=3) == 6
        handle.cancel()
        await handle.finished
        assert handle.done
        await runner.aclose()
        assert runner.done.done() and not runner.running

    _run(main)


def test_errors_reach_the_caller_or_the_error_list_and_never_end_the_runner() -> None:
    async def main() -> None:
        runner = TrioRunner()

        async def boom() -> None:
            await trio.lowlevel.checkpoint()
            raise ValueError("from trio")

        with pytest.raises(ValueError, match="from trio"):
            await runner.run(boom)
        handle = runner.start_soon(boom, name="boom task")
        await handle.finished
        assert [(name, type(exc)) for name, exc in runner.errors] == [("boom task", ValueError)]
        assert await runner.run(trio.sleep, 0) is None  # still running
        await runner.aclose()
        with pytest.raises(RunnerClosedError):
            await runner.run(trio.sleep, 0)

    _run(main)


def test_interrupting_the_cell_cancels_the_trio_call() -> None:
    async def main() -> None:
        runner = TrioRunner()
        cancelled = trio.Event()

        async def slow() -> None:
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

        call = asyncio.ensure_future(runner.run(slow))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await runner.run(cancelled.wait)  # trio saw the cancellation
        await runner.aclose()

    _run(main)


def test_closing_cancels_background_tasks_and_pending_calls() -> None:
    async def main() -> None:
        runner = TrioRunner()
        handle = runner.start_soon(trio.sleep_forever)
        pending = asyncio.ensure_future(runner.run(trio.sleep_forever))
        await asyncio.sleep(0.02)
        await runner.aclose()
        await handle.finished
        with pytest.raises(RunnerClosedError):
            await pending
        await runner.aclose()  # twice is fine

    _run(main)


def test_a_runner_needs_a_running_loop() -> None:
    with pytest.raises(LocalProtocolError, match="running asyncio loop"):
        TrioRunner()


# ---------------------------------------------------------------- ipykernel's parent message


class _Kernel:
    """ipykernel 7.4's shell parent handling (``Kernel.shell_main`` / ``dispatch_shell``).

    Every shell message runs in one shared context; cells hold a lock; a ``comm_msg`` that
    comes while a cell runs is dispatched in a copy of the context, and afterwards the parent
    it read on arrival is set again in the shared context.
    """

    def __init__(self) -> None:
        self.var: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("parent")
        self.var.set({})
        self.lock = asyncio.Lock()
        self.shared = contextvars.copy_context()

    def set_parent(self, ident: Any, parent: dict[str, Any], channel: str = "shell") -> None:
        self.var.set(parent)

    def get_parent(self, channel: str = "shell") -> dict[str, Any]:
        return self.var.get()

    def receive(self, msg: dict[str, Any], handler: Callable[[], Awaitable[None]]
                ) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self._shell_main(msg, handler), context=self.shared)

    async def _shell_main(self, msg: dict[str, Any],
                          handler: Callable[[], Awaitable[None]]) -> None:
        if self.lock.locked() and msg["header"]["msg_type"] == "comm_msg":
            saved = self.get_parent()
            try:
                await asyncio.get_running_loop().create_task(
                    self._dispatch(msg, handler), context=contextvars.copy_context())
            finally:
                self.set_parent(b"", saved)
            return
        async with self.lock:
            await self._dispatch(msg, handler)

    async def _dispatch(self, msg: dict[str, Any],
                        handler: Callable[[], Awaitable[None]]) -> None:
        self.set_parent(b"", msg)
        await handler()


def _msg(msg_type: str, msg_id: str) -> dict[str, Any]:
    return {"header": {"msg_type": msg_type, "msg_id": msg_id}, "content": {}}


async def _comm_ends_after_the_next_cell_started(kernel: _Kernel) -> list[str]:
    """Cell 1 runs; a comm message comes; cell 2 starts; the comm ends: the parents cell 2
    sees before and after its await."""
    events = {name: asyncio.Event() for name in ("end1", "end_comm", "in2", "in_comm", "go2")}
    seen: list[str] = []

    def cell(end: str, entered: str | None = None, *, watch: bool = False
             ) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if watch:
                seen.append(kernel.get_parent()["header"]["msg_id"])
            if entered:
                events[entered].set()
            await events[end].wait()  # the cell awaits (runner.run, in a notebook)
            if watch:
                seen.append(kernel.get_parent()["header"]["msg_id"])
        return run

    cell1 = kernel.receive(_msg("execute_request", "cell1"), cell("end1"))
    comm = kernel.receive(_msg("comm_msg", "comm"), cell("end_comm", "in_comm"))
    await events["in_comm"].wait()  # read cell1's parent on arrival, now handled concurrently
    cell2 = kernel.receive(_msg("execute_request", "cell2"), cell("go2", "in2", watch=True))
    events["end1"].set()
    await cell1
    await events["in2"].wait()  # cell 2 runs and awaits
    events["end_comm"].set()
    await comm  # the comm is done: ipykernel sets the parent it saw on arrival again
    events["go2"].set()
    await cell2
    seen.append(kernel.shared.run(kernel.get_parent)["header"]["msg_id"])  # its "idle" goes here
    return seen


def test_a_comm_ending_during_the_next_cell_leaves_that_cell_its_parent() -> None:
    async def main() -> None:
        plain = await _comm_ends_after_the_next_cell_started(_Kernel())
        # without the guard, cell 2's outputs after its await (and its idle) go to cell 1
        assert plain == ["cell2", "cell1", "cell1"]
        kernel = _Kernel()
        assert guard_kernel_parent(kernel) and not guard_kernel_parent(kernel)
        guarded = await _comm_ends_after_the_next_cell_started(kernel)
        assert guarded == ["cell2", "cell2", "cell2"]

    _run(main)


def test_the_runner_guards_the_kernel_it_runs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = _Kernel()
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))

    async def main() -> None:
        runner = TrioRunner(protect_sigint=False)
        await runner.aclose()

    _run(main)
    assert getattr(kernel.set_parent, "_flarelab_guard", False)
