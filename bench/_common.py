"""Share the small helpers every flarelab benchmark uses.

Timing and statistics (`measure`, `Stats`), results and ratios (`Result`, `Report`), byte-exact
transfer checks (`Pattern`, `PatternChecker`, from _pattern.py), memory (`rss_mib`) and child
processes (`spawn_python`, `run_python`).

This module needs only the standard library and trio, so scripts that run in another
virtualenv (bench/pylibp2p/ runs in .venv-pylibp2p) import it too: never import flarelab here.
Throughput is in MB/s (10**6 bytes per second); latencies are in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import trio
from _pattern import (
    CHUNK,
    MAX_SPAN,
    PATTERN_PERIOD,
    Pattern,
    PatternChecker,
    TransferCheck,
    TransferError,
)

__all__ = [
    "BENCH_DIR",
    "CHUNK",
    "GIB",
    "HIGHER_IS_BETTER_UNITS",
    "MAX_SPAN",
    "MB",
    "MIB",
    "PATTERN_PERIOD",
    "REPO_ROOT",
    "Child",
    "Pattern",
    "PatternChecker",
    "Ratio",
    "Report",
    "Result",
    "Stats",
    "TransferCheck",
    "TransferError",
    "add_json_arg",
    "emit_json",
    "finish",
    "machine_info",
    "measure",
    "median",
    "p90",
    "percentile",
    "rss_mib",
    "run_python",
    "spawn_python",
    "throughput_mbps",
    "venv_python",
    "wait_for_stdin_eof",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

MB = 1_000_000
MIB = 1 << 20
GIB = 1 << 30

# Units for which a bigger number is better; every other unit (ms, MiB, s) is a cost.
HIGHER_IS_BETTER_UNITS = frozenset({"MB/s", "ops/s", "msg/s"})


# --- statistics --------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0..100) of samples, interpolating linearly."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in 0..100, got {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(samples: Sequence[float]) -> float:
    """Return the median of samples."""
    return percentile(samples, 50)


def p90(samples: Sequence[float]) -> float:
    """Return the 90th percentile of samples."""
    return percentile(samples, 90)


@dataclass(frozen=True, slots=True)
class Stats:
    """Summarise a list of samples (seconds, or whatever unit they were taken in)."""

    samples: tuple[float, ...]
    median: float
    p90: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Summarise samples."""
        return cls(
            samples=tuple(samples),
            median=median(samples),
            p90=p90(samples),
            min=min(samples),
            max=max(samples),
        )

    def scaled(self, factor: float) -> Stats:
        """Return the same statistics multiplied by factor (e.g. 1000 for s -> ms)."""
        return Stats.of([s * factor for s in self.samples])

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        """Return median, p90, min, max and the sample count as a plain dict."""
        return {
            "n": len(self.samples),
            "median": round(self.median, digits),
            "p90": round(self.p90, digits),
            "min": round(self.min, digits),
            "max": round(self.max, digits),
        }


async def measure(fn: Callable[[], Awaitable[object]], repeat: int, *, warmup: int = 1) -> Stats:
    """Await fn() warmup times untimed, then repeat times timed; return seconds per call."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return Stats.of(samples)


def throughput_mbps(nbytes: int, seconds: float) -> float:
    """Return MB/s (10**6 bytes per second)."""
    if math.isnan(seconds):
        return math.nan
    return nbytes / seconds / MB if seconds > 0 else math.inf


# --- results, ratios and the printer -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """One measured figure: a name like `raw_tcp.copy.1proc`, a value and its unit."""

    name: str
    value: float
    unit: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        """Tell whether a bigger value is better (throughput) or worse (latency, memory)."""
        return self.unit in HIGHER_IS_BETTER_UNITS

    def as_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """Rebuild a result from `as_dict` output (e.g. a child process's JSON)."""
        value = data["value"]
        return cls(
            str(data["name"]),
            math.nan if value is None else float(value),
            str(data["unit"]),
            data.get("extra", {}),
        )


@dataclass(frozen=True, slots=True)
class Ratio:
    """Ours against a baseline measured in the same run, checked against a goal.

    `value` is always ours / baseline. For higher-is-better figures the goal is a minimum
    (ours must be at least goal times the baseline); for costs it is a maximum.
    """

    name: str
    ours: float
    baseline: float
    goal: float
    higher_is_better: bool
    unit: str = ""

    @property
    def value(self) -> float:
        """Return ours / baseline."""
        if self.baseline == 0:
            return math.inf if self.ours > 0 else math.nan
        return self.ours / self.baseline

    @property
    def passed(self) -> bool:
        """Tell whether the ratio meets the goal."""
        if math.isnan(self.value):
            return False
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def as_dict(self) -> dict[str, Any]:
        """Return the ratio as JSON-ready data."""
        return {
            "name": self.name,
            "ours": self.ours,
            "baseline": self.baseline,
            "unit": self.unit,
            "ratio": self.value,
            "goal": self.goal,
            "goal_is": "min" if self.higher_is_better else "max",
            "passed": self.passed,
        }


def _fmt(value: float) -> str:
    """Format a number with about four significant digits, without exponent noise."""
    if math.isinf(value) or math.isnan(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}" if magnitude >= 0.01 else f"{value:.4f}"


def _extra_text(extra: Mapping[str, Any]) -> str:
    """Render a result's extra fields compactly for the table."""
    parts = []
    for key, value in extra.items():
        if isinstance(value, float):
            parts.append(f"{key}={_fmt(value)}")
        elif isinstance(value, dict | list):
            continue  # details go to the JSON file, not the table
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


class Report:
    """Collect results and ratios; print them as aligned rows and write them as JSON."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.results: list[Result] = []
        self.ratios: list[Ratio] = []
        self.notes: list[str] = []
        self.load_at_start = os.getloadavg()[0]

    def add(self, result: Result) -> Result:
        """Record a result and return it."""
        self.results.append(result)
        return result

    def extend(self, results: Mapping[str, Result] | Sequence[Result]) -> None:
        """Record several results (a dict from `run.measure_baselines` works too)."""
        values = results.values() if isinstance(results, Mapping) else results
        for result in values:
            self.add(result)

    def note(self, text: str) -> None:
        """Record a line printed under the table (a truncation, a caveat)."""
        self.notes.append(text)

    def get(self, name: str) -> Result:
        """Return the recorded result called name."""
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def ratio(
        self,
        name: str,
        ours: Result | float,
        baseline: Result | float,
        goal: float,
        *,
        higher_is_better: bool | None = None,
    ) -> Ratio:
        """Record ours / baseline against goal; the direction comes from the unit if not given."""
        unit = ""
        for side in (ours, baseline):
            if isinstance(side, Result):
                unit = unit or side.unit
                if higher_is_better is None:
                    higher_is_better = side.higher_is_better
        if higher_is_better is None:
            raise ValueError("give higher_is_better when neither side is a Result")
        ratio = Ratio(
            name=name,
            ours=ours.value if isinstance(ours, Result) else float(ours),
            baseline=baseline.value if isinstance(baseline, Result) else float(baseline),
            goal=goal,
            higher_is_better=higher_is_better,
            unit=unit,
        )
        self.ratios.append(ratio)
        return ratio

    def render(self) -> str:
        """Return the report as text: a results table, then the ratio section."""
        lines = [f"== {self.title} =="]
        if self.results:
            width = max(len(r.name) for r in self.results)
            values = [_fmt(r.value) for r in self.results]
            vwidth = max(len(v) for v in values)
            uwidth = max(len(r.unit) for r in self.results)
            for result, value in zip(self.results, values, strict=True):
                extra = _extra_text(result.extra)
                row = f"{result.name:<{width}}  {value:>{vwidth}} {result.unit:<{uwidth}}"
                lines.append(f"{row}  {extra}".rstrip())
        for text in self.notes:
            lines.append(f"note: {text}")
        if self.ratios:
            lines.append("-- ratio (ours / baseline, same run) --")
            width = max(len(r.name) for r in self.ratios)
            for r in self.ratios:
                sign = ">=" if r.higher_is_better else "<="
                verdict = "PASS" if r.passed else "FAIL"
                lines.append(
                    f"{r.name:<{width}}  {_fmt(r.ours):>8} / {_fmt(r.baseline):<8} {r.unit:<5}"
                    f" = {_fmt(r.value):>7}  goal {sign} {_fmt(r.goal):<6} {verdict}"
                )
        return "\n".join(lines)

    def print(self, file: TextIO | None = None) -> None:
        """Print the report (to stdout by default)."""
        print(self.render(), file=file or sys.stdout, flush=True)

    def as_dict(self) -> dict[str, Any]:
        """Return everything as strict-JSON-ready data (nan/inf become None), with the machine."""
        data: dict[str, Any] = _json_safe(
            {
                "title": self.title,
                "machine": {**machine_info(), "load_at_start": self.load_at_start},
                "results": [r.as_dict() for r in self.results],
                "ratios": [r.as_dict() for r in self.ratios],
                "notes": list(self.notes),
            }
        )
        return data

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write `as_dict()` to path; `-` means stdout."""
        text = json.dumps(self.as_dict(), indent=2, allow_nan=False) + "\n"
        if str(path) == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            Path(path).write_text(text)


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (which strict JSON cannot carry) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def machine_info() -> dict[str, Any]:
    """Describe the machine and interpreter, for the JSON output."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "trio": trio.__version__,
        "executable": sys.executable,
        "loadavg": os.getloadavg(),  # other work on a shared machine skews single figures
    }


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """Add the common `--json FILE` option (`-` for stdout)."""
    parser.add_argument(
        "--json", metavar="FILE", help="also write the results as JSON to FILE ('-' for stdout)"
    )


# 1-minute load average per CPU above which a run's figures are suspect (our own two-process
# runs alone keep it near 1 per CPU).
BUSY_LOAD_PER_CPU = 1.0


def finish(report: Report, json_path: str | None) -> None:
    """Print the report, or with `--json -` write only JSON to stdout; else also write FILE.

    Warns (as a note) when the machine was already busy as the report began.
    """
    cpus = os.cpu_count() or 1
    if report.load_at_start > BUSY_LOAD_PER_CPU * cpus:
        report.note(
            f"the machine was busy when this run began (load average {report.load_at_start:.1f}"
            f" on {cpus} CPUs): absolute figures are unreliable, same-run ratios less so"
        )
    if json_path == "-":
        report.print(file=sys.stderr)
        report.write_json("-")
        return
    report.print()
    if json_path:
        report.write_json(json_path)


# --- memory and processes ----------------------------------------------------------------


def rss_mib(pid: int | None = None) -> float:
    """Return the resident set size of a process (default: this one) in MiB, from statm."""
    path = f"/proc/{pid}/statm" if pid is not None else "/proc/self/statm"
    with open(path) as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def venv_python(venv: str | os.PathLike[str] | None = None) -> str:
    """Return the interpreter of a virtualenv (relative paths are under the repo root)."""
    if venv is None:
        return sys.executable
    root = Path(venv)
    if not root.is_absolute():
        root = REPO_ROOT / root
    python = root / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"no interpreter at {python}: create the virtualenv first")
    return str(python)


class Child:
    """A Python child process speaking JSON lines on its stdout; closing stdin stops it."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()

    @property
    def pid(self) -> int:
        """Return the child's process id."""
        return self.process.pid

    async def readline(self) -> str:
        """Return the next line of the child's stdout ('' at end of output)."""
        stdout = self.process.stdout
        assert stdout is not None
        while b"\n" not in self._buffer:
            data = await stdout.receive_some(65536)
            if not data:
                tail = self._buffer.decode()
                self._buffer.clear()
                return tail
            self._buffer += data
        line, _, rest = self._buffer.partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode()

    async def read_json(self) -> dict[str, Any]:
        """Return the next JSON object the child printed (other lines are skipped)."""
        while True:
            line = await self.readline()
            if not line:
                code = self.process.poll()
                raise RuntimeError(f"child {self.pid} ended its output (exit code {code})")
            line = line.strip()
            if line.startswith("{"):
                return dict(json.loads(line))


@asynccontextmanager
async def spawn_python(
    script: str | os.PathLike[str],
    *args: str,
    venv: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stop_timeout: float = 10.0,
) -> AsyncIterator[Child]:
    """Run script in a child Python (of venv, default this one's) and stop it on exit.

    The child talks through JSON lines on its stdout (`emit_json`, read with
    `Child.read_json`) and should run until its stdin closes (`wait_for_stdin_eof`), which
    happens when this context exits; after stop_timeout it is killed. Its stderr is inherited.
    """
    command = [venv_python(venv), str(script), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full_env
    )
    try:
        yield Child(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                with trio.move_on_after(1):
                    await process.stdin.aclose()
            with trio.move_on_after(stop_timeout):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def wait_for_stdin_eof() -> None:
    """Return when this process's stdin closes (how a spawned child learns to stop)."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(4096):
            pass


def emit_json(data: Mapping[str, Any], file: IO[str] | None = None) -> None:
    """Print one JSON line (a child's way to talk to its parent)."""
    out = file or sys.stdout
    out.write(json.dumps(dict(data)) + "\n")
    out.flush()


def run_python(
    script: str | os.PathLike[str],
    *args: str,
    venv: str | os.PathLike[str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run script to completion in a child Python (of venv); capture stdout, pass stderr."""
    command = [venv_python(venv), str(script), *args]
    return subprocess.run(
        command,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
