"""Output directories: made on demand, or a MeshcastError naming the ``--out`` option."""

from __future__ import annotations

from pathlib import Path

from meshcast.errors import MeshcastError


def output_dir(path: Path, what: str = "a directory") -> Path:
    """``path`` as a directory (created with its parents); a file there, or a directory that
    cannot be created, is an ``out:`` error saying so (``what`` names what belongs there)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MeshcastError(f"out: {path} is a file; give {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MeshcastError(f"out: cannot create {path}: {e.strerror}") from None
    return path
