"""tracing/CONVENTIONS.md and the constants in code agree, in both directions."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from flarelab.tracing import metrics, spans

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "tracing" / "CONVENTIONS.md"

Table = tuple[str, list[str], list[list[str]]]  # heading, header cells, rows


def _cells(line: str) -> list[str]:
    return [cell.strip().strip("`").strip() for cell in line.strip().strip("|").split("|")]


def _tables(text: str) -> list[Table]:
    """Return every Markdown table with the heading it sits under."""
    lines = text.splitlines()
    tables: list[Table] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        is_table = (
            line.startswith("|")
            and i + 1 < len(lines)
            and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()) is not None
        )
        if not is_table:
            i += 1
            continue
        header = _cells(line)
        rows = []
        i += 2
        while i < len(lines) and lines[i].startswith("|"):
            rows.append(_cells(lines[i]))
            i += 1
        tables.append((heading, header, rows))
    return tables


def _module_for(heading: str) -> ModuleType:
    return metrics if heading.startswith("Metrics") else spans


def _documented() -> dict[str, dict[str, tuple[str, str]]]:
    """Map module name -> constant -> (documented value, heading)."""
    out: dict[str, dict[str, tuple[str, str]]] = {"spans": {}, "metrics": {}}
    for heading, header, rows in _tables(DOC.read_text(encoding="utf-8")):
        assert "Constant" in header, f"table under {heading!r} has no Constant column"
        col = header.index("Constant")
        module = _module_for(heading).__name__.rsplit(".", 1)[-1]
        for row in rows:
            assert len(row) == len(header), f"malformed row under {heading!r}: {row}"
            constant, value = row[col], row[0]
            assert constant not in out[module], f"{constant} documented twice"
            out[module][constant] = (value, heading)
    return out


def _code_constants(module: ModuleType, prefix: str = "") -> dict[str, str]:
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and value.startswith(prefix)
    }


def test_doc_has_the_expected_tables() -> None:
    headings = [heading for heading, _, _ in _tables(DOC.read_text(encoding="utf-8"))]
    assert headings == ["Span names", "Attribute keys", "Events", "Event attributes",
                        "Values", "Metrics"]


def test_a_disagreement_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text(encoding="utf-8")
    for changed in (text.replace("| `ping` | `PING` |", "| `pong` | `PING` |"),
                    text.replace("| `perf` | `PERF` |", "| `perf` | `PERF_X` |")):
        doc = tmp_path / "CONVENTIONS.md"
        doc.write_text(changed, encoding="utf-8")
        monkeypatch.setattr(sys.modules[__name__], "DOC", doc)
        with pytest.raises(AssertionError):
            test_every_constant_is_documented_with_its_value(spans, "")


@pytest.mark.parametrize(("module", "prefix"), [(spans, ""), (metrics, "libp2p_")])
def test_every_constant_is_documented_with_its_value(module: ModuleType, prefix: str) -> None:
    documented = _documented()[module.__name__.rsplit(".", 1)[-1]]
    code = _code_constants(module, prefix)
    missing = sorted(set(code) - set(documented))
    assert not missing, f"constants not in CONVENTIONS.md: {missing}"
    unknown = sorted(set(documented) - set(code))
    assert not unknown, f"CONVENTIONS.md names constants the code lacks: {unknown}"
    wrong = {name: (code[name], documented[name][0]) for name in code
             if code[name] != documented[name][0]}
    assert not wrong, f"values differ (code, doc): {wrong}"


def test_names_follow_the_rules() -> None:
    documented = _documented()
    attribute_keys = set()
    for constant, (value, heading) in documented["spans"].items():
        if heading == "Span names":
            assert re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)?", value), constant
        elif heading in ("Attribute keys", "Event attributes"):
            assert value.split(".")[0] in ("network", "libp2p", "message"), constant
            attribute_keys.add(value)
        elif heading == "Events":
            assert re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", value), constant
    for heading, header, rows in _tables(DOC.read_text(encoding="utf-8")):
        if heading == "Values":
            col = header.index("Attribute")
            for row in rows:
                assert row[col] in attribute_keys, f"value {row[0]} of unknown {row[col]}"
    for value, _ in documented["metrics"].values():
        assert re.fullmatch(r"libp2p_[a-z]+_[a-z_]+", value), value


def test_outcomes_are_the_hole_punch_taxonomy() -> None:
    outcomes = {value for name, value in _code_constants(spans).items()
                if name.startswith("OUTCOME_")}
    assert outcomes == {"success", "connection_reversed", "direct_dial", "no_suitable_address",
                        "timeout", "protocol_error", "failed"}
