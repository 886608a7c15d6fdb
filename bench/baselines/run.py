"""Measure every baseline in one run and return them by name, for benchmarks that print ratios.

From another benchmark (bench/ is on sys.path when a bench/*.py script runs):

    from _common import Report
    from baselines.run import measure_baselines

    report = Report("flarelab TCP")
    base = measure_baselines(report=report)  # or `await measure_baselines_async(...)` in trio
    report.ratio("perf upload vs py-libp2p", ours, base["pylibp2p.perf.1proc.upload"], goal=3)

Standalone: `.venv/bin/python bench/baselines/run.py [--quick] [--json FILE]`.
The py-libp2p side runs in .venv-pylibp2p, which bench/pylibp2p/setup.sh creates (called here
when the venv is missing, unless --no-setup).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from functools import partial
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from _common import BENCH_DIR, GIB, MIB, REPO_ROOT, Report, Result, add_json_arg, finish

from baselines.chacha_pipe import measure_chacha
from baselines.raw_tcp import measure_raw_tcp

PYLIBP2P_VENV = REPO_ROOT / ".venv-pylibp2p"
PYLIBP2P_SETUP = BENCH_DIR / "pylibp2p" / "setup.sh"
PYLIBP2P_PERF = BENCH_DIR / "pylibp2p" / "perf.py"
PYLIBP2P_STAMP = PYLIBP2P_VENV / ".installed-libp2p-0.8.1"  # written last by setup.sh
PYLIBP2P_MIB = 128  # per direction per perf run, at scale 1


class BaselineError(RuntimeError):
    """A baseline could not be measured (its environment is missing or its run failed)."""


def ensure_pylibp2p_venv(setup: bool = True) -> Path:
    """Return the py-libp2p interpreter, running setup.sh first unless the venv is complete."""
    python = PYLIBP2P_VENV / "bin" / "python"
    if not (python.exists() and PYLIBP2P_STAMP.exists()):
        if not setup:
            raise BaselineError(f"{PYLIBP2P_VENV} is missing: run bash {PYLIBP2P_SETUP}")
        done = subprocess.run(["bash", str(PYLIBP2P_SETUP)], check=False)
        if done.returncode != 0 or not python.exists():
            raise BaselineError(f"{PYLIBP2P_SETUP} failed (exit {done.returncode})")
    return python


async def measure_pylibp2p(
    *,
    scale: float = 1.0,
    repeat: int = 3,
    two_process: bool = True,
    setup: bool = True,
    notes: list[str] | None = None,
) -> dict[str, Result]:
    """Run bench/pylibp2p/perf.py in .venv-pylibp2p and return its results by name."""
    python = await trio.to_thread.run_sync(ensure_pylibp2p_venv, setup)
    mib = max(1, round(PYLIBP2P_MIB * scale))
    with tempfile.TemporaryDirectory(prefix="flarelab-bench-") as tmp:
        out = Path(tmp) / "pylibp2p.json"
        command = [str(python), str(PYLIBP2P_PERF), "--mib", str(mib), "--repeat", str(repeat)]
        command += ["--json", str(out)]
        if not two_process:
            command.append("--one-process")
        done = await trio.run_process(command, check=False, capture_stdout=True)
        if done.returncode != 0 or not out.exists():
            tail = done.stdout.decode(errors="replace")[-2000:]
            raise BaselineError(f"py-libp2p perf.py failed (exit {done.returncode}):\n{tail}")
        data = json.loads(out.read_text())
    if notes is not None:
        notes.extend(data.get("notes", []))
    return {r["name"]: Result.from_dict(r) for r in data["results"]}


BASELINES = ("raw_tcp", "chacha_pipe", "pylibp2p")


async def measure_baselines_async(
    *,
    scale: float = 1.0,
    repeat: int = 3,
    two_process: bool = True,
    include: Collection[str] = BASELINES,
    setup: bool = True,
    report: Report | None = None,
) -> dict[str, Result]:
    """Measure the baselines named in include; add them (and notes) to report if given.

    scale multiplies the transfer sizes (1.0: 1 GiB per raw/ChaCha run, 128 MiB each way per
    py-libp2p run); repeat is the number of timed runs per throughput figure. Raises
    BaselineError if py-libp2p cannot be run.
    """
    unknown = set(include) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; choose from {BASELINES}")
    total = max(MIB, round(GIB * scale / MIB) * MIB)
    notes: list[str] = []
    results: dict[str, Result] = {}
    for name in BASELINES:
        if name not in include:
            continue
        start = time.perf_counter()
        if name == "raw_tcp":
            results.update(await measure_raw_tcp(total, repeat, two_process=two_process))
        elif name == "chacha_pipe":
            results.update(await measure_chacha(total, repeat, two_process=two_process))
        else:
            results.update(
                await measure_pylibp2p(
                    scale=scale, repeat=repeat, two_process=two_process, setup=setup, notes=notes
                )
            )
        notes.append(f"{name} took {time.perf_counter() - start:.1f} s")
    if report is not None:
        report.extend(results)
        for text in notes:
            report.note(text)
    return results


def measure_baselines(
    *,
    scale: float = 1.0,
    repeat: int = 3,
    two_process: bool = True,
    include: Collection[str] = BASELINES,
    setup: bool = True,
    report: Report | None = None,
) -> dict[str, Result]:
    """Run `measure_baselines_async` in a fresh trio run (from synchronous code)."""
    return trio.run(
        partial(
            measure_baselines_async,
            scale=scale,
            repeat=repeat,
            two_process=two_process,
            include=include,
            setup=setup,
            report=report,
        )
    )


def main() -> None:
    """Measure every baseline and print them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="transfer size factor (1.0)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput figure (3)")
    parser.add_argument(
        "--quick", action="store_true", help="a fast look: --scale 0.125 --repeat 1"
    )
    parser.add_argument("--one-process", action="store_true", help="skip two-process runs")
    parser.add_argument(
        "--only",
        default=",".join(BASELINES),
        help=f"comma-separated baselines to measure (default {','.join(BASELINES)})",
    )
    parser.add_argument("--no-setup", action="store_true", help="never run pylibp2p/setup.sh")
    add_json_arg(parser)
    args = parser.parse_args()
    scale, repeat = (0.125, 1) if args.quick else (args.scale, args.repeat)
    report = Report("baselines over loopback (raw TCP, ChaCha pipe, py-libp2p)")
    start = time.perf_counter()
    measure_baselines(
        scale=scale,
        repeat=repeat,
        two_process=not args.one_process,
        include=[name.strip() for name in args.only.split(",") if name.strip()],
        setup=not args.no_setup,
        report=report,
    )
    report.note(f"all measured in {time.perf_counter() - start:.1f} s")
    finish(report, args.json)


if __name__ == "__main__":
    main()
