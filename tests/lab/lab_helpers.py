"""Helpers for the lab tests: the root skip, and functions the lab's agents run.

Agents import functions by module name, so the functions they run in these tests live
here (the lab passes the test process's sys.path to its agents).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from flarelab.lab import LabContext
from flarelab.lab.errors import LabUnavailableError
from flarelab.lab.netns import check_available


def _lab_unavailable() -> str | None:
    try:
        check_available()
    except LabUnavailableError as exc:
        return str(exc)
    return None


LAB_UNAVAILABLE = _lab_unavailable()
#: marks a test that builds a real lab: root, and skipped with the reason when it cannot run
needs_lab = [
    pytest.mark.root,
    pytest.mark.skipif(LAB_UNAVAILABLE is not None,
                       reason=f"real NAT lab unavailable: {LAB_UNAVAILABLE}"),
]
#: the prefix of every lab the tests build (a test's stale-lab cleanup touches only these)
TEST_PREFIX = "flabt"


def agent_argv(spec_path: Path) -> list[str]:
    """The command line of an agent in this namespace (no ``ip netns exec``: no root)."""
    return [sys.executable, "-m", "flarelab.lab.agent", str(spec_path)]


# ---------------------------------------------------------------------- functions agents run
async def describe(ctx: LabContext, extra: Any = None) -> dict[str, Any]:
    """Say where we run."""
    return {"host": ctx.host.name, "public_ip": ctx.public_ip, "extra": extra,
            "router": ctx.router.name if ctx.router else None, "pid": os.getpid()}


async def add(ctx: LabContext, a: int, b: int = 0) -> int:
    """Return a + b."""
    return a + b


async def fail(ctx: LabContext, message: str) -> None:
    """Raise ValueError(message)."""
    raise ValueError(message)


async def not_json(ctx: LabContext) -> object:
    """Return something JSON cannot carry."""
    return {1, 2}


async def sleep_forever(ctx: LabContext) -> None:
    """Never return (until cancelled)."""
    await trio.sleep_forever()


async def serve_until_stopped(ctx: LabContext, name: str) -> dict[str, Any]:
    """Report progress, say ready, wait for the stop, return a summary."""
    ctx.progress({"step": "starting"})
    ctx.ready({"name": name})
    await ctx.wait_stop()
    return {"name": name, "stopped": ctx.stop_requested}


async def ready_twice(ctx: LabContext) -> None:
    """Misuse the context."""
    ctx.ready()
    ctx.ready()


async def return_without_ready(ctx: LabContext) -> str:
    """Return before saying ready."""
    return "done"


async def print_and_exit(ctx: LabContext, code: int) -> None:
    """Print (to the log), then kill the whole agent."""
    print("about to exit", flush=True)
    os._exit(code)


def not_async(ctx: LabContext) -> None:
    """A plain function: refused."""
