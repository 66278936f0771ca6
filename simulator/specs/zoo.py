"""The model zoo: ``simulator/specs/zoo/<name>.yaml`` files, each a ModelSpec with its source.

Names match loosely, as hardware names do (:func:`hardware_profiles.loader._norm`: case and
punctuation ignored, so ``Llama-3-70B`` and ``LLAMA3-70b`` are ``llama3-70b``), and through
:data:`ALIASES` (``llama3.1-70b``), provided the numbers in the name stay the same: ``dense-64b``
is not ``dense-6.4b``, though punctuation aside the two are spelled alike.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from hardware_profiles.loader import _norm
from meshcast.errors import MeshcastError
from meshcast.spec_file import load_spec_file
from simulator.specs.model import ModelSpec

ZOO_DIR = Path(__file__).resolve().parent / "zoo"

#: Other names of a zoo model: alias -> zoo name. Only where the config the YAML cites is the
#: same shape (its ``source``): Llama 3.1 keeps Llama 3's shapes (8B and 70B: same layers, widths,
#: heads, FFN and vocab in config.json; only the RoPE scaling and the context change, and the
#: context is ``--seq-len``); the 405B was released only as 3.1.
ALIASES = {
    "llama3.1-8b": "llama3-8b",
    "llama3.1-70b": "llama3-70b",
    "llama3.1-405b": "llama3-405b",
}

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.yaml"))


def list_models() -> list[ModelSpec]:
    return [load_model(n) for n in zoo_names()]


def _numbers(name: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(name)]


def _lookup_table() -> dict[str, list[tuple[str, str]]]:
    """Normalised name -> [(the spelling it came from, zoo name)]: zoo names and aliases."""
    table: dict[str, list[tuple[str, str]]] = {}
    for spelled, name in [(n, n) for n in zoo_names()] + [
            (a, n) for a, n in ALIASES.items() if n in zoo_names()]:
        table.setdefault(_norm(spelled), []).append((spelled, name))
    return table


def resolve_model_name(name: str, field: str = "model") -> str:
    """The zoo name ``name`` stands for: a zoo name or alias up to case and punctuation
    (``Llama-3-70B``, ``llama3.1-70b``, ``LLAMA3-70b``) whose numbers are those of ``name``
    (``dense-64b`` is not ``dense-6.4b``). An unknown name raises MeshcastError naming ``field``,
    the closest zoo names and every known one."""
    table = _lookup_table()
    hits = {zoo for spelled, zoo in table.get(_norm(name), [])
            if _numbers(spelled) == _numbers(name)}
    if len(hits) == 1:
        return hits.pop()
    names = zoo_names()
    if hits:  # two zoo models spelled alike: no guess
        raise MeshcastError(f"{field}: {name!r} matches models {' and '.join(sorted(hits))}; "
                            "give the zoo name exactly")
    close = difflib.get_close_matches(_norm(name), list(table), n=4, cutoff=0.6)
    close_names = list(dict.fromkeys(zoo for key in close for _, zoo in table[key]))
    hint = f"; close matches: {', '.join(close_names)}" if close_names else ""
    raise MeshcastError(
        f"{field}: unknown model {str(name)[:80]!r}{hint}; known models: {', '.join(names)} "
        "(or give a path to a model YAML file)")


def load_model(name_or_path: str | Path, field: str = "model") -> ModelSpec:
    """Load a zoo model by name (loosely: :func:`resolve_model_name`) or a ModelSpec YAML file
    by path; errors name ``field`` (the option that gave it)."""
    p = Path(name_or_path)
    try:
        is_file = p.is_file()
    except OSError as e:  # e.g. a name too long for a path
        raise MeshcastError(f"{field}: {str(name_or_path)[:60]!r}: {e.strerror}; give a zoo "
                            "model name or a path to a model YAML file") from None
    if p.suffix in (".yaml", ".yml") or is_file:
        return load_model_file(p, field)
    name = resolve_model_name(str(name_or_path), field)
    return load_model_file(ZOO_DIR / f"{name}.yaml", field)


def load_model_file(path: str | Path, field: str = "model") -> ModelSpec:
    return load_spec_file(path, ModelSpec, field)
