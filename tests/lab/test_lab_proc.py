"""Running functions in lab processes: calls, results, errors, ready/stop, timeouts, deaths.

The agent runs here without ``ip netns exec`` (no root needed): the machinery is the same
one the lab uses in its namespaces. Every wait is bounded.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import lab_helpers
import pytest
import trio

from flarelab.errors import LocalProtocolError
from flarelab.lab import LabProcess, LabProcessError, Topology
from flarelab.lab.agent import AgentSpec
from flarelab.lab.proc import function_reference


@asynccontextmanager
async def agent(tmp_path: Path, host: str = "a") -> AsyncIterator[tuple[LabProcess, list[Any]]]:
    """An agent for ``host`` of the standard topology, in this namespace."""
    import sys

    spec = AgentSpec(host=host, topology=Topology.standard(), lab_id="0a1b2c", run_dir=tmp_path,
                     trace_file=tmp_path / "trace.jsonl", sys_path=tuple(sys.path))
    spec_path = tmp_path / f"{host}.json"
    spec_path.write_text(spec.to_json())
    records: list[Any] = []
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            process = await LabProcess.spawn(host=host, argv=lab_helpers.agent_argv(spec_path),
                                             log_path=tmp_path / f"{host}.log", nursery=nursery,
                                             record=records.append)
        try:
            yield process, records
        finally:
            with trio.fail_after(30):
                await process.aclose()


async def test_a_call_returns_its_result(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, records):
        with trio.fail_after(20):
            info = await process.call(lab_helpers.describe, [1, "x"])
            total = await process.call(functools.partial(lab_helpers.add, b=5), 2)
        assert info["host"] == "a" and info["public_ip"] == "203.0.113.1"
        assert info["router"] == "nat-a" and info["extra"] == [1, "x"]
        assert info["pid"] == process.pid
        assert total == 7
        assert [r["value"] for r in records] == [info, 7]
        assert records[0]["function"] == "lab_helpers:describe" and records[0]["host"] == "a"


async def test_calls_run_concurrently_in_one_agent(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, _):
        results: list[int] = []

        async def one(n: int) -> None:
            results.append(await process.call(lab_helpers.add, n, 1))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(one, n)
        assert sorted(results) == list(range(1, 11))


async def test_an_exception_comes_back_with_its_traceback(tmp_path: Path) -> None:
    async with agent(tmp_path, host="b") as (process, records):
        with trio.fail_after(20), pytest.raises(LabProcessError) as caught:
            await process.call(lab_helpers.fail, "the reason")
        err = caught.value
        assert err.host == "b" and err.function == "lab_helpers:fail"
        assert err.error_type == "ValueError"
        assert "lab_helpers:fail on b: ValueError: the reason" in str(err)
        assert 'raise ValueError(message)' in err.remote_traceback
        assert records[-1]["error"] == {"type": "ValueError", "message": "the reason"}
        # the agent keeps serving
        with trio.fail_after(20):
            assert await process.call(lab_helpers.add, 1, 1) == 2


async def test_results_and_arguments_must_be_json(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, _):
        with trio.fail_after(20), pytest.raises(LabProcessError, match="not JSON"):
            await process.call(lab_helpers.not_json)
        with pytest.raises(LocalProtocolError, match="not JSON"):
            await process.call(lab_helpers.add, {1, 2})


def test_only_importable_async_functions_can_run() -> None:
    assert function_reference(functools.partial(lab_helpers.add, 1, b=2)) == (
        "lab_helpers:add", (1,), {"b": 2})

    async def nested(ctx: object) -> None:
        pass

    for bad, message in ((nested, "module-level"), (lambda ctx: None, "module-level"),
                         (lab_helpers.not_async, "async def")):
        with pytest.raises(LocalProtocolError, match=message):
            function_reference(bad)
    nested.__module__ = "__main__"
    nested.__qualname__ = "nested"
    with pytest.raises(LocalProtocolError, match="__main__"):
        function_reference(nested)


async def test_start_waits_for_ready_and_stop_returns_the_result(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, _):
        seen: list[Any] = []
        with trio.fail_after(20):
            task = await process.start(functools.partial(lab_helpers.serve_until_stopped,
                                                         name="svc"), on_progress=seen.append)
            assert task.info == {"name": "svc"} and not task.done
            assert task.progress == [{"step": "starting"}] == seen
            assert await task.stop() == {"name": "svc", "stopped": True}
            assert task.done


async def test_stopping_a_function_that_does_not_wait_cancels_it(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, records):
        with trio.fail_after(20):
            # a call that never returns: the timeout stops it, and says so
            with pytest.raises(LabProcessError, match=r"timed out after 0\.2 s"):
                await process.call(lab_helpers.sleep_forever, timeout=0.2)
            assert await process.call(lab_helpers.add, 2, 2) == 4
        assert not any(r["function"] == "lab_helpers:sleep_forever" and r["event"] == "result"
                       for r in records)


async def test_start_reports_functions_that_never_get_ready(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, _):
        with trio.fail_after(20):
            with pytest.raises(LabProcessError, match=r"without calling ctx\.ready"):
                await process.start(lab_helpers.return_without_ready)
            with pytest.raises(LabProcessError, match=r"not ready after 0\.2 s"):
                await process.start(lab_helpers.sleep_forever, timeout=0.2)
            task = await process.start(lab_helpers.ready_twice)
            with pytest.raises(LabProcessError, match="twice"):
                await task.wait()


async def test_a_function_the_agent_cannot_import_is_reported(tmp_path: Path) -> None:
    async def ghost(ctx: object) -> None:
        pass

    ghost.__module__, ghost.__qualname__ = "no_such_module_here", "ghost"
    async with agent(tmp_path) as (process, _):
        with trio.fail_after(20), pytest.raises(LabProcessError) as caught:
            await process.call(ghost)
        assert caught.value.error_type == "ModuleNotFoundError"
        assert "no_such_module_here" in str(caught.value)


async def test_a_dying_agent_fails_its_calls_and_keeps_its_log(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, _):
        with trio.fail_after(20):
            pending = await process._send_call(lab_helpers.sleep_forever, ())
            with pytest.raises(LabProcessError, match="exited") as caught:
                await process.call(lab_helpers.print_and_exit, 3)
            await pending.done.wait()
        assert "about to exit" in caught.value.stderr
        assert pending.error is not None and "code 3" in pending.error["message"]
        assert not process.running
        with pytest.raises(LocalProtocolError, match="closed"):
            await process.call(lab_helpers.add, 1)


async def test_garbage_on_the_channel_ends_the_agent(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, _):
        pending = await process._send_call(lab_helpers.sleep_forever, ())
        await process._send_line(b"this is not json\n")
        with trio.fail_after(20):
            await pending.done.wait()
        assert pending.error is not None and pending.error["type"] == "ProcessExited"
        assert "JSONDecodeError" in process.log_tail()


async def test_closing_stops_waiting_calls_cleanly(tmp_path: Path) -> None:
    async with agent(tmp_path) as (process, records):
        with trio.fail_after(20):
            task = await process.start(functools.partial(lab_helpers.serve_until_stopped,
                                                         name="x"))
            await process.aclose()
        assert not process.running and task.done
        assert records[-1]["value"] == {"name": "x", "stopped": True}
