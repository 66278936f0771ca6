"""The model zoo: ``simulator/specs/zoo/<name>.yaml`` files, each a ModelSpec with its source."""

from __future__ import annotations

from pathlib import Path

from meshcast.errors import MeshcastError
from meshcast.spec_file import load_spec_file
from simulator.specs.model import ModelSpec

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.yaml"))


def list_models() -> list[ModelSpec]:
    return [load_model(n) for n in zoo_names()]


def load_model(name_or_path: str | Path, field: str = "model") -> ModelSpec:
    """Load a zoo model by name (case-insensitive) or a ModelSpec YAML file by path; errors name
    ``field`` (the option that gave it)."""
    p = Path(name_or_path)
    try:
        is_file = p.is_file()
    except OSError as e:  # e.g. a name too long for a path
        raise MeshcastError(f"{field}: {str(name_or_path)[:60]!r}: {e.strerror}; give a zoo "
                            "model name or a path to a model YAML file") from None
    if p.suffix in (".yaml", ".yml") or is_file:
        return load_model_file(p, field)
    by_lower = {n.lower(): n for n in zoo_names()}
    name = by_lower.get(str(name_or_path).lower())
    if name is None:
        raise MeshcastError(
            f"{field}: unknown model {str(name_or_path)!r}; known models: {', '.join(zoo_names())} "
            "(or give a path to a model YAML file)"
        )
    return load_model_file(ZOO_DIR / f"{name}.yaml", field)


def load_model_file(path: str | Path, field: str = "model") -> ModelSpec:
    return load_spec_file(path, ModelSpec, field)
