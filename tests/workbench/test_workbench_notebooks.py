"""Every notebook runs headless, top to bottom, with its own assertions (nbclient).

The notebooks assert on real outcomes (connections built, spans present, the widgets'
kernel-side Bokeh and ipywidgets state); a failing assertion fails the cell and this test.
They are committed without outputs, and binder/ installs what they need.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import nbformat
import pytest
from conftest import workbench_notebooks
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = workbench_notebooks()

pytestmark = pytest.mark.notebook


def test_there_are_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_transports_security_muxers.ipynb", "02_autonat.ipynb", "03_circuit_relay.ipynb",
        "04_dcutr_hole_punching.ipynb", "05_tracing_your_own_node.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name
    assert "widgets" not in nb.metadata


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.pop("FLARELAB_KEEP_RUNNING", None)
    try:
        client = NotebookClient(nb, timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        if env_before is not None:
            os.environ["FLARELAB_KEEP_RUNNING"] = env_before
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    # the widgets reached the front end's state (ipywidgets + BokehModel comms)
    models = {v.get("model_name") or v.get("_model_name") for v in client.widget_state.values()}
    assert "BokehModel" in models or any("Bokeh" in str(m) for m in models)


def test_binder_installs_the_workbench_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for name in ("jupyterlab", "ipykernel", "ipywidgets", "bokeh", "jupyter_bokeh"):
        assert any(dep.startswith(name) for dep in extras["workbench"]), name
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert ".[workbench,otlp]" in post_build
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)
    assert (ROOT / "binder" / "runtime.txt").read_text().startswith("python-3.11")
