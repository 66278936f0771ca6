"""The files that join fit and validate (design lesson 10), by name.

``meshcast fit DIR`` writes the fitted profile to ``DIR/profile.yaml`` (or ``--out PATH``) and,
beside it, ``fit_report.json`` and ``fit_predictions.csv``: the same two names the published-runs
fit (``meshcast fit --published FILE --out DIR``) writes beside its profiles. ``meshcast validate
--calibration DIR`` checks that profile file (or ``--profile PATH``), identified by its sha256,
never a refit in memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from meshcast.errors import MeshcastError

PROFILE_NAME = "profile.yaml"
REPORT_NAME = "fit_report.json"
PREDICTIONS_NAME = "fit_predictions.csv"


def default_profile_path(directory: str | Path) -> Path:
    """Where ``meshcast fit DIR`` writes the fitted profile when no ``--out`` is given."""
    return Path(directory) / PROFILE_NAME


def fitted_profile_path(directory: str | Path, profile: str | Path | None = None) -> Path:
    """The profile to validate: ``profile`` if given, else ``DIR/profile.yaml``; a MeshcastError
    naming the path and the ``meshcast fit`` command that writes it when it is not a file."""
    path = Path(profile) if profile else default_profile_path(directory)
    if not path.is_file():
        fit = f"meshcast fit {directory}" + (f" --out {path}" if profile else "")
        raise MeshcastError(f"validate: no fitted profile at {path}; run `{fit}` first")
    return path


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, as a validation records the profile it checked."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
