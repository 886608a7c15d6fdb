"""The standalone trace page (``flarelab trace view``) and the one-way imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from flarelab.cli import main
from flarelab.tracing.export import write_trace
from flarelab.tracing.records import SpanRecord
from flarelab.workbench.html import trace_html


def _embedded_sources(page: str) -> dict[str, dict]:
    """Return the data of the named ColumnDataSources embedded in a Bokeh page."""
    match = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', page,
                      re.S)
    assert match is not None
    found: dict[str, dict] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            attrs = node.get("attributes")
            if node.get("name") == "ColumnDataSource" and isinstance(attrs, dict) \
                    and isinstance(attrs.get("name"), str):
                found[attrs["name"]] = attrs.get("data", {})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(match.group(1)))
    return found


def test_the_page_embeds_bokehjs_and_the_diagram(trace_records: list[SpanRecord]) -> None:
    page = trace_html(trace_records, title="a <test> trace")
    assert "cdn.bokeh.org" not in page and "Bokeh" in page  # BokehJS inline, no CDN
    assert "a &lt;test&gt; trace" in page
    sources = _embedded_sources(page)
    assert {"flarelab-sequence-arrows", "flarelab-sequence-marks", "flarelab-waterfall-all",
            "flarelab-waterfall-rows"} <= set(sources)
    assert "noise.msg1 e" in json.dumps(sources["flarelab-sequence-arrows"])


def test_trace_view_command(tmp_path: Path, trace_records: list[SpanRecord],
                            capsys) -> None:  # type: ignore[no-untyped-def]
    trace = tmp_path / "run.jsonl"
    write_trace(trace, trace_records)
    assert main(["trace", "view", str(trace)]) == 0
    page = tmp_path / "run.html"
    assert page.exists() and "flarelab trace: run.jsonl" in page.read_text()
    assert f"{len(trace_records)} span records" in capsys.readouterr().out
    out = tmp_path / "other.html"
    assert main(["trace", "view", str(trace), "-o", str(out), "--title", "T"]) == 0
    assert out.exists()
    assert main(["trace", "view", str(tmp_path / "missing.jsonl")]) == 1


def test_a_running_node_never_imports_the_workbench() -> None:
    code = """
import sys, trio
from flarelab import Node, NodeConfig, SpanBus, TracingConfig
async def main():
    bus = SpanBus()
    cfg = NodeConfig(listen_addrs=["/ip4/127.0.0.1/tcp/0"], tracing=TracingConfig(bus=bus))
    async with Node(cfg) as a, Node(NodeConfig(listen_addrs=["/ip4/127.0.0.1/tcp/0"])) as b:
        await a.ping(b.addrs[0])
trio.run(main)
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("bokeh", "ipywidgets", "jupyter_bokeh", "IPython")
             or m.startswith("flarelab.workbench"))
print(bad)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
