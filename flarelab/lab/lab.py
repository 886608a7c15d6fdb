"""The real NAT lab: build a topology from network namespaces, run functions in it, tear down.

    from flarelab.lab import Lab, Topology

    async with Lab(Topology.standard("home_router", "home_router")) as lab:
        relay = await lab.start("relay", serve_relay)        # returns once ctx.ready()
        result = await lab.run("a", dial_through, relay.info)   # runs to completion
        await relay.stop()
        spans = lab.spans()                                   # every process's spans

Entering the lab checks that it can run (root, ``ip``/``nft``/``conntrack``), removes what
killed labs left behind, takes a lock, and builds the namespaces (and, with latency, starts
the user-space switch). Leaving it -- normally, on an exception, or on cancellation --
stops every process it started and deletes every namespace it made. The run directory
holds the trace (``trace.jsonl``), the results (``results.jsonl``), each process's stderr
(``<host>-<n>.log``) and the plan (``plan.sh``); a temporary one is removed at the end
(the spans and results stay readable on the lab object).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import LocalProtocolError
from .agent import AgentSpec
from .errors import LabError, LabSetupError
from .nat_kinds import NatKind, nat_kind, ruleset
from .netns import (
    DEFAULT_PREFIX,
    Command,
    LabLock,
    LabNames,
    LabPlan,
    NetnsRunner,
    check_available,
    cleanup_stale,
    plan,
)
from .proc import LabProcess, LabTask
from .topology import Topology

if TYPE_CHECKING:
    from ..tracing.records import SpanRecord

__all__ = ["Lab"]

#: how long teardown may take before the lab gives up on it
TEARDOWN_TIMEOUT: Final = 60.0


class Lab:
    """A topology built from Linux network namespaces (see the module docstring).

    ``prefix`` starts every namespace name; ``run_dir`` keeps the run's files (default: a
    temporary directory removed at exit); ``python`` is the interpreter of the lab's
    processes (default: this one).
    """

    def __init__(self, topology: Topology, *, prefix: str = DEFAULT_PREFIX,
                 run_dir: str | Path | None = None, python: str | None = None) -> None:
        self.topology = topology
        self.names = LabNames(prefix=prefix)
        self.plan: LabPlan = plan(topology, self.names)
        self.python = python or sys.executable
        self._own_run_dir = run_dir is None
        self._run_dir_arg = Path(run_dir) if run_dir is not None else None
        self.run_dir = Path()
        self.runner = NetnsRunner()
        self._lock = LabLock(self.names)
        self._processes: list[LabProcess] = []
        self._switch: trio.Process | None = None
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._agent_count = 0
        self._entered = False
        self._closed = False
        self._spans: list[SpanRecord] | None = None
        self._results: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ names
    @property
    def id(self) -> str:
        """The lab's id (the middle of every namespace name)."""
        return self.names.lab_id

    def netns(self, name: str) -> str:
        """The namespace of the host or router ``name`` (or ``"internet"``)."""
        if name != "internet" and name not in self.topology.names():
            raise LocalProtocolError(f"the lab has no host or router {name!r}")
        return self.names.netns(name)

    @property
    def trace_file(self) -> Path:
        """The JSON-lines trace every process appends its spans to."""
        return self.run_dir / "trace.jsonl"

    @property
    def results_file(self) -> Path:
        """One JSON line per finished call: host, function, result or error."""
        return self.run_dir / "results.jsonl"

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> Lab:
        if self._entered:
            raise LocalProtocolError("a lab runs once")
        self._entered = True
        await trio.to_thread.run_sync(
            functools.partial(check_available, latency=bool(self.topology.latency)))
        await cleanup_stale(self.names.prefix, self.runner)
        if self._run_dir_arg is not None:
            self._run_dir_arg.mkdir(parents=True, exist_ok=True)
            self.run_dir = self._run_dir_arg
        else:
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"flarelab-{self.names.stem}-"))
        (self.run_dir / "plan.sh").write_text(self.plan.script())
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        try:
            self._lock.acquire()
            with trio.fail_after(120):
                await self._build()
        except BaseException:
            await self._close_nursery()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._close_nursery()

    async def _close_nursery(self) -> None:
        # The nursery only holds the agents' reader tasks, which end with their processes:
        # the body's own exception is not the nursery's and propagates as it is.
        try:
            await self._teardown()
        finally:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            await self._nursery_cm.__aexit__(None, None, None)

    async def _build(self) -> None:
        await self.runner.run_all(self.plan.create)
        if self.plan.switch_ports:
            await self._start_switch()
        await self.runner.run_all(self.plan.internet)
        await self.runner.run_all(self.plan.configure)

    async def _start_switch(self) -> None:
        spec = json.dumps({"ports": [
            {"index": p.index, "tap": p.tap, "latency": p.latency}
            for p in self.plan.switch_ports]})
        argv = ["ip", "netns", "exec", self.names.internet, self.python, "-m",
                "flarelab.lab.switch", spec]
        log = os.open(self.run_dir / "switch.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o644)
        try:
            self._switch = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        finally:
            os.close(log)
        assert self._switch.stdout is not None
        with trio.move_on_after(30):
            line = await self._switch.stdout.receive_some(64)
            if line.startswith(b"ready"):
                return
        log_text = (self.run_dir / "switch.log").read_text(errors="replace")
        raise LabSetupError("the lab's switch did not start", stderr=log_text)

    async def _teardown(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for process in self._processes:
                    nursery.start_soon(process.aclose)
            if self._switch is not None:
                await _end_process(self._switch)
            problems = await self.runner.remove_namespaces(self.plan.namespaces)
            self._keep_records()
            self._lock.release()
            if self._own_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            if problems:
                raise LabSetupError("teardown left something behind: " + "; ".join(problems))

    def _keep_records(self) -> None:
        with contextlib.suppress(OSError, LabError):
            self._spans = self._read_spans()
        with contextlib.suppress(OSError):
            self._results = self._read_results()

    def _check_running(self) -> trio.Nursery:
        if self._nursery is None or self._closed:
            raise LocalProtocolError("the lab is not running: use it inside `async with`")
        return self._nursery

    # ------------------------------------------------------------------ processes
    async def agent(self, host: str) -> LabProcess:
        """Start a process on ``host`` that runs calls (``await agent.call(fn, ...)``);
        it lives until the lab ends or ``await agent.aclose()``."""
        nursery = self._check_running()
        self.topology.host(host)  # raises for an unknown host
        self._agent_count += 1
        stem = f"{host}-{self._agent_count}"
        spec_path = self.run_dir / f"{stem}.json"
        spec = AgentSpec(host=host, topology=self.topology, lab_id=self.id,
                         run_dir=self.run_dir, trace_file=self.trace_file,
                         sys_path=tuple(p for p in sys.path if p))
        spec_path.write_text(spec.to_json())
        argv = ["ip", "netns", "exec", self.names.netns(host), self.python, "-m",
                "flarelab.lab.agent", str(spec_path)]
        process = await LabProcess.spawn(host=host, argv=argv,
                                         log_path=self.run_dir / f"{stem}.log",
                                         nursery=nursery, record=self._record)
        self._processes.append(process)
        return process

    async def run(self, host: str, fn: Callable[..., Any], *args: Any,
                  timeout: float | None = None,  # noqa: ASYNC109 -- the call is stopped too
                  ) -> Any:
        """Run ``fn(ctx, *args)`` in a fresh process on ``host``; return its result.

        Raises :class:`~flarelab.lab.errors.LabProcessError` if it raises or times out.
        """
        process = await self.agent(host)
        try:
            return await process.call(fn, *args, timeout=timeout)
        finally:
            await process.aclose()

    async def start(self, host: str, fn: Callable[..., Any], *args: Any,
                    timeout: float = 60.0,  # noqa: ASYNC109 -- the call is stopped too
                    on_progress: Callable[[Any], None] | None = None) -> LabTask:
        """Start ``fn(ctx, *args)`` in a fresh process on ``host``; return once it called
        ``ctx.ready(info)`` (``task.info``). ``await task.stop()`` ends it and returns its
        result; the lab stops it at the end otherwise."""
        process = await self.agent(host)
        try:
            task = await process.start(fn, *args, timeout=timeout, on_progress=on_progress)
        except BaseException:
            await process.aclose()
            raise
        task._owns_process = True
        return task

    def _record(self, record: dict[str, Any]) -> None:
        with open(self.results_file, "a") as file:
            file.write(json.dumps(record, default=str) + "\n")

    # ------------------------------------------------------------------ the network
    async def exec(self, name: str, *argv: str, check: bool = True, input: str | None = None
                   ) -> subprocess.CompletedProcess[bytes]:
        """Run a command in the namespace of host or router ``name`` (or ``"internet"``)."""
        self._check_running()
        command = Command(("ip", "netns", "exec", self.netns(name), *argv), input=input,
                          what=argv[0] if argv else "command")
        return await self.runner.run(command, check=check)

    def _routers(self, routers: tuple[str, ...]) -> list[str]:
        names = list(routers) or [r.name for r in self.topology.routers]
        for name in names:
            self.topology.router(name)
        return names

    async def flush_conntrack(self, *routers: str) -> None:
        """Forget every connection the routers track (all of them by default), so the next
        trial starts from a clean NAT table."""
        families = ["ipv4", "ipv6"] if self.topology.ipv6 else ["ipv4"]
        async with trio.open_nursery() as nursery:
            for name in self._routers(routers):
                for family in families:
                    nursery.start_soon(self._flush, name, family)

    async def _flush(self, router: str, family: str) -> None:
        await self.exec(router, "conntrack", "-F", "-f", family)

    async def conntrack(self, router: str) -> list[str]:
        """The router's conntrack entries, one line each (``conntrack -L``)."""
        lines = []
        families = ["ipv4", "ipv6"] if self.topology.ipv6 else ["ipv4"]
        for family in families:
            done = await self.exec(router, "conntrack", "-L", "-f", family, check=False)
            lines += [line for line in done.stdout.decode().splitlines() if line.strip()]
        return lines

    async def set_nat(self, router: str, kind: str | NatKind) -> None:
        """Make ``router`` a router of ``kind`` (new ruleset, flushed conntrack); processes
        started afterwards see the new kind in their topology."""
        new_kind = nat_kind(kind)
        await self.exec(router, "nft", "-f", "-", input=ruleset(new_kind))
        await self.flush_conntrack(router)
        routers = tuple(dataclasses.replace(r, kind=new_kind) if r.name == router else r
                        for r in self.topology.routers)
        self.topology = dataclasses.replace(self.topology, routers=routers)

    # ------------------------------------------------------------------ records
    def spans(self) -> list[SpanRecord]:
        """Every span the lab's processes exported so far (after exit: all of them)."""
        if self._spans is not None and self._closed:
            return list(self._spans)
        return self._read_spans()

    def _read_spans(self) -> list[SpanRecord]:
        from ..tracing.export import read_trace

        if not self.trace_file.exists():
            return []
        return read_trace(self.trace_file, strict=False)

    def results(self) -> list[dict[str, Any]]:
        """Every finished call so far: host, function, event and value or error."""
        if self._results is not None and self._closed:
            return list(self._results)
        return self._read_results()

    def _read_results(self) -> list[dict[str, Any]]:
        if not self.results_file.exists():
            return []
        with open(self.results_file) as file:
            return [json.loads(line) for line in file if line.strip()]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._nursery else "new"
        return f"<Lab {self.names.stem} {state}>"


async def _end_process(process: trio.Process, grace: float = 5.0) -> None:
    if process.stdin is not None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await process.stdin.aclose()
    with trio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
