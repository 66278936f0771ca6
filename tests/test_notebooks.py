"""The notebooks run top to bottom (issue 6) with fast settings injected after their
``parameters`` cell, as papermill would; each must finish without an error and show its plots
as non-empty PNGs. (The notebooks draw their figures with ``simulator.cli.plots``; this test checks
only that they run and show images.)"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CAL_DIR = NB_DIR / "data" / "cal-cpu-quick"

#: notebook -> (fast parameters, PNG figures it must show)
FAST = {
    "capacity_planning": ('HARDWARE = ["h100-sxm", "tpu-v5p"]\nCHIPS = [64, 128]\n'
                          "GLOBAL_BATCH = 128\nSEQ_LEN = 2048\n", 2),
    "moe_vs_dense": ('HARDWARE = "h100-sxm"\nCHIPS = 64\nGLOBAL_BATCH = 64\nSEQ_LEN = 2048\n'
                     'STUDY_SCALES = ["6.4b"]\nSTUDY_CHIPS = 64\n', 2),
    "calibration_report": (f"CAL_DIR = {str(CAL_DIR)!r}\n", 3),
}


def run_notebook(name: str, overrides: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(overrides))
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(NB_DIR)}}).execute()
    return nb


@pytest.mark.parametrize("name", list(FAST))
def test_notebook_runs_and_shows_its_plots(name):
    overrides, figures = FAST[name]
    nb = run_notebook(name, overrides)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= figures, (name, len(pngs))
    for png in pngs:
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 15_000  # a drawn chart, not a blank


def _pngs(nb: nbformat.NotebookNode) -> list[bytes]:
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    return [base64.b64decode(o.data["image/png"]) for o in outputs
            if "image/png" in o.get("data", {})]


def test_nbconvert_execute_runs_the_notebooks_as_written(tmp_path):
    """Issue 15: ``jupyter nbconvert --execute --to notebook`` on every notebook, its own
    parameters (no fast settings) and its own folder as the working directory. Without nbconvert
    installed (it is not in the test extra) the same run through nbclient, which nbconvert's
    ExecutePreprocessor drives: the kernel started in the notebook's folder, every cell run,
    any error fails."""
    paths = sorted(NB_DIR.glob("*.ipynb"))
    assert {p.stem for p in paths} == set(FAST)  # a new notebook gets fast settings above too
    try:
        import nbconvert  # noqa: F401
    except ImportError:
        executed = []
        for p in paths:
            nb = nbformat.read(p, as_version=4)
            NotebookClient(nb, timeout=300, kernel_name="python3",
                           resources={"metadata": {"path": str(p.parent)}}).execute()
            executed.append(nb)
    else:
        res = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to",
                              "notebook", "--output-dir", str(tmp_path), *map(str, paths)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        executed = [nbformat.read(tmp_path / p.name, as_version=4) for p in paths]
    for p, nb in zip(paths, executed):
        assert len(_pngs(nb)) >= FAST[p.stem][1], p.name
