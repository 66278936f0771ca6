"""The shipped fit (``hardware_profiles/fitted``), which predict, rank, plan and compare forecast
with by default: one fitted profile per built-in one, fitted on the published runs the repository
carries, and still what the forecast of today's code gives on those runs (a change to the physics
that moves a forecast must come with a re-fit: ``meshcast fit --published
benchmarks/data/published_runs.csv --out hardware_profiles/fitted``)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from hardware_profiles import FITTED_DIR, PROFILE_DIR, load_profile_file
from tests.cli_helpers import ok

RUNS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "published_runs.csv"


def test_every_builtin_profile_has_a_fitted_one_with_its_record():
    builtin = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
    shipped = sorted(p.stem for p in FITTED_DIR.glob("*.yaml"))
    assert shipped == builtin
    for stem in shipped:
        prof = load_profile_file(FITTED_DIR / f"{stem}.yaml")
        assert prof.fit is not None, stem
        assert prof.fit.basis in ("own", "architecture", "global"), stem


def test_the_fit_was_made_on_the_runs_the_repository_carries():
    report = json.loads((FITTED_DIR / "fit_report.json").read_text())
    digest = hashlib.sha256(RUNS.read_bytes()).hexdigest()
    assert digest.startswith(report["sha256"])


def test_todays_forecast_reproduces_the_fit_on_its_runs(capsys):
    """Every run forecast with the shipped profiles gives the fit's own in-sample forecast."""
    d = json.loads(ok(capsys, ["validate", "--published", str(RUNS), "--profiles",
                               str(FITTED_DIR), "--cv", "none", "--json"]))
    with open(FITTED_DIR / "fit_predictions.csv", newline="") as f:
        fitted = {r["id"]: float(r["in_sample_predicted_s"]) for r in csv.DictReader(f)}
    got = {r["id"]: r["predicted_step_time_s"] for r in d["rows"]}
    assert set(got) == set(fitted)
    for key, value in fitted.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
