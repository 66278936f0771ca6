"""`meshcast fit DIR [--out PROFILE.yaml]`: raw rows -> fits -> calibrated profile + report.

The profile goes to ``DIR/profile.yaml`` unless ``--out`` says elsewhere; ``fit_report.json`` and
``fit_predictions.csv`` go beside it (:mod:`calibration.fitting.files`)."""

from __future__ import annotations

import math
from pathlib import Path

from calibration.fitting.files import REPORT_NAME, default_profile_path
from calibration.fitting.profile_out import profile_from_rows, write_outputs
from calibration.plan_file import complete_rows
from calibration.raw import raw_path
from meshcast.errors import MeshcastError


def run_fit(directory: str | Path, out: str | Path | None = None, base: str | None = None) -> str:
    """Fit, write the profile and the report beside it, and return a table of each group's
    errors."""
    directory = Path(directory)
    out = Path(out) if out else default_profile_path(directory)
    rows = complete_rows(directory, "fit")  # nothing fitted, no file written, from a partial run
    base_profile = None
    if base:
        from hardware_profiles import load_profile

        base_profile = load_profile(base)
    profile, launch, fits, digest = profile_from_rows(rows, base_profile)
    if "matmul" not in fits:
        raise MeshcastError(f"fit: {raw_path(directory)} has too few matmul sizes to fit")
    write_outputs(profile, out, launch, fits, digest, raw_path(directory))
    lines = [f"{'group':<36}{'in-sample':>10}{'held-out':>10}{'max held-out':>14}"]
    for g, f in fits.items():
        ho = "-" if math.isnan(f.held_out_error) else f"{100 * f.held_out_error:.1f}%"
        mx = "-" if math.isnan(f.max_held_out_error) else f"{100 * f.max_held_out_error:.1f}%"
        ins = "-" if math.isnan(f.in_sample_error) else f"{100 * f.in_sample_error:.1f}%"
        lines.append(f"{g:<36}{ins:>10}{ho:>10}{mx:>14}"
                     + ("  (predicted from the fitted levels)" if "+" in f.level else ""))
    lines += [f"{g}: not used: {f.not_used}" for g, f in fits.items() if f.not_used]
    lines.append(f"wrote {out} ({profile.name}); report {out.parent / REPORT_NAME}")
    return "\n".join(lines)
