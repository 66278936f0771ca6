"""Find, load and validate hardware profiles (by name, alias, or path to a YAML file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from hardware_profiles.schema import HardwareProfile
from simulator.errors import MeshcastError, from_validation_error

PROFILE_DIR = Path(__file__).resolve().parent


def _profile_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PROFILE_DIR.glob("*.yaml"))}


def list_profiles() -> list[HardwareProfile]:
    """Every built-in profile, validated, sorted by name."""
    return [load_profile(name) for name in _profile_files()]


def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    for stem in _profile_files():
        prof = load_profile_file(_profile_files()[stem])
        for a in [prof.name, *prof.aliases]:
            table[_norm(a)] = stem
    return table


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load a profile by built-in name, alias (case/punctuation-insensitive) or YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_profile_file(p)
    files = _profile_files()
    stem = str(name_or_path)
    if stem not in files:
        stem = _aliases().get(_norm(stem), "")
    if stem not in files:
        raise MeshcastError(
            f"hardware: unknown profile {str(name_or_path)!r}; known profiles: "
            f"{', '.join(files)} (or give a path to a profile YAML file)"
        )
    return load_profile_file(files[stem])


@lru_cache(maxsize=64)
def _load_cached(path: str, mtime: float) -> HardwareProfile:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise MeshcastError(f"hardware: {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise MeshcastError(f"hardware: {path} must hold a mapping, got {type(raw).__name__}")
    try:
        return HardwareProfile.model_validate(raw)
    except ValidationError as e:
        raise from_validation_error(e, f"hardware profile {Path(path).name}") from None


def load_profile_file(path: str | Path) -> HardwareProfile:
    """Load one profile YAML file; a corrupt file raises MeshcastError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise MeshcastError(f"hardware: no profile file at {path}")
    return _load_cached(str(path.resolve()), path.stat().st_mtime)
