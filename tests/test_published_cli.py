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


def test_validate_text_and_plot(capsys, small_csv, tmp_path):
    png = tmp_path / "pvm.png"
    out = ok(capsys, ["validate", "--published", str(small_csv), "--plot", str(png)])
    assert "3 rows forecast, 1 skipped" in out and "median|e|" in out and "Cerebras WSE-9" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_fit_writes_a_profile_that_validate_can_use(capsys, small_csv, tmp_path):
    prof = tmp_path / "h100-fit.yaml"
    out = ok(capsys, ["fit", "--published", str(small_csv), "--hardware", "H100-SXM-80GB",
                      "--out", str(prof)])
    assert "held out by model" in out and "h100-sxm       matmul_fp8" in out
    p = load_profile_file(prof)
    assert p.name == "h100-sxm" and "fitted" in p.efficiency.matmul.source
    assert p.efficiency.matmul_fp8 is not None and "3 published runs" in p.efficiency.matmul_fp8.source
    assert (tmp_path / "h100-fit.fit_predictions.csv").read_text().count("\n") == 4
    rep = json.loads((tmp_path / "h100-fit.fit_report.json").read_text())
    assert rep["hardware"] == "h100-sxm" and rep["held_out_by_model"]["n"] == 3
    before = json.loads(ok(capsys, ["validate", "--published", str(small_csv), "--json"]))
    after = json.loads(ok(capsys, ["validate", "--published", str(small_csv), "--json",
                                   "--profile", str(prof)]))
    assert after["summary"]["median_abs_error"] < before["summary"]["median_abs_error"]


def test_bad_input_is_a_clean_error(capsys, tmp_path, small_csv):
    fails(capsys, ["validate", "--published", str(tmp_path / "nope.csv")], "published", "nope.csv")
    cut = tmp_path / "cut.csv"
    cut.write_text("source_id,model\nx,y\n")
    fails(capsys, ["validate", "--published", str(cut)], "lacks column", "n_layers", "tp")
    fails(capsys, ["validate"], "--calibration", "--published")
    fails(capsys, ["fit", "--published", str(small_csv), "--out", str(tmp_path / "p.yaml")],
          "--hardware")
    fails(capsys, ["fit", "--published", str(small_csv), "--hardware", "b200", "--out",
                   str(tmp_path / "p.yaml")], "no row", "b200", "h100-sxm")


def test_host_issue_time_reaches_dropless_rows_only(capsys, tmp_path):
    """--moe-host-issue-s slows the dropless Qwen3-30B-A3B row at micro-batch 1, not the
    token-drop one; a negative value is refused by name."""
    path = write_csv(tmp_path / "moe.csv", [row_at(73).raw, row_at(97).raw])  # dropless, tokendrop
    args = ["validate", "--published", str(path), "--json"]
    base = json.loads(ok(capsys, args))["rows"]
    eager = json.loads(ok(capsys, args + ["--moe-host-issue-s", "3e-4"]))["rows"]
    assert eager[0]["predicted_step_time_s"] > 1.05 * base[0]["predicted_step_time_s"]
    assert eager[1]["predicted_step_time_s"] == base[1]["predicted_step_time_s"]
    err = fails(capsys, args + ["--moe-host-issue-s", "-1"])
    assert "moe-host-issue-s" in err and "-1" in err
    assert "--fit" in fails(capsys, args + ["--fit-host"], "fit-host")


def test_predict_takes_the_host_issue_time(capsys):
    args = ["predict", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--chips", "8",
            "--mesh", "expert=8", "--global-batch", "8", "--seq-len", "2048", "--json"]
    base = json.loads(ok(capsys, args))
    eager = json.loads(ok(capsys, args + ["--moe-host-issue-s", "0.005"]))
    assert eager["step_time_s"] > base["step_time_s"]
    assert eager["breakdown_s"]["host"] > 0 and "host" not in base["breakdown_s"]
