"""The program the lab runs inside a namespace: it calls functions for the lab process.

``ip netns exec <ns> python -m flarelab.lab.agent SPEC`` starts it; the lab then sends
JSON lines on its stdin and reads JSON lines from its stdout (the wire format is in
:mod:`flarelab.lab.proc`). Each call names a module-level ``async def fn(ctx, *args)``;
the agent imports it, runs it as a task with a :class:`LabContext`, and reports ``ready``
(when ``ctx.ready()`` is called), ``progress``, and finally ``result`` or ``error``. A
``stop`` for a call wakes ``ctx.wait_stop()`` if the function is waiting there, and
cancels it otherwise. When stdin closes the agent stops every call and exits.

The agent's own stdout is the lab's channel: anything the function prints goes to stderr
(the lab keeps it in the run directory, ``<host>-<n>.log``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import LocalProtocolError
from .topology import LabHost, LabRouter, Topology

if TYPE_CHECKING:
    from ..node import NodeConfig
    from ..tracing.provider import TracingConfig

__all__ = ["LabContext", "resolve_function"]

#: how long a stopped call may take to return from ``wait_stop`` before it is cancelled
STOP_GRACE: Final = 10.0
#: the longest command line the agent accepts from the lab
MAX_COMMAND: Final = 16 << 20


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What the lab tells an agent when it starts it."""

    host: str
    topology: Topology
    lab_id: str
    run_dir: Path
    trace_file: Path
    sys_path: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "topology": self.topology.to_dict(),
                           "lab_id": self.lab_id, "run_dir": str(self.run_dir),
                           "trace_file": str(self.trace_file), "sys_path": list(self.sys_path)})

    @classmethod
    def from_json(cls, text: str) -> AgentSpec:
        data = json.loads(text)
        return cls(host=data["host"], topology=Topology.from_dict(data["topology"]),
                   lab_id=data["lab_id"], run_dir=Path(data["run_dir"]),
                   trace_file=Path(data["trace_file"]), sys_path=tuple(data["sys_path"]))


def resolve_function(reference: str) -> Callable[..., Any]:
    """Import ``module:qualname`` and return the function it names."""
    module_name, _, qualname = reference.partition(":")
    if not module_name or not qualname:
        raise LocalProtocolError(f"bad function reference {reference!r}")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise LocalProtocolError(f"{reference} is not callable")
    return target  # type: ignore[no-any-return]


class _Channel:
    """The agent's side of the lab channel: JSON lines, written whole and in order."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, allow_nan=False) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]


class LabContext:
    """What a function running in the lab gets as its first argument.

    It says where the function runs (``host``, ``topology``, ``router``), lets it talk to
    the lab (``ready``, ``progress``, ``wait_stop``) and gives nodes what they need there
    (``tracing``: spans into the lab's trace file; ``node_config``: a NodeConfig with the
    lab's address policy).
    """

    def __init__(self, spec: AgentSpec, call_id: int, channel: _Channel) -> None:
        self.topology = spec.topology
        self.host: LabHost = spec.topology.host(spec.host)
        self.router: LabRouter | None = spec.topology.router_of(self.host)
        self.lab_id = spec.lab_id
        self.run_dir = spec.run_dir
        self.trace_file = spec.trace_file
        self.call_id = call_id
        self._channel = channel
        self._stop = trio.Event()
        self._is_ready = False
        self.waiting_for_stop = False

    # ------------------------------------------------------------------ the lab
    def ready(self, info: Any = None) -> None:
        """Tell the lab this call is up (``lab.start`` returns); ``info`` goes with it."""
        if self._is_ready:
            raise LocalProtocolError("ready() was called twice")
        self._is_ready = True
        self._channel.send({"event": "ready", "id": self.call_id, "info": info})

    def progress(self, data: Any) -> None:
        """Send the lab a progress report (any JSON value)."""
        self._channel.send({"event": "progress", "id": self.call_id, "data": data})

    async def wait_stop(self) -> None:
        """Wait until the lab stops this call (then return, and let the function return)."""
        self.waiting_for_stop = True
        try:
            await self._stop.wait()
        finally:
            self.waiting_for_stop = False

    @property
    def stop_requested(self) -> bool:
        """True once the lab asked this call to stop."""
        return self._stop.is_set()

    # ------------------------------------------------------------------ nodes
    @property
    def public_ip(self) -> str:
        """The IPv4 address the internet sees for this host (its own or its router's)."""
        return self.topology.public_ip(self.host)

    def tracing(self, label: str | None = None) -> TracingConfig:
        """A TracingConfig that appends spans to the lab's trace file (label: the host)."""
        from ..tracing.provider import TracingConfig

        return TracingConfig(label=label or self.host.name, trace_file=self.trace_file)

    def node_config(self, **overrides: Any) -> NodeConfig:
        """A NodeConfig for a node on this host: the lab's address policy, its tracing,
        listening on TCP and QUIC port 4001 of every address the host has."""
        from ..node import NodeConfig

        listen = []
        for ip in self.host.addresses():
            kind = "ip6" if ":" in ip else "ip4"
            listen += [f"/{kind}/{ip}/tcp/4001", f"/{kind}/{ip}/udp/4001/quic-v1"]
        settings: dict[str, Any] = {
            "label": self.host.name,
            "listen_addrs": listen,
            "address_policy": self.topology.address_policy,
            "tracing": self.tracing(),
        }
        settings.update(overrides)
        return NodeConfig(**settings)


class _Agent:
    def __init__(self, spec: AgentSpec, channel: _Channel) -> None:
        self.spec = spec
        self.channel = channel
        self.calls: dict[int, tuple[LabContext, trio.CancelScope]] = {}

    async def run(self, commands: trio.abc.ReceiveStream) -> None:
        self.channel.send({"event": "hello", "pid": os.getpid(), "host": self.spec.host})
        async with trio.open_nursery() as nursery:
            buffer = b""
            while True:
                chunk = await commands.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
                if len(buffer) > MAX_COMMAND:
                    raise LocalProtocolError("a command from the lab is too long")
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.handle(json.loads(line), nursery)
            for call_id in list(self.calls):
                self.stop(call_id)

    def handle(self, command: dict[str, Any], nursery: trio.Nursery) -> None:
        op = command.get("op")
        if op == "call":
            nursery.start_soon(self.call, command)
        elif op == "stop":
            self.stop(int(command["id"]))
        else:
            raise LocalProtocolError(f"unknown command from the lab: {op!r}")

    def stop(self, call_id: int) -> None:
        entry = self.calls.get(call_id)
        if entry is None:
            return
        ctx, scope = entry
        ctx._stop.set()
        if ctx.waiting_for_stop:
            scope.deadline = min(scope.deadline, trio.current_time() + STOP_GRACE)
        else:
            scope.cancel()

    async def call(self, command: dict[str, Any]) -> None:
        call_id = int(command["id"])
        ctx = LabContext(self.spec, call_id, self.channel)
        scope = trio.CancelScope()
        self.calls[call_id] = (ctx, scope)
        reference = command.get("fn", "?")
        try:
            fn = resolve_function(reference)
            with scope:
                value = await fn(ctx, *command.get("args", ()), **command.get("kwargs", {}))
            if scope.cancelled_caught:
                self.channel.send({"event": "stopped", "id": call_id})
                return
            try:
                self.channel.send({"event": "result", "id": call_id, "value": value})
            except (TypeError, ValueError) as exc:
                raise LocalProtocolError(f"{reference} returned a value that is not JSON: "
                                         f"{exc}") from None
        except Exception as exc:  # reported to the lab, which raises LabProcessError
            self.channel.send({
                "event": "error", "id": call_id, "type": type(exc).__qualname__,
                "message": str(exc) or type(exc).__name__,
                "traceback": "".join(traceback.format_exception(exc)),
            })
        finally:
            del self.calls[call_id]


def main(argv: list[str]) -> int:
    """Run the agent whose spec is the JSON file ``argv[0]``."""
    if len(argv) != 1:
        print("usage: python -m flarelab.lab.agent SPEC_FILE", file=sys.stderr)
        return 2
    spec = AgentSpec.from_json(Path(argv[0]).read_text())
    for entry in reversed(spec.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # stdout is the lab's channel; everything else printed goes to stderr
    channel = _Channel(os.dup(1))
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    async def run() -> None:
        await _Agent(spec, channel).run(trio.lowlevel.FdStream(os.dup(0)))

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
