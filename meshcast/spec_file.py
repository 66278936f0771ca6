"""Read a YAML spec file into a pydantic model; every problem becomes one MeshcastError."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from meshcast.errors import MeshcastError, from_validation_error

M = TypeVar("M", bound=BaseModel)


def load_spec_file(path: str | Path, cls: type[M], field: str) -> M:
    """Parse ``path`` as YAML and validate it as ``cls``; ``field`` names it in error messages."""
    path = Path(path)
    if not path.is_file():
        raise MeshcastError(f"{field}: no file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MeshcastError(f"{field}: {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise MeshcastError(f"{field}: {path} must hold a mapping, got {type(raw).__name__}")
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise from_validation_error(e, f"{field} {path.name}") from None
