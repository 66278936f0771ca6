"""Fit and validate joined by files: ``meshcast fit DIR`` writes ``DIR/profile.yaml`` with
``fit_report.json`` beside it (the name the published-runs fit uses too), and ``meshcast validate
--calibration DIR`` forecasts from that file, recording its sha256, never from a refit."""

from __future__ import annotations

import json
import re

import pytest

from calibration.fitting.files import PREDICTIONS_NAME, PROFILE_NAME, REPORT_NAME, file_sha256
from calibration.fitting.fit_cli import run_fit
from calibration.raw import rows_hash, write_raw_rows
from hardware_profiles import load_profile_file, save_profile
from tests.cli_helpers import fails, ok
from tests.test_calibration_fit import synthetic_rows


@pytest.fixture
def fitted_dir(tmp_path):
    """A calibration directory of synthetic rows, fitted with no ``--out``."""
    write_raw_rows(tmp_path, synthetic_rows())
    run_fit(tmp_path)
    return tmp_path


def test_fit_writes_the_profile_and_its_report_into_the_directory(fitted_dir):
    assert {p.name for p in fitted_dir.iterdir()} == {"raw.csv", PROFILE_NAME, REPORT_NAME,
                                                      PREDICTIONS_NAME}
    report = json.loads((fitted_dir / REPORT_NAME).read_text())
    assert report["profile"] == PROFILE_NAME
    assert report["profile_sha256"] == file_sha256(fitted_dir / PROFILE_NAME)
    assert report["raw_sha256"] == rows_hash(synthetic_rows())
    assert load_profile_file(fitted_dir / PROFILE_NAME).name == "host-calibrated"


def test_both_fit_families_write_their_report_under_one_name_beside_the_profile(capsys,
                                                                                 tmp_path):
    from tests.published_helpers import row_at, write_csv

    csv = write_csv(tmp_path / "runs.csv", [row_at(n).raw for n in (117, 118, 138)])
    published = tmp_path / "published" / "h100.yaml"
    published.parent.mkdir()
    ok(capsys, ["fit", "--published", str(csv), "--hardware", "h100-sxm", "--out",
                str(published)])
    bench = tmp_path / "bench"
    bench.mkdir()
    write_raw_rows(bench, synthetic_rows())
    micro = tmp_path / "micro" / "host.yaml"
    ok(capsys, ["fit", str(bench), "--out", str(micro)])
    for profile in (published, micro):
        assert sorted(p.name for p in profile.parent.iterdir()) == sorted(
            [profile.name, REPORT_NAME, PREDICTIONS_NAME])
        assert json.loads((profile.parent / REPORT_NAME).read_text())


def test_fit_published_without_out_is_a_clear_error(capsys, tmp_path):
    fails(capsys, ["fit", "--published", str(tmp_path / "runs.csv")], "--out")


def test_validate_without_a_fitted_profile_names_the_path_and_the_fit_command(capsys, tmp_path):
    write_raw_rows(tmp_path, synthetic_rows())  # measured, never fitted
    msg = fails(capsys, ["validate", "--calibration", str(tmp_path)],
                str(tmp_path / PROFILE_NAME), f"meshcast fit {tmp_path}")
    assert msg.count("\n") <= 1  # one line
    elsewhere = tmp_path / "h.yaml"
    fails(capsys, ["validate", "--calibration", str(tmp_path), "--profile", str(elsewhere)],
          str(elsewhere), f"meshcast fit {tmp_path} --out {elsewhere}")
    fails(capsys, ["validate", "--calibration", str(tmp_path), "--profile", "a.yaml",
                   "--profile", "b.yaml"], "one profile")


def test_validate_forecasts_from_the_file_fit_wrote_and_records_its_hash(fitted_dir,
                                                                         monkeypatch):
    from calibration.measure import validate as v

    monkeypatch.setattr(v, "measure_step", lambda *a, **k: 1.0)  # no jax steps: 1 s measured
    path = fitted_dir / PROFILE_NAME
    first = v.validate(fitted_dir, quick=True, log=lambda msg: None)
    assert first["profile"] == str(path) and first["profile_sha256"] == file_sha256(path)
    # edit the file: a refit of raw.csv would not see it; validate must
    prof = load_profile_file(path)
    launch = prof.chip.launch_overhead_s
    chip = prof.chip.model_copy(update={"launch_overhead_s": launch.model_copy(
        update={"value": 10 * launch.value})})
    save_profile(prof.model_copy(update={"chip": chip}), path)
    second = v.validate(fitted_dir, quick=True, log=lambda msg: None)
    assert second["profile_sha256"] == file_sha256(path) != first["profile_sha256"]
    for a, b in zip(first["cases"], second["cases"]):
        assert b["forecast_s"] > a["forecast_s"]
    # --profile: any profile file, recorded the same way
    other = fitted_dir / "other.yaml"
    save_profile(load_profile_file(path), other)
    third = v.validate(fitted_dir, profile=other, quick=True, log=lambda msg: None)
    assert third["profile"] == str(other) and third["cases"] == second["cases"]


def test_validate_says_the_case_count_each_start_an_eta_and_warns_on_a_loaded_host(
        fitted_dir, monkeypatch):
    """Issue 15: a newcomer sees how many cases, which one runs, how long is left, and when the
    host's load makes wall-clock timings unreliable, how to time with the process clock."""
    from calibration.measure import validate as v

    monkeypatch.delenv("MESHCAST_CLOCK", raising=False)
    monkeypatch.setattr(v, "measure_step", lambda *a, **k: 1.0)
    monkeypatch.setattr(v, "host_load", lambda: (7.5, 4))  # 7.5 runnable threads on 4 cores
    lines: list[str] = []
    v.validate(fitted_dir, quick=True, log=lines.append)
    text = "\n".join(lines)
    n = len(v.QUICK_CASES)
    assert f"  {n} cases, 3 timed steps each (2 warm-up), wall clock" in text
    starts = [ln for ln in lines if ": starting (" in ln]
    assert [ln.split("]")[0].strip() for ln in starts] == [f"[{i}/{n}" for i in range(1, n + 1)]
    assert "ETA after the first case" in starts[0] and re.search(r"ETA \d+ s\)$", starts[1])
    warnings = [ln for ln in lines if "warning: host load 7.5" in ln]
    assert len(warnings) == 1 and "on 4 cores" in warnings[0]  # once, not per case
    assert f"MESHCAST_CLOCK=process meshcast validate --calibration {fitted_dir}`" in warnings[0]
    # each case's start line comes before its result line
    first = lines.index(starts[0])
    assert "measured" in lines[first + 2] and v.QUICK_CASES[0][0] in lines[first + 2]


@pytest.mark.parametrize("load,cores,backend,clock,warns", [
    (0.5, 2, "cpu", None, False),  # a quiet host
    (1.5, 2, "cpu", None, True),
    (1.5, 2, "cpu", "process", False),  # already on the process clock
    (9.0, 2, "gpu", None, True),
])
def test_load_warning(monkeypatch, load, cores, backend, clock, warns):
    from calibration.measure.validate import load_warning

    if clock:
        monkeypatch.setenv("MESHCAST_CLOCK", clock)
    else:
        monkeypatch.delenv("MESHCAST_CLOCK", raising=False)
    msg = load_warning(load, cores, backend)
    assert (msg is not None) == warns
    if msg:
        assert f"host load {load:.1f}" in msg and f"on {cores} cores" in msg
        assert ("MESHCAST_CLOCK=process" in msg) == (backend == "cpu")
