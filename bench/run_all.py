"""Run every benchmark and print one summary of every goal with PASS/FAIL.

Runs each `bench/bench_*.py` (bench_node first: it measures the baselines -- raw trio TCP,
the ChaCha pipe and py-libp2p 0.8.1 -- in its own run, next to the node) in a child process,
showing its report as it comes, then prints a table of every ratio the scripts reported and,
for bench_node, one line per goal (a goal passes when all its ratios pass). When bench_node
is not among the scripts run, `baselines/run.py` runs instead, so the baselines are always
measured.

Benchmarks are not tests: the exit status is 0 even when goals FAIL, and 1 only when a
benchmark crashed (non-zero exit, timeout, or no report).

Run: `.venv/bin/python bench/run_all.py [--quick] [--only node,yamux] [--json FILE]`
(`make bench`; about 4 minutes, `--quick` under one).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
FIRST = "bench_node.py"
BASELINES = BENCH_DIR / "baselines" / "run.py"
#: what bench_node's goal numbers stand for (its ratio names start with "[n]")
GOALS = {
    1: "perf throughput >= 4x py-libp2p and >= 25% of raw TCP (1 and 2 processes)",
    2: "tracing (span bus + trace file) costs <= 5% of perf throughput",
    3: "dial + Noise + Yamux ready: median <= 3 ms",
    4: "ping RTT median <= 0.3 ms",
    5: "RSS of a connected node <= 40 MiB",
}
#: options a script may take, and their values for a full and a --quick run. A script gets
#: only the options its --help lists; `--quick` itself wins when a script has it.
SIZE_OPTIONS = {"--mib": ("", "32"), "--repeat": ("", "1"), "--spans": ("", "5000")}
TIMEOUT = {False: 300.0, True: 120.0}  # seconds per script (full, quick)


@dataclass
class Run:
    """One script's run: its exit, time and JSON report (if it writes one)."""

    script: str
    command: list[str]
    returncode: int | None = None
    seconds: float = 0.0
    report: dict[str, Any] | None = None
    problem: str = ""
    wants_json: bool = False
    ratios: list[dict[str, Any]] = field(default_factory=list)

    @property
    def crashed(self) -> bool:
        """Tell whether the benchmark failed to run (as opposed to missing goals)."""
        return bool(self.problem)


def script_options(script: Path) -> str:
    """Return the script's --help text ('' if it has none)."""
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


def build_command(script: Path, quick: bool, json_path: Path) -> tuple[list[str], bool]:
    """Return the command line for script and whether it will write JSON."""
    help_text = script_options(script)
    command = [sys.executable, str(script)]
    for heading in ("options:", "optional arguments:"):  # argparse's, Python >= / < 3.10
        if heading in help_text:
            help_text = help_text.split(heading, 1)[1]  # not the description
            break
    has = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))
    if quick:
        if "--quick" in has:
            command.append("--quick")
        else:
            for option, (_, value) in SIZE_OPTIONS.items():
                if option in has:
                    command += [option, value]
    wants_json = "--json" in has
    if wants_json:
        command += ["--json", str(json_path)]
    return command, wants_json


def run_script(script: Path, quick: bool, tmp: Path) -> Run:
    """Run one benchmark, its output going straight to ours."""
    json_path = tmp / f"{script.stem}.json"
    command, wants_json = build_command(script, quick, json_path)
    run = Run(script.name, command, wants_json=wants_json)
    print(f"\n### {script.name} {' '.join(command[2:])}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, timeout=TIMEOUT[quick], check=False)
        run.returncode = done.returncode
        if done.returncode != 0:
            run.problem = f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        run.problem = f"timed out after {TIMEOUT[quick]:.0f} s"
    run.seconds = time.perf_counter() - start
    if wants_json and not run.problem:
        try:
            run.report = json.loads(json_path.read_text())
            run.ratios = list(run.report.get("ratios", []))
        except (OSError, ValueError) as err:
            run.problem = f"no JSON report ({err})"
    return run


def _fmt(value: float | None) -> str:
    if value is None:
        return "nan"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def summary(runs: list[Run], started: float) -> str:
    """Return the final table: scripts, every ratio, and bench_node's goals."""
    lines = ["", "=" * 100, "== summary: every goal, ours / baseline measured in the same run =="]
    for run in runs:
        status = f"CRASHED ({run.problem})" if run.crashed else "ok"
        if not run.wants_json and not run.crashed:
            status = "ok (no JSON report: its figures are in its output above)"
        lines.append(f"{run.script:<20} {run.seconds:6.1f} s  {status}")
    rows = [(run.script, r) for run in runs for r in run.ratios]
    if rows:
        width = max(len(r["name"]) for _, r in rows)
        lines.append("")
        lines.append(
            f"{'script':<17} {'ratio':<{width}}  {'ours':>8} {'baseline':>9} {'unit':<5}"
            f" {'ratio':>7}  goal       verdict"
        )
        for script, r in rows:
            sign = ">=" if r["goal_is"] == "min" else "<="
            verdict = "PASS" if r["passed"] else "FAIL"
            lines.append(
                f"{script.removesuffix('.py'):<17} {r['name']:<{width}}  {_fmt(r['ours']):>8}"
                f" {_fmt(r['baseline']):>9} {r['unit']:<5} {_fmt(r['ratio']):>7}  {sign} "
                f"{_fmt(r['goal']):<7} {verdict}"
            )
    node = next((run for run in runs if run.script == FIRST), None)
    if node is not None:
        lines.append("")
        lines.append("-- flarelab node goals --")
        for number, text in GOALS.items():
            mine = [r for r in node.ratios if r["name"].startswith(f"[{number}]")]
            if node.crashed:
                verdict = "CRASHED"
            elif not mine:
                verdict = "not measured"
            else:
                failed = [r for r in mine if not r["passed"]]
                verdict = "PASS" if not failed else f"FAIL ({len(failed)} of {len(mine)} ratios)"
            lines.append(f"goal {number}: {text:<78} {verdict}")
    crashed = [run.script for run in runs if run.crashed]
    lines.append("")
    lines.append(
        f"all benchmarks in {time.perf_counter() - started:.0f} s; "
        + (f"CRASHED: {', '.join(crashed)}" if crashed else "none crashed")
    )
    return "\n".join(lines)


def select_scripts(only: str | None) -> list[Path]:
    """Return the bench_*.py scripts to run, bench_node first (all, or those in only)."""
    scripts = sorted(BENCH_DIR.glob("bench_*.py"), key=lambda p: (p.name != FIRST, p.name))
    if only:
        names = (name.strip() for name in only.split(","))
        wanted = {name.removeprefix("bench_").removesuffix(".py") for name in names}
        scripts = [p for p in scripts if p.stem.removeprefix("bench_") in wanted]
        if "baselines" in wanted:
            scripts.insert(0, BASELINES)
    if not any(p.name == FIRST for p in scripts) and BASELINES not in scripts:
        scripts.insert(0, BASELINES)  # the baselines are always measured
    return scripts


def main() -> None:
    """Run the benchmarks, print the summary, exit 1 only if one crashed."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a fast look (under a minute)")
    parser.add_argument(
        "--only", help="comma list of benchmarks, e.g. node,yamux,noise,tracing,baselines"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every report as JSON")
    args = parser.parse_args()
    started = time.perf_counter()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="flarelab-bench-") as tmp:
        for script in select_scripts(args.only):
            runs.append(run_script(script, args.quick, Path(tmp)))
    print(summary(runs, started), flush=True)
    if args.json:
        data = {
            "quick": args.quick,
            "runs": [
                {
                    "script": run.script,
                    "command": run.command[1:],
                    "seconds": round(run.seconds, 1),
                    "problem": run.problem,
                    "report": run.report,
                }
                for run in runs
            ],
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    sys.exit(1 if any(run.crashed for run in runs) else 0)


if __name__ == "__main__":
    main()
