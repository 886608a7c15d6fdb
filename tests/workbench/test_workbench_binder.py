"""Every notebook runs headless in a fresh environment built from binder/'s files only.

The environment is built the way Binder (repo2docker) builds it: a new Python 3.11 venv,
``pip install --no-cache-dir -r binder/requirements.txt``, then ``bash binder/postBuild``
from the repository's root with that venv first on PATH. Nothing from the dev venv
(.venv) leaks in: the notebooks run in that venv's nbclient, on a kernelspec installed
into its prefix, and a first probe cell asserts the kernel's ``sys.prefix`` is that venv.
pip keeps the caller's settings (PIP_FIND_LINKS, indexes), so it works offline with a
local wheel directory and online with PyPI alike.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"
KERNEL_NAME = "flarelab-binder"
# bounds of each build step and of one notebook's run (its cells have 180 s each)
INSTALL_TIMEOUT = 600
NOTEBOOK_TIMEOUT = 420

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(900)]


def run_notebook_here(notebook: str, kernel_name: str, prefix: str, result_file: str) -> None:
    """Execute ``notebook`` with this interpreter's nbclient; write the outcome as JSON.

    Runs inside the Binder venv (its source is handed to that venv's python), so it uses
    only the standard library and what binder/ installed. The first cell executed is a
    probe asserting the kernel's ``sys.prefix`` is ``prefix``; notebook cells keep their
    own indexes in the outcome.
    """
    import asyncio
    import json
    import os
    import sys

    import nbformat
    from nbclient import NotebookClient

    outcome: dict[str, Any] = {
        "driver_prefix": os.path.realpath(sys.prefix), "kernel_prefix": None,
        "completed": False, "failed_cell": None, "widget_models": []}
    nb = nbformat.read(notebook, as_version=4)
    probe = nbformat.v4.new_code_cell(
        "import os, sys\n"
        f"assert os.path.realpath(sys.prefix) == {prefix!r}, sys.prefix\n"
        "print(os.path.realpath(sys.prefix), end='')")
    nb.cells.insert(0, probe)
    client = NotebookClient(nb, timeout=180, startup_timeout=120, kernel_name=kernel_name,
                            resources={"metadata": {"path": os.path.dirname(notebook)}})

    async def run() -> None:
        async with client.async_setup_kernel():
            for index, cell in enumerate(nb.cells):
                try:
                    await client.async_execute_cell(
                        cell, index, execution_count=client.code_cells_executed + 1)
                except Exception as err:
                    outcome["failed_cell"] = {
                        "index": index - 1, "source": cell.source,
                        "error": f"{type(err).__name__}: {err}"}
                    return
                if index == 0:
                    outcome["kernel_prefix"] = "".join(
                        o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            outcome["completed"] = True

    asyncio.run(run())
    outcome["widget_models"] = sorted(
        {str(v.get("model_name") or v.get("_model_name")) for v in client.widget_state.values()})
    with open(result_file, "w") as f:
        json.dump(outcome, f)


def _binder_env(venv: Path, scratch: Path) -> dict[str, str]:
    """Return the environment of repo2docker's steps: the venv first on PATH, no dev venv,
    no user site, Jupyter's and IPython's dirs of its own; pip's settings kept."""
    env = {k: v for k, v in os.environ.items() if k not in {
        "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "FLARELAB_KEEP_RUNNING",
        "JUPYTER_PATH", "JUPYTER_PREFER_ENV_PATH"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONNOUSERSITE"] = "1"
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                      ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        env[name] = str(scratch / sub)
    return env


def _run_step(what: str, cmd: list[str], env: dict[str, str], timeout: float,
              cwd: Path = ROOT) -> None:
    """Run one build step; fail the test with its output's tail if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n"
                    f"{(proc.stdout + proc.stderr)[-4000:]}", pytrace=False)


@pytest.fixture(scope="module")
def binder_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Build the Binder environment once; return its venv and the environment to run in."""
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert runtime == "python-3.11", runtime
    python = shutil.which("python3.11") or (
        sys.executable if sys.version_info[:2] == (3, 11) else None)
    assert python, "binder/runtime.txt asks for Python 3.11: no python3.11 on PATH"
    scratch = tmp_path_factory.mktemp("binder")
    venv = scratch / "venv"
    env = _binder_env(venv, scratch)
    _run_step("venv", [python, "-m", "venv", str(venv)], env, 120)
    vpy = str(venv / "bin" / "python")
    _run_step("binder/requirements.txt", [vpy, "-m", "pip", "install", "--no-cache-dir",
                                          "-r", str(BINDER / "requirements.txt")],
              env, INSTALL_TIMEOUT)
    _run_step("binder/postBuild", ["bash", str(BINDER / "postBuild")], env, INSTALL_TIMEOUT)
    # a kernelspec in the venv's own prefix, by a name no user-level spec shadows; its argv
    # is the venv's python by absolute path
    _run_step("kernelspec", [vpy, "-m", "ipykernel", "install", "--prefix", str(venv),
                             "--name", KERNEL_NAME], env, 120)
    version = subprocess.run([vpy, "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
                             env=env, capture_output=True, text=True, check=True, timeout=60)
    assert version.stdout.strip() == "3.11"
    return venv, env


def test_notebook_runs_in_the_binder_environment(
        binder_venv: tuple[Path, dict[str, str]], notebook_path: Path, tmp_path: Path) -> None:
    venv, env = binder_venv
    prefix = os.path.realpath(venv)
    result_file = tmp_path / "outcome.json"
    driver = (inspect.getsource(run_notebook_here)
              + "\nimport sys\nrun_notebook_here(*sys.argv[1:])\n")
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", driver, str(notebook_path), KERNEL_NAME, prefix,
         str(result_file)],
        cwd=notebook_path.parent, env=env, capture_output=True, text=True,
        timeout=NOTEBOOK_TIMEOUT, check=False)
    if proc.returncode != 0 or not result_file.exists():
        pytest.fail(f"the Binder venv's nbclient failed ({proc.returncode}):\n"
                    f"{(proc.stdout + proc.stderr)[-4000:]}", pytrace=False)
    outcome: dict[str, Any] = json.loads(result_file.read_text())
    assert outcome["driver_prefix"] == prefix
    failed = outcome["failed_cell"]
    if failed is not None:
        where = ("the kernel probe" if failed["index"] < 0
                 else f"cell {failed['index']} (0-based)")
        error = re.sub(r"\x1b\[[0-9;]*m", "", failed["error"])  # IPython's colours
        pytest.fail(f"{notebook_path.name}: {where} failed\n--- source ---\n{failed['source']}"
                    f"\n--- error ---\n{error[-4000:]}", pytrace=False)
    assert outcome["kernel_prefix"] == prefix
    assert outcome["completed"]
    # the widgets reached the front end's state (ipywidgets + jupyter_bokeh's BokehModel)
    assert any("Bokeh" in m for m in outcome["widget_models"]), outcome["widget_models"]
