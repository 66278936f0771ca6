"""meshcast validate --published and fit --published, end to end on small CSVs."""

from __future__ import annotations

import json

import pytest

from hardware_profiles import load_profile_file
from tests.cli_helpers import fails, ok
from tests.published_helpers import row_at, write_csv

LINES = (117, 118, 138)  # Megatron-LM README GPT-1.7B, GPT-7.1B (bf16); NeMo Llama 3 8B (fp8)


@pytest.fixture
def small_csv(tmp_path):
    rows = [row_at(n).raw for n in LINES]
    rows.append({**row_at(138).raw, "hardware": "Cerebras WSE-9"})
    return write_csv(tmp_path / "runs.csv", rows)


def test_validate_json_rows_summary_and_skipped(capsys, small_csv):
    out = json.loads(ok(capsys, ["validate", "--published", str(small_csv), "--json"]))
    # ids are source_id:line in the file given (the header is line 1)
    assert [r["id"] for r in out["rows"]] == [f"{row_at(n).raw['source_id']}:{i}"
                                             for i, n in enumerate(LINES, start=2)]
    for r in out["rows"]:
        assert r["error"] == pytest.approx(r["predicted_step_time_s"] / r["measured_step_time_s"] - 1)
    s = out["summary"]
    assert s["n"] == 3 and set(s["by_kind"]) == {"dense"} and set(s["by_hardware"]) == {"h100-sxm"}
    assert 0 <= s["median_abs_error"] <= s["p90_abs_error"]
    [skip] = out["skipped"]
    assert skip["hardware"] == "Cerebras WSE-9" and "unknown profile" in skip["reason"]
    # by default every scheme is held out, hardware first (the headline), with the coverage
    assert set(out["cv"]) == {"hardware", "model", "source"} and "coverage" in out
    assert {r["distance"] for r in out["rows"]} == {"global"}  # the file's only chip held out


def test_validate_text_and_plot(capsys, small_csv, tmp_path):
    png = tmp_path / "pvm.png"
    out = ok(capsys, ["validate", "--published", str(small_csv), "--plot", str(png)])
    assert "3 rows forecast, 1 skipped" in out and "median|e|" in out and "Cerebras WSE-9" in out
    assert "held out by hardware" in out and "held out by model" in out and "held out by source" in out
    assert "interval coverage" in out and "term matmul" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_fit_writes_every_profile_that_validate_and_predict_can_use(capsys, small_csv, tmp_path):
    out_dir = tmp_path / "fitted"
    out = ok(capsys, ["fit", "--published", str(small_csv), "--out", str(out_dir)])
    assert "held out by hardware" in out and "held out by model" in out
    from hardware_profiles import PROFILE_DIR

    built_in = {p.stem for p in PROFILE_DIR.glob("*.yaml")}
    assert {p.stem for p in out_dir.glob("*.yaml")} == built_in  # chips with no row too
    h100 = load_profile_file(out_dir / "h100-sxm.yaml")
    h200 = load_profile_file(out_dir / "h200.yaml")
    assert h100.fit.basis == "own" and "3 rows" in h100.fit.basis_detail
    assert h200.fit.basis == "architecture" and "h100-sxm" in h200.fit.basis_detail
    assert "fitted" in h100.efficiency.matmul.source and "3 published runs" in h100.efficiency.matmul.source
    assert h100.fit.measured_precisions == ["bf16", "fp8"]
    assert (out_dir / "fit_predictions.csv").read_text().count("\n") == 4
    rep = json.loads((out_dir / "fit_report.json").read_text())
    assert rep["rows"] == 3 and set(rep["cv"]) == {"hardware", "model", "source"}
    assert rep["profiles"]["mi300x"]["basis"] == "global"
    before = json.loads(ok(capsys, ["validate", "--published", str(small_csv), "--json",
                                    "--cv", "none"]))
    after = json.loads(ok(capsys, ["validate", "--published", str(small_csv), "--json",
                                   "--profiles", str(out_dir)]))
    assert after["summary"]["median_abs_error"] < before["summary"]["median_abs_error"]
    assert after["coverage"]["n"] == 3  # every row has its profile's band
    png = tmp_path / "bands.png"
    ok(capsys, ["validate", "--published", str(small_csv), "--profiles", str(out_dir), "--plot",
                str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"
    pred = json.loads(ok(capsys, ["predict", "--model", "llama3-8b", "--hardware", "h200",
                                  "--chips", "8", "--seq-len", "2048", "--global-batch", "8",
                                  "--json", "--profiles", str(out_dir)]))
    assert pred["basis"] == "architecture"
    lo, hi = pred["step_time_interval_s"]
    # the band is where held-out runs at that distance landed, around the forecast or not
    b = h200.fit.interval_dense
    assert (lo, hi) == pytest.approx((pred["step_time_s"] * b.lo_factor, pred["step_time_s"] * b.hi_factor))


def test_fit_one_profile_to_a_yaml_and_cv_json(capsys, small_csv, tmp_path):
    prof = tmp_path / "h100-fit.yaml"
    out = ok(capsys, ["fit", "--published", str(small_csv), "--hardware", "H100-SXM-80GB",
                      "--out", str(prof)])
    assert load_profile_file(prof).fit.basis == "own"
    # the line names the profile written, not another one of the fit
    assert f"wrote {prof}  (own: efficiencies fitted on h100-sxm's 3 rows" in out
    out = json.loads(ok(capsys, ["validate", "--published", str(small_csv), "--cv", "model",
                                 "--json"]))
    assert out["summary"]["n"] == 3 and set(out["cv"]) == {"model", "hardware"}
    assert {r["distance"] for r in out["rows"]} == {"own"}
    assert 0 <= out["coverage"]["n"] <= 3


def test_bad_input_is_a_clean_error(capsys, tmp_path, small_csv):
    fails(capsys, ["validate", "--published", str(tmp_path / "nope.csv")], "published", "nope.csv")
    cut = tmp_path / "cut.csv"
    cut.write_text("source_id,model\nx,y\n")
    fails(capsys, ["validate", "--published", str(cut)], "lacks column", "n_layers", "tp")
    fails(capsys, ["validate"], "--calibration", "--published")
    fails(capsys, ["fit", "--published", str(small_csv), "--out", str(tmp_path / "p.yaml")],
          "YAML file", "--hardware")
    fails(capsys, ["validate", "--published", str(small_csv), "--profiles",
                   str(tmp_path / "none")], "profiles", "none")


def test_host_issue_time_reaches_dropless_rows_only(capsys, tmp_path):
    """--moe-host-issue-s slows the dropless Qwen3-30B-A3B row at micro-batch 1, not the
    token-drop one; a negative value is refused by name."""
    path = write_csv(tmp_path / "moe.csv", [row_at(73).raw, row_at(97).raw])  # dropless, tokendrop
    args = ["validate", "--published", str(path), "--json", "--cv", "none"]
    base = json.loads(ok(capsys, args))["rows"]
    eager = json.loads(ok(capsys, args + ["--moe-host-issue-s", "3e-4"]))["rows"]
    assert eager[0]["predicted_step_time_s"] > 1.05 * base[0]["predicted_step_time_s"]
    assert eager[1]["predicted_step_time_s"] == base[1]["predicted_step_time_s"]
    err = fails(capsys, args + ["--moe-host-issue-s", "-1"])
    assert "moe-host-issue-s" in err and "-1" in err


def test_predict_takes_the_host_issue_time(capsys):
    args = ["predict", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--chips", "8",
            "--mesh", "expert=8", "--global-batch", "8", "--seq-len", "2048", "--json"]
    base = json.loads(ok(capsys, args))
    eager = json.loads(ok(capsys, args + ["--moe-host-issue-s", "0.005"]))
    assert eager["step_time_s"] > base["step_time_s"]
    assert eager["breakdown_s"]["host"] > 0 and "host" not in base["breakdown_s"]
