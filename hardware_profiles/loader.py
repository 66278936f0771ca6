"""Find, load and validate hardware profiles (by name, alias, or path to a YAML file)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

from hardware_profiles.schema import HardwareProfile
from simulator.errors import MeshcastError
from simulator.spec_file import load_spec_file

PROFILE_DIR = Path(__file__).resolve().parent

#: Directories searched before the built-in profiles (``--profiles DIR``), innermost first.
_EXTRA_DIRS: ContextVar[tuple[Path, ...]] = ContextVar("profile_dirs", default=())


@contextmanager
def profile_dirs(*dirs: str | Path) -> Iterator[None]:
    """Within the block, a profile name or alias resolves first to the YAML files in ``dirs``
    (e.g. the fitted profiles ``meshcast fit --published --out DIR`` wrote), then to the
    built-in ones. A missing directory raises MeshcastError naming it."""
    paths = []
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise MeshcastError(f"profiles: no directory at {p}; give the folder `meshcast fit "
                                "--published FILE --out DIR` wrote")
        paths.append(p.resolve())
    token = _EXTRA_DIRS.set(tuple(paths) + _EXTRA_DIRS.get())
    try:
        yield
    finally:
        _EXTRA_DIRS.reset(token)


def _profile_files() -> dict[str, Path]:
    """Profile name -> file: built-ins, overridden by the files of :func:`profile_dirs`."""
    files = {p.stem: p for p in sorted(PROFILE_DIR.glob("*.yaml"))}
    for d in reversed(_EXTRA_DIRS.get()):
        files.update({p.stem: p for p in sorted(d.glob("*.yaml"))})
    return files


def list_profiles() -> list[HardwareProfile]:
    """Every built-in profile, validated, sorted by name."""
    return [load_profile(name) for name in _profile_files()]


def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    files = _profile_files()
    for stem in files:
        prof = load_profile_file(files[stem])
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
    return load_spec_file(path, HardwareProfile, "hardware profile")


def load_profile_file(path: str | Path) -> HardwareProfile:
    """Load one profile YAML file; a corrupt file raises MeshcastError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise MeshcastError(f"hardware: no profile file at {path}")
    return _load_cached(str(path.resolve()), path.stat().st_mtime)


def save_profile(profile: HardwareProfile, path: str | Path) -> Path:
    """Write ``profile`` as YAML (the layout :func:`load_profile_file` reads back); an unwritable
    path raises MeshcastError naming it."""
    import yaml

    path = Path(path)
    text = yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True), sort_keys=False,
                          width=100)
    try:
        path.write_text(text)
    except OSError as e:
        raise MeshcastError(f"out: cannot write {path}: {e.strerror}") from None
    return path
