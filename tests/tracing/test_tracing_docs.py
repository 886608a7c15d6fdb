"""The recipes in tracing/ stay consistent: the collector config wires what it defines."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from flarelab.tracing.provider import TracingConfig

TRACING = Path(__file__).resolve().parents[2] / "tracing"


def _parse_yaml_subset(text: str) -> dict[str, Any]:
    """Parse the YAML subset the collector config uses: nested mappings, scalars, [a, b]."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        value = value.strip()
        if not value:
            parent[key] = {}
            stack.append((indent, parent[key]))
        elif value.startswith("["):
            parent[key] = [item.strip() for item in value.strip("[]").split(",") if item.strip()]
        else:
            parent[key] = value
    return root


def test_collector_config_is_wired() -> None:
    config = _parse_yaml_subset((TRACING / "otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline[kind]:
                assert name in config[kind], f"{name} is used but not defined under {kind}"
    assert "otlp/jaeger" in pipelines["traces"]["exporters"]
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"


def test_readme_names_every_config_field() -> None:
    readme = (TRACING / "README.md").read_text()
    for field in dataclasses.fields(TracingConfig):
        assert f"`{field.name}`" in readme, field.name
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in readme


def test_recipes_link_to_files_that_exist() -> None:
    for doc in ("README.md", "jaeger.md", "CONVENTIONS.md"):
        for target in re.findall(r"\]\(([^)#:]+)\)", (TRACING / doc).read_text()):
            assert (TRACING / target).exists(), f"{doc} links to missing {target}"
