"""Calibration end to end on 8 virtual CPU devices: runs, survives a kill, resumes, rejects
corrupt raw files. Each run is a fresh process (the device count is fixed when jax starts)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calibration.measure.bench import MIN_REPS
from calibration.raw import read_raw_rows, write_raw_rows
from meshcast.errors import MeshcastError

MESHCAST = [sys.executable, "-m", "simulator.cli.main"]


def _calibrate(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MESHCAST, "calibrate", "--backend", "cpu", "--devices", "8",
                           "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cal") / "run"
    res = _calibrate(out)
    assert res.returncode == 0, res.stderr
    return out


def test_calibration_runs_end_to_end(full_run):
    rows = read_raw_rows(full_run)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"launch", "matmul", "attention", "elementwise", "gather", "block", "head",
                     "collective"}
    ops = {r["op"] for r in rows if r["kind"] == "collective"}
    assert ops == {"all_gather", "reduce_scatter", "all_reduce", "all_to_all", "permute"}
    assert {r["axis"] for r in rows if r["kind"] == "collective"} == {"data", "expert", "model"}
    assert all(r["n_devices"] == 8 and r["backend"] == "cpu" and r["jax_version"] for r in rows)
    reps = {}
    for r in rows:
        reps.setdefault(r["case_id"], []).append(r["rep"])
    # every repetition kept: 9, or at least MIN_REPS once a case's time budget is spent
    assert all(sorted(v) == list(range(len(v))) and MIN_REPS <= len(v) <= 9
               for v in reps.values())
    assert max(len(v) for v in reps.values()) == 9
    # matmul shapes come from the simulator's step graph, not only squares
    assert any(r["m"] != r["k"] for r in rows if r["kind"] == "matmul")


def test_killed_run_resumes_without_losing_or_redoing_rows(tmp_path):
    out = tmp_path / "killed"
    one_axis = ("--mesh", "data=8")  # collectives over one axis only: a shorter run to resume
    proc = subprocess.Popen([*MESHCAST, "calibrate", "--backend", "cpu", "--devices", "8",
                             "--quick", "--out", str(out), *one_axis],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    before = []
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            before = read_raw_rows(out)
        except MeshcastError:
            pytest.fail("raw.csv was readable only partially while the run was writing")
        if len({r["case_id"] for r in before}) >= 10:
            break
    proc.kill()
    proc.wait()
    before = read_raw_rows(out)  # whatever the kill left is a whole, valid file
    n_cases = len({r["case_id"] for r in before})
    assert n_cases >= 10
    again = _calibrate(out, *one_axis)
    assert again.returncode == 2 and "--resume" in again.stderr  # nothing overwritten
    assert read_raw_rows(out) == before
    res = _calibrate(out, "--resume", "--limit", "5", *one_axis)  # five more cases, then stop
    assert res.returncode == 0, res.stderr
    assert f"{n_cases} done" in res.stderr
    after = read_raw_rows(out)
    assert after[: len(before)] == before
    key = [(r["case_id"], r["rep"]) for r in after]
    assert len(key) == len(set(key))
    from calibration.cases import plan_cases
    from calibration.measure.run import shape_job
    from simulator.specs.sharding import ShardingSpec

    planned = [c.case_id for c in plan_cases({"data": 8}, shape_job(ShardingSpec(mesh={"data": 8}),
                                                                       8), quick=True)]
    # the resumed run measured the next five cases of the plan, in plan order
    assert [c for c in dict.fromkeys(r["case_id"] for r in after)] == planned[: n_cases + 5]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "header"])
def test_corrupt_raw_file_is_a_clear_error(full_run, tmp_path, damage):
    out = tmp_path / damage
    shutil.copytree(full_run, out)
    raw = out / "raw.csv"
    text = raw.read_text()
    if damage == "truncate":  # an interrupted write: half the rows, then part of the next one
        lines = text.splitlines(keepends=True)
        half = len(lines) // 2
        raw.write_text("".join(lines[:half]) + ",".join(lines[half].split(",")[:3]))
    elif damage == "garbage":
        lines = text.splitlines(keepends=True)
        lines[3] = lines[3].replace(",", ",x", 1).replace("e-", "oops", 1)
        lines[3] = ",".join(lines[3].split(",")[:-3]) + "\n"
        raw.write_text("".join(lines))
    else:
        raw.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(MeshcastError, match=r"calibration: .*raw.csv"):
        read_raw_rows(out)
    if damage == "truncate":  # an interrupted write (issue 15): --resume measures that case again
        res = _calibrate(out, "--resume", "--limit", "1")
        assert res.returncode == 0 and "was cut short" in res.stderr, res.stderr[-2000:]
        after, full = read_raw_rows(out), read_raw_rows(full_run)
        last = after[-1]["case_id"]  # the case cut short, measured again
        kept = [r for r in after if r["case_id"] != last]
        assert kept == full[: len(kept)] and full[len(kept)]["case_id"] == last
        key = [(r["case_id"], r["rep"]) for r in after]
        assert len(key) == len(set(key))
        return
    res = _calibrate(out, "--resume")
    assert res.returncode == 2 and "error: calibration:" in res.stderr
    assert "Traceback" not in res.stderr


def test_write_rows_is_atomic(tmp_path):
    row = dict.fromkeys(["case_id", "kind", "op", "axis", "dtype", "backend", "device_kind",
                         "jax_version", "jaxlib_version", "xla_flags", "host", "date"], "x")
    row.update(group_size=1, m=1, k=1, n=1, hd=0, nbytes=1.0, flops=2.0, rep=0, seconds=1e-3,
               n_devices=8, n_hosts=1)
    write_raw_rows(tmp_path, [row])
    assert [p.name for p in tmp_path.iterdir()] == ["raw.csv"]
    assert read_raw_rows(tmp_path)[0]["seconds"] == 1e-3


def test_fit_cli_writes_a_profile_that_predict_uses(full_run, tmp_path):
    import json

    from calibration.fitting.files import file_sha256
    from calibration.raw import rows_hash
    from hardware_profiles import load_profile

    out = tmp_path / "elsewhere" / "host.yaml"
    res = subprocess.run([*MESHCAST, "fit", str(full_run), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "held-out" in res.stdout
    prof = load_profile(out)
    assert prof.name == "host-calibrated" and prof.network[0].size == 8
    # the report and the predictions sit beside the profile, and name the files they join
    assert sorted(p.name for p in out.parent.iterdir()) == ["fit_predictions.csv",
                                                            "fit_report.json", "host.yaml"]
    report = json.loads((out.parent / "fit_report.json").read_text())
    assert report["profile"] == "host.yaml" and report["profile_sha256"] == file_sha256(out)
    assert report["raw_sha256"] == rows_hash(read_raw_rows(full_run))
    assert report["groups"]["matmul"]["params"]["rate"] > 0
    assert "held_out_median_abs_error" in report["groups"]["collective:all_to_all:expert"]
    pred = subprocess.run([*MESHCAST, "predict", "--model", "llama3-8b", "--hardware", str(out),
                           "--chips", "8", "--seq-len", "512", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert pred.returncode == 0, pred.stderr
    assert json.loads(pred.stdout)["step_time_s"] > 0


@pytest.fixture(scope="module")
def fitted_run(full_run) -> Path:
    """``full_run`` after ``meshcast fit DIR`` with no --out: the profile is DIR/profile.yaml."""
    res = subprocess.run([*MESHCAST, "fit", str(full_run)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"wrote {full_run / 'profile.yaml'}" in res.stdout
    return full_run


def test_fit_of_an_empty_directory_is_a_clear_error(tmp_path):
    res = subprocess.run([*MESHCAST, "fit", str(tmp_path), "--out", str(tmp_path / "p.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "error: fit: no measurements" in res.stderr


def test_validate_times_real_sharded_steps_beside_the_forecast(fitted_run):
    import json

    from calibration.fitting.files import file_sha256

    res = subprocess.run([*MESHCAST, "validate", "--calibration", str(fitted_run), "--quick",
                          "--hlo", "--json"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    profile = fitted_run / "profile.yaml"  # the file fit wrote, identified by its hash
    assert out["profile"] == str(profile) and out["profile_sha256"] == file_sha256(profile)
    assert out["dtype"] == "float32"
    assert f"sha256 {out['profile_sha256']}" in res.stderr
    cases = {c["case"]: c for c in out["cases"]}
    assert set(cases) == {"dense data=2,fsdp=2,model=2", "moe data=2,expert=2,model=2"}
    for c in cases.values():
        assert c["measured_s"] > 0 and c["forecast_s"] > 0
        assert c["error"] == pytest.approx((c["forecast_s"] - c["measured_s"]) / c["measured_s"])
        assert c["hlo_mismatches"] == 0 and {r["status"] for r in c["hlo"]} <= {"match",
                                                                               "explained"}
        assert any(r["xla"].startswith("all_reduce") for r in c["hlo"])
    assert "all_to_all expert" in res.stderr  # the tables are printed beside the figures
    assert out["median_abs_error"] == pytest.approx(
        sorted(abs(c["error"]) for c in cases.values())[0] / 2
        + sorted(abs(c["error"]) for c in cases.values())[1] / 2)
