"""TrioRunner: trio in guest mode on a running asyncio loop (as in a Jupyter kernel).

These tests run their own asyncio loop (``asyncio.run``) from plain sync test functions, the
way ipykernel runs cells; every wait is bounded.
"""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.lowlevel

from flarelab.errors import LocalProtocolError
from flarelab.workbench.runner import RunnerClosedError, TrioRunner


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
