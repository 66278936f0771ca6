"""The layers, checked statically: every import statement of the project's packages is read with
``ast`` (module level and inside functions alike; imports under ``if TYPE_CHECKING:`` never run
and are left out) and checked against the layering of issue 14:

- nothing in ``simulator/`` outside ``simulator/cli/`` imports ``calibration`` or jax, and only
  ``calibration.measure`` imports jax in ``calibration/``;
- ``hardware_profiles`` and ``meshcast`` never import ``simulator`` or ``calibration``;
  ``meshcast`` (the base layer) imports nothing of the project;
- the import graph between the units (``simulator``'s subpackages and top-level modules,
  ``hardware_profiles``, ``meshcast``, ``calibration``'s subpackages and top-level modules) has
  no cycle.

A failure names the importing file, the line and the module it imports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulator", "hardware_profiles", "meshcast", "calibration")
JAX = ("jax", "jaxlib")



@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    path: str  # the importing file, relative to the repository root
    line: int
    target: str  # dotted name of the imported module

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    p = ROOT.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _nodes(tree: ast.AST):
    """Every node that runs, skipping the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports_of(path: Path) -> list[Import]:
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    rel = str(path.relative_to(ROOT))
    out = []
    for node in _nodes(ast.parse(path.read_text(), filename=rel)):
        if isinstance(node, ast.Import):
            out += [Import(me, rel, node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:  # ``from pkg import module`` imports the module
                sub = f"{mod}.{a.name}"
                out.append(Import(me, rel, node.lineno, sub if _is_module(sub) else mod))
    return out


@lru_cache(maxsize=1)
def all_imports() -> tuple[Import, ...]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out += _imports_of(path)
    return tuple(dict.fromkeys(out))  # ``from m import a, b``: one import of m


def _top(name: str) -> str:
    return name.partition(".")[0]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def unit(name: str) -> str | None:
    """The layering unit of a module: ``simulator.X`` and ``calibration.X`` (a subpackage or a
    top-level module; the package's own ``__init__`` is the unit ``simulator`` /
    ``calibration``), ``hardware_profiles``, ``meshcast``; None outside the project."""
    top = _top(name)
    if top in ("simulator", "calibration"):
        return ".".join(name.split(".")[:2])
    return top if top in PACKAGES else None


def _report(bad: list[Import]) -> str:
    return "\n  ".join(str(i) for i in bad)


# --- (a) simulator outside cli/ ---------------------------------------------------------------
def test_simulator_outside_cli_imports_neither_calibration_nor_jax():
    bad = [i for i in all_imports()
           if _within(i.importer, "simulator") and not _within(i.importer, "simulator.cli")
           and _top(i.target) in ("calibration",) + JAX]
    assert not bad, ("only simulator/cli/ may import calibration or jax:\n  " + _report(bad))


def test_only_calibration_measure_imports_jax():
    bad = [i for i in all_imports()
           if _within(i.importer, "calibration") and not _within(i.importer, "calibration.measure")
           and _top(i.target) in JAX]
    assert not bad, "only calibration/measure/ may import jax:\n  " + _report(bad)


# --- (b) the base layers ----------------------------------------------------------------------
def test_hardware_profiles_imports_neither_simulator_nor_calibration():
    bad = [i for i in all_imports() if _within(i.importer, "hardware_profiles")
           and _top(i.target) in ("simulator", "calibration", "tests")]
    assert not bad, "hardware_profiles sits below simulator and calibration:\n  " + _report(bad)


def test_meshcast_imports_nothing_of_the_project():
    bad = [i for i in all_imports() if _within(i.importer, "meshcast")
           and _top(i.target) in ("simulator", "calibration", "hardware_profiles", "tests")]
    assert not bad, "meshcast is the base layer and imports nothing of the project:\n  " + _report(bad)


# --- (c) no cycles between units --------------------------------------------------------------
def unit_graph() -> dict[tuple[str, str], list[Import]]:
    """(importer unit, imported unit) -> the imports that make the edge."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for i in all_imports():
        a, b = unit(i.importer), unit(i.target)
        if b is not None and a != b:
            edges.setdefault((a, b), []).append(i)
    return edges


def find_cycle(edges) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as its units in order (first == last), or None."""
    succ: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        succ.setdefault(a, []).append(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in succ.get(u, ()):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state and (c := visit(v)):
                return c
        path.pop()
        state[u] = 2
        return None

    for u in sorted(succ):
        if u not in state and (c := visit(u)):
            return c
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({("a", "b"), ("b", "c")}) is None
    assert find_cycle({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == ["a", "b", "c", "a"]


def test_units_import_each_other_without_cycles():
    edges = unit_graph()
    cycle = find_cycle(edges)
    if cycle:
        lines = [f"{a} -> {b}: " + "; ".join(str(i) for i in edges[(a, b)][:3])
                 for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle between packages " + " -> ".join(cycle) + ":\n  "
                    + "\n  ".join(lines))


def test_the_scan_sees_function_level_imports():
    """The scan covers lazy imports: the CLI's calibration commands import it inside functions."""
    lazy = [i for i in all_imports()
            if _within(i.importer, "simulator.cli") and _top(i.target) == "calibration"]
    assert lazy and all(i.line > 1 for i in lazy)
