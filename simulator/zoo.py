"""The model zoo: ``simulator/zoo/<name>.yaml`` files, each a ModelSpec with its source."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from simulator.errors import MeshcastError, from_validation_error
from simulator.specs.model import ModelSpec

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.yaml"))


def list_models() -> list[ModelSpec]:
    return [load_model(n) for n in zoo_names()]


def load_model(name_or_path: str | Path) -> ModelSpec:
    """Load a zoo model by name (case-insensitive) or a ModelSpec YAML file by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return load_model_file(p)
    by_lower = {n.lower(): n for n in zoo_names()}
    name = by_lower.get(str(name_or_path).lower())
    if name is None:
        raise MeshcastError(
            f"model: unknown model {str(name_or_path)!r}; known models: {', '.join(zoo_names())} "
            "(or give a path to a model YAML file)"
        )
    return load_model_file(ZOO_DIR / f"{name}.yaml")


def load_model_file(path: str | Path) -> ModelSpec:
    path = Path(path)
    if not path.is_file():
        raise MeshcastError(f"model: no model file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MeshcastError(f"model: {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise MeshcastError(f"model: {path} must hold a mapping, got {type(raw).__name__}")
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as e:
        raise from_validation_error(e, f"model {path.name}") from None
