"""Goals 1 and 2 of bench_node.py: perf throughput against its baselines, and tracing's cost.

Throughput runs in rounds. Each round measures, back to back: a raw trio TCP copy, our
perf-checked exchange (Yamux, then Mplex) and the real `/perf/1.0.0`, all in one process;
then the same with the receiving side in a child process; then py-libp2p 0.8.1 in
.venv-pylibp2p (one run each way, one process and two). The goal figures are the medians of
the per-round ratios (ours / baseline in the same round), so a machine whose speed wanders
between rounds -- this VM's does, by 20-30 %, whenever other jobs run -- skews both sides
of a ratio alike. The rows show each figure's median over the rounds.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from _common import MIB, Report, Result, Stats, TransferCheck
from _nodeperf import Exchange, Plan, node_config, node_pair, perf_checked, start_child
from baselines.chacha_pipe import measure_chacha
from baselines.pipe import (
    IdentityCodec,
    TransferRun,
    copy_one_process,
    copy_two_process,
    summarize,
)
from baselines.raw_tcp import SCRIPT as RAW_SCRIPT
from baselines.run import BaselineError, measure_pylibp2p

from flarelab.node import Node

__all__ = ["measure_throughput", "measure_tracing", "paired_median", "throughput_ratios"]

GOAL_VS_PYLIBP2P = 4.0
GOAL_VS_RAW_TCP = 0.25
GOAL_TRACING = 0.95
MODES = ("1proc", "2proc")
DIRECTIONS = ("upload", "download")

#: per-round values (MB/s, nan for a failed run) of every throughput figure, by name
Series = dict[str, list[float]]


def paired_median(ours: Sequence[float], baseline: Sequence[float]) -> tuple[float, int]:
    """Return the median of ours[i] / baseline[i] over the rounds where both exist, and n."""
    ratios = [
        a / b
        for a, b in zip(ours, baseline, strict=False)
        if not (math.isnan(a) or math.isnan(b)) and b > 0
    ]
    return (Stats.of(ratios).median if ratios else math.nan), len(ratios)


def summarize_exchanges(name: str, runs: list[Exchange], **extra: object) -> list[Result]:
    """Make upload and download Results (median MB/s over byte-exact runs)."""
    results = []
    for direction in DIRECTIONS:
        transfers = []
        for run in runs:
            check: TransferCheck = getattr(run, direction)
            if not run.ok(direction) and check.ok:  # arrived whole, yet the exchange failed
                check = TransferCheck(check.expected, check.received, first_mismatch=check.expected)
            transfers.append(
                TransferRun(check.expected, getattr(run, f"{direction}_seconds"), check)
            )
        result = summarize(f"{name}.{direction}", transfers, **extra)
        errors = [f"run {i + 1}: {r.error}" for i, r in enumerate(runs) if r.error]
        if errors:
            result = Result(
                result.name, result.value, result.unit, {**result.extra, "errors": errors}
            )
        results.append(result)
    return results


def merge_pylibp2p(rounds: list[dict[str, Result]], series: Series) -> dict[str, Result]:
    """Merge py-libp2p's per-round results: perf rows over the rounds, the rest the median."""
    merged: dict[str, Result] = {}
    for name in rounds[0]:
        per_round = [r[name] for r in rounds if name in r]
        values = [r.value for r in per_round]
        good = [v for v in values if not math.isnan(v)]
        first = per_round[0]
        extra = dict(first.extra)
        if name.startswith("pylibp2p.perf."):
            series[name] = values
            failures = [f for r in per_round for f in r.extra.get("failures", [])]
            extra.update(
                runs=len(values),
                best=round(max(good), 1) if good else math.nan,
                checked=f"{len(values) - len(good)} of {len(values)} FAILED"
                if failures or len(good) < len(values)
                else "byte-exact",
                mbps_each=[round(v, 1) for v in values],
            )
            if failures:
                extra["failures"] = failures
        elif len(per_round) > 1:
            extra["invocations"] = len(per_round)
        merged[name] = Result(name, Stats.of(good).median if good else math.nan, first.unit, extra)
    return merged


async def pylibp2p_round(plan: Plan, report: Report) -> dict[str, Result] | None:
    """Run bench/pylibp2p/perf.py once (one perf run each way); None if it cannot run."""
    try:
        notes: list[str] = []
        results = await measure_pylibp2p(
            scale=plan.pylibp2p_scale, repeat=1, two_process=plan.two_process, notes=notes
        )
    except BaselineError as err:
        report.note(f"py-libp2p baseline FAILED: {err}")
        return None
    for text in notes:
        if not text.startswith("the machine was busy"):
            report.note(f"py-libp2p: {text}")
    return results


async def measure_throughput(plan: Plan, report: Report) -> tuple[dict[str, Result], Series]:
    """Measure every throughput figure in rounds; return the rows and the per-round values."""
    nbytes, raw_bytes = plan.mib * MIB, plan.raw_mib * MIB
    raw = IdentityCodec()
    ours: dict[str, list[Exchange]] = {}
    perf10: Series = {}
    raw_runs: dict[str, list[TransferRun]] = {mode: [] for mode in MODES}
    py_rounds: list[dict[str, Result]] = []
    modes = MODES if plan.two_process else MODES[:1]
    async with AsyncExitStack() as stack:
        targets: dict[str, tuple[Node, Any]] = {}
        for muxer in ("yamux", "mplex"):
            server, client = await stack.enter_async_context(node_pair(muxer=muxer))
            targets[f"1proc.{muxer}"] = (client, server.peer_id)
        if plan.two_process:
            for muxer in ("yamux", "mplex"):
                _, ready = await start_child(stack, "--muxer", muxer)
                client = await stack.enter_async_context(
                    Node(node_config(muxer=muxer, listen=False, label="C"))
                )
                conn = await client.connect(ready["addr"])
                targets[f"2proc.{muxer}"] = (client, conn.remote_peer)
        for client, peer in targets.values():  # warm up every path
            await perf_checked(client, peer, 16 * MIB, 16 * MIB, seed=99)
        await copy_one_process(raw, 64 * MIB)
        for i in range(plan.repeat):
            for mode in modes:
                if mode == "1proc":
                    raw_runs[mode].append(await copy_one_process(raw, raw_bytes, seed=i + 1))
                else:
                    raw_runs[mode] += await copy_two_process(
                        raw, RAW_SCRIPT, [], raw_bytes, 1, seed=i + 1, warmup_bytes=16 * MIB
                    )
                for key, (client, peer) in targets.items():
                    if key.startswith(mode):
                        run = await perf_checked(client, peer, nbytes, nbytes, seed=2 * i + 1)
                        ours.setdefault(key, []).append(run)
                        if key.endswith("yamux"):
                            got = await client.perf(peer, upload=nbytes, download=nbytes)
                            perf10.setdefault(f"flarelab.perf.{mode}.upload", []).append(
                                got.upload_mbps
                            )
                            perf10.setdefault(f"flarelab.perf.{mode}.download", []).append(
                                got.download_mbps
                            )
            if plan.pylibp2p:
                start = time.perf_counter()
                py = await pylibp2p_round(plan, report)
                if py is not None:
                    py_rounds.append(py)
                    report.note(f"py-libp2p round {i + 1} took {time.perf_counter() - start:.1f} s")
    results: dict[str, Result] = {}
    series: Series = {}
    if py_rounds:
        results.update(merge_pylibp2p(py_rounds, series))
    for mode, runs in raw_runs.items():
        if runs:
            name = f"raw_tcp.copy.{mode}"
            results[name] = summarize(name, runs)
            series[name] = [r.mbps if r.check.ok else math.nan for r in runs]
    results.update(await measure_chacha(raw_bytes, plan.repeat, two_process=plan.two_process))
    for key, exchanges in ours.items():
        mode, muxer = key.split(".")
        name = f"flarelab.perf_checked.{mode}" + ("" if muxer == "yamux" else f".{muxer}")
        for result in summarize_exchanges(name, exchanges, muxer=muxer):
            results[result.name] = result
        for direction in DIRECTIONS:
            series[f"{name}.{direction}"] = [r.mbps(direction) for r in exchanges]
    for name, values in perf10.items():
        series[name] = values
        results[name] = Result(
            name,
            Stats.of(values).median,
            "MB/s",
            {
                "runs": len(values),
                "MiB_per_run": plan.mib,
                "best": round(max(values), 1),
                "checked": "length-only",
                "protocol": "/perf/1.0.0",
                "mbps_each": [round(v, 1) for v in values],
            },
        )
    return results, series


def throughput_ratios(
    report: Report, results: dict[str, Result], series: Series, *, pylibp2p: bool = True
) -> None:
    """Add goal 1's ratios (medians of per-round ratios) and the no-goal comparisons.

    ``pylibp2p=False``: py-libp2p was left out on purpose; its lines are not printed (a
    py-libp2p that failed to run makes its lines FAIL).
    """
    if not pylibp2p:
        report.note("[1] the ratios against py-libp2p were not measured (--no-pylibp2p)")
    for mode in MODES:
        for direction in DIRECTIONS:
            name = f"flarelab.perf_checked.{mode}.{direction}"
            if name not in series:
                continue
            ours = series[name]
            for base, label, goal in (
                (f"pylibp2p.perf.{mode}.{direction}", "py-libp2p", GOAL_VS_PYLIBP2P),
                (f"raw_tcp.copy.{mode}", "raw TCP copy", GOAL_VS_RAW_TCP),
            ):
                if label == "py-libp2p" and not pylibp2p:
                    continue
                value, n = paired_median(ours, series.get(base, []))
                report.ratio(
                    f"[1] {mode} {direction} vs {label} (median of {n} rounds)",
                    value,
                    1.0,
                    goal,
                    higher_is_better=True,
                )
            for other in (
                f"flarelab.perf_checked.{mode}.mplex.{direction}",
                f"flarelab.perf.{mode}.{direction}",
            ):
                value, n = paired_median(
                    series.get(other, []), series.get(f"pylibp2p.perf.{mode}.{direction}", [])
                )
                if n:
                    report.note(f"{other}: {value:.1f}x py-libp2p (no goal)")
            chacha = results.get(f"chacha_pipe.copy.{mode}")
            if chacha is not None and chacha.value > 0:
                share = results[name].value / chacha.value
                report.note(f"{name}: {share:.0%} of the ChaCha pipe ceiling (no goal)")


# --- goal 2 ----------------------------------------------------------------------------------


async def measure_tracing(plan: Plan, report: Report) -> dict[str, Result]:
    """Time the same exchange on untraced and traced node pairs, interleaved ABBA.

    Each round runs both back to back, so the ratio of a round's two runs is taken at one
    moment of a machine whose speed wanders; the goal figure is the median of those ratios.
    """
    nbytes = plan.tracing_mib * MIB
    runs: dict[str, list[Exchange]] = {"off": [], "bus+file": []}
    with tempfile.TemporaryDirectory(prefix="flarelab-bench-") as tmp:
        async with (
            node_pair(tracing="off") as (off_server, off_client),
            node_pair(tracing="bus+file", trace_dir=Path(tmp)) as (on_server, on_client),
        ):
            pairs = {"off": (off_client, off_server), "bus+file": (on_client, on_server)}
            for client, server in pairs.values():
                await perf_checked(client, server.peer_id, 16 * MIB, 16 * MIB, seed=99)
            for i in range(plan.tracing_rounds):
                order = list(pairs) if i % 4 in (0, 3) else list(reversed(pairs))
                for mode in order:
                    client, server = pairs[mode]
                    runs[mode].append(
                        await perf_checked(client, server.peer_id, nbytes, nbytes, seed=2 * i + 1)
                    )
        spans_written = count_lines(tmp)
    results: dict[str, Result] = {}
    for mode, mode_runs in runs.items():
        good = [r for r in mode_runs if not math.isnan(r.combined_mbps)]
        name = f"flarelab.tracing_{mode.replace('+', '_')}.1proc"
        extra: dict[str, Any] = {
            "runs": len(mode_runs),
            "MiB_each_way": plan.tracing_mib,
            "checked": f"{len(mode_runs) - len(good)} of {len(mode_runs)} FAILED"
            if len(good) < len(mode_runs)
            else "byte-exact",
            "mbps_each": [round(r.combined_mbps, 1) for r in mode_runs],
        }
        if mode != "off":
            extra["spans_written"] = spans_written
        wall = Stats.of([r.combined_mbps for r in good]).median if good else math.nan
        cpu = Stats.of([r.cpu_mbps for r in good]).median if good else math.nan
        results[name] = Result(name, wall, "MB/s", extra)
        results[f"{name}.cpu"] = Result(f"{name}.cpu", cpu, "MB/s", {"per": "CPU second"})
    for what, attr in (("wall", "combined_mbps"), ("cpu", "cpu_mbps")):
        value, n = paired_median(
            [getattr(r, attr) for r in runs["bus+file"]], [getattr(r, attr) for r in runs["off"]]
        )
        name = f"flarelab.tracing.traced_over_untraced.{what}"
        results[name] = Result(name, value, "x", {"pairs": n})
    if not spans_written:
        report.note("tracing: the traced nodes wrote no spans; the comparison is void")
    return results


def tracing_ratios(report: Report, results: dict[str, Result]) -> None:
    """Add goal 2's ratios."""
    for what, label in (("wall", "wall clock"), ("cpu", "per CPU second")):
        paired = results[f"flarelab.tracing.traced_over_untraced.{what}"]
        report.ratio(
            f"[2] traced / untraced perf, {label} (median of {paired.extra['pairs']} pairs)",
            paired.value,
            1.0,
            GOAL_TRACING,
            higher_is_better=True,
        )


def count_lines(folder: str) -> int:
    """Return the number of lines in folder's JSON-lines trace files (one span each)."""
    total = 0
    for path in Path(folder).glob("*.jsonl"):
        with path.open("rb") as f:
            total += sum(1 for _ in f)
    return total
