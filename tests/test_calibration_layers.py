"""The layout of ``calibration/``: the numpy fitting side never imports jax, no module cycles,
and no public name of calibration means something else in ``simulator``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAL = ROOT / "calibration"


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """calibration modules ``path`` imports anywhere (top level or inside a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.split(".")[0] == "calibration"}


def _graph() -> dict[str, set[str]]:
    mods = {_module(p): p for p in CAL.rglob("*.py")}
    return {m: _imports(p) & set(mods) - {m} for m, p in mods.items()}


def test_importing_the_fitting_side_does_not_import_jax():
    fitting = sorted(m for m in _graph() if not m.startswith("calibration.measure"))
    code = (f"import sys\nfor m in {fitting!r}:\n    __import__(m)\n"
            "from tests.test_calibration_fit import synthetic_rows\n"
            "from calibration.fitting.profile_out import profile_from_rows\n"
            "profile_from_rows(synthetic_rows())\n"
            "assert 'jax' not in sys.modules, 'the fitting side imported jax'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "calibration.fitting.fit_cli" in fitting and "calibration.raw" in fitting


def test_only_the_measure_side_imports_jax_and_fitting_never_imports_it():
    for p in CAL.rglob("*.py"):
        names = {n.module if isinstance(n, ast.ImportFrom) else a.name
                 for n in ast.walk(ast.parse(p.read_text()))
                 if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in (n.names if isinstance(n, ast.Import) else [n])}
        uses_jax = any(str(n).split(".")[0] in ("jax", "jaxlib") for n in names)
        if uses_jax:
            assert _module(p).startswith("calibration.measure"), p
    for m, deps in _graph().items():
        if not m.startswith("calibration.measure"):
            assert not {d for d in deps if d.startswith("calibration.measure")}, m


def test_calibration_has_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert "calibration.cases" in graph["calibration.measure.run"]  # the walk sees imports


def _public(root: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in root.rglob("*.py"):
        for n in ast.parse(p.read_text()).body:
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_"):
                out.setdefault(n.name, set()).add(_module(p))
    return out


#: the same layer written twice on purpose: in jax (calibration.measure.models) and as the step
#: graph's ops (simulator.graph.layers); hlo_compare reads these jax names off XLA's stacks
SAME_MEANING = {"dense_mlp", "moe_mlp"}


def test_no_public_calibration_name_means_something_else_in_simulator():
    cal, sim = _public(CAL), _public(ROOT / "simulator")
    clashes = {n: sorted(cal[n] | sim[n]) for n in set(cal) & set(sim) - SAME_MEANING}
    assert not clashes
    dup = {n: sorted(ms) for n, ms in cal.items() if len(ms) > 1}
    assert not dup
    assert {"BenchCase", "precision_of_dtype", "read_raw_rows"} <= set(cal)
