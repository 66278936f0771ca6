"""Find, load and validate hardware profiles (by name, alias, or path to a YAML file)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

from hardware_profiles.schema import HardwareProfile
from meshcast.errors import MeshcastError
from meshcast.spec_file import load_spec_file

PROFILE_DIR = Path(__file__).resolve().parent
#: Every built-in profile with its efficiencies fitted on (or transferred from) the published
#: runs of ``benchmarks/data/published_runs.csv`` by ``meshcast fit --published``: what
#: predict, rank, plan and compare forecast with unless ``--profiles`` says otherwise.
FITTED_DIR = PROFILE_DIR / "fitted"

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
    return [load_profile_file(path) for path in _profile_files().values()]


def _aliases(files: dict[str, Path]) -> dict[str, tuple[str, ...]]:
    """Normalised alias (names included) -> the profile files (stems) claiming it. A directory of
    :func:`profile_dirs` shadows the layers below it: an alias it claims belongs to its files
    only. More than one stem means files of one layer share the alias (ambiguous).

    Built once per set of files (paths and modification times) and directories, not per
    lookup: a published table resolves a name for every row."""
    listing = tuple((stem, path, path.stat().st_mtime_ns) for stem, path in files.items())
    return _alias_table(listing, _EXTRA_DIRS.get())


@lru_cache(maxsize=16)
def _alias_table(listing: tuple[tuple[str, Path, int], ...], extra: tuple[Path, ...]
                 ) -> dict[str, tuple[str, ...]]:
    rank = {d: i + 1 for i, d in enumerate(reversed(extra))}  # built-ins: 0
    table: dict[str, tuple[int, list[str]]] = {}
    for stem, path, _ in listing:
        layer = rank.get(path.parent, 0)
        prof = load_profile_file(path)
        for key in {_norm(a) for a in [prof.name, *prof.aliases]}:
            held = table.get(key)
            if held is None or held[0] < layer:
                table[key] = (layer, [stem])
            elif stem not in held[1]:
                held[1].append(stem)
    return {key: tuple(stems) for key, (_, stems) in table.items()}


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


_PARENS = re.compile(r"\([^()]*\)")
_VENDOR = re.compile(r"^\s*(nvidia|amd|google\s+cloud|google)\b[\s-]*", re.IGNORECASE)

#: Shortest alias a prefix match may use: shorter ones ("v4", "v5p") would match too much.
MIN_PREFIX_CHARS = 4


def _ambiguous(name: str, stems: tuple[str, ...] | list[str], how: str) -> MeshcastError:
    return MeshcastError(
        f"hardware: {name!r} is ambiguous: it matches profiles {' and '.join(sorted(stems))} "
        f"({how}); give the profile's name or a path to its YAML file")


def _resolve(name: str, files: dict[str, Path]) -> tuple[str, str]:
    """(profile file stem, how it matched) for a name that is not a path: the exact normalised
    alias first, then the name with its parenthesised parts and a leading vendor word ("NVIDIA",
    "AMD", "Google Cloud") removed, then the longest alias
    (of at least :data:`MIN_PREFIX_CHARS` characters) that the normalised name starts with;
    ``files``: :func:`_profile_files`."""
    if name in files:
        return name, "exact alias"
    table = _aliases(files)
    key = _norm(name)
    if key in table:
        if len(table[key]) > 1:
            raise _ambiguous(name, table[key], "exact alias")
        return table[key][0], "exact alias"
    bare = _norm(_VENDOR.sub("", _PARENS.sub(" ", name)))
    how = "alias after dropping '(...)' and the vendor"
    if bare != key and bare in table:
        if len(table[bare]) > 1:
            raise _ambiguous(name, table[bare], how)
        return table[bare][0], how
    prefixes = [a for a in table if len(a) >= MIN_PREFIX_CHARS and bare.startswith(a)]
    if prefixes:
        longest = max(len(a) for a in prefixes)
        best = [a for a in prefixes if len(a) == longest]
        stems = sorted({s for a in best for s in table[a]})
        how = f"prefix alias {best[0]!r}"
        if len(stems) > 1:
            raise _ambiguous(name, stems, how)
        return stems[0], how
    raise MeshcastError(
        f"hardware: unknown profile {name!r}; known profiles: "
        f"{', '.join(files)} (or give a path to a profile YAML file)"
    )


def _is_path(name_or_path: str | Path) -> bool:
    p = Path(name_or_path)
    try:
        return p.suffix in (".yaml", ".yml") or p.exists()
    except OSError:  # a name too long for a path, ...: a name, not a file
        return False


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load a profile by YAML path, built-in name or alias. Names match loosely, as published
    tables write them: case and punctuation are ignored, then a parenthesised part is dropped
    ("TPU v6e (Trillium)"), then the longest alias the name starts with is taken ("MI300X OAM");
    :func:`matched_how` says which rule matched. An unknown or ambiguous name raises
    MeshcastError naming the candidates."""
    if _is_path(name_or_path):
        return load_profile_file(name_or_path)
    files = _profile_files()
    stem, _ = _resolve(str(name_or_path), files)
    return load_profile_file(files[stem])


def matched_how(name: str) -> tuple[str, str]:
    """Which profile ``name`` loads and how it matched: (profile file stem, "exact alias" |
    "alias after dropping '(...)'" | "prefix alias 'x'"), or (profile name, "path") for a YAML
    path. Raises MeshcastError as :func:`load_profile` does."""
    if _is_path(name):
        return load_profile_file(name).name, "path"
    return _resolve(str(name), _profile_files())


@lru_cache(maxsize=64)
def _load_cached(path: str, mtime: float) -> HardwareProfile:
    return load_spec_file(path, HardwareProfile, "hardware profile")


def load_profile_file(path: str | Path) -> HardwareProfile:
    """Load one profile YAML file; a corrupt file raises MeshcastError naming the field."""
    path = Path(path)
    try:
        if path.is_dir():
            raise MeshcastError(f"hardware: {path} is a directory; give a profile YAML file (or "
                                "--profiles DIR for a folder of them)")
        if not path.is_file():
            raise MeshcastError(f"hardware: no profile file at {path}")
        key = str(path.resolve()), path.stat().st_mtime
    except OSError as e:
        name = str(path) if len(str(path)) <= 80 else str(path)[:77] + "..."
        raise MeshcastError(f"hardware: cannot read {name}: {e.strerror}") from None
    return _load_cached(*key)


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
