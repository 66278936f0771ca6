"""Forecast intervals and what a forecast was fitted on (issue 13 items 6 and 7): the band from a
profile's fit record (dense or MoE, with a stated fallback), the assumed profile with none, the
ways a forecast leaves what was fitted, and ``--profiles DIR`` with the interval in predict,
rank, plan and compare (text, strict JSON, plots)."""

from __future__ import annotations

import json
import math

import pytest
from matplotlib.collections import LineCollection, PolyCollection

from hardware_profiles import FITTED_DIR, load_profile, save_profile
from hardware_profiles.schema import FitRecord, FittedValue, IntervalBand
from simulator import predict
from simulator.analysis.interval import ASSUMED_DETAIL, forecast_interval, interval_of
from tests.cli_helpers import fails, ok

DETAIL = "efficiencies borrowed from architecture nvidia-blackwell (b200)"
DENSE = IntervalBand(level=0.8, lo_factor=0.85, hi_factor=1.2, residuals=30,
                     distance="architecture")
MOE = IntervalBand(level=0.8, lo_factor=0.7, hi_factor=1.4, residuals=12, distance="architecture")


def fitted(base: str = "b200", **update):
    """``base`` with a synthetic fit record (measured in bf16 and fp8; dense and MoE bands)."""
    fit = FitRecord(
        source="synthetic fit for tests", basis="architecture", basis_detail=DETAIL,
        values=[FittedValue(term="matmul", value=0.7, basis="architecture", rows=0,
                            borrowed_from="b200", log_sd=0.1),
                FittedValue(term="matmul_fp8", value=0.6, basis="own", rows=12, log_sd=0.1)],
        measured_precisions=["bf16", "fp8"], interval_dense=DENSE, interval_moe=MOE)
    return load_profile(base).model_copy(update={"fit": fit.model_copy(update=update)})


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fitted")
    save_profile(fitted(), d / "b200.yaml")
    return d


def strict(text: str) -> dict:
    """JSON that holds no NaN or infinity."""
    def refuse(const):
        raise AssertionError(f"non-strict JSON constant {const}")
    return json.loads(text, parse_constant=refuse)


# --- forecast_interval --------------------------------------------------------------------------
def test_dense_job_takes_the_dense_band():
    iv = forecast_interval(fitted(), False, 10.0, "bf16")
    assert (iv.lo_s, iv.hi_s, iv.level) == pytest.approx((8.5, 12.0, 0.8))
    assert iv.basis == "architecture" and iv.detail == DETAIL and iv.outside == []
    assert iv.as_dict() == {"step_time_interval_s": [pytest.approx(8.5), pytest.approx(12.0)],
                            "interval_level": 0.8, "basis": "architecture",
                            "basis_detail": DETAIL, "outside": []}
    assert iv.text() == f"8.5-12 s, 80%; {DETAIL}"


def test_moe_job_takes_the_moe_band():
    iv = forecast_interval(fitted(), True, 10.0, "bf16")
    assert (iv.lo_s, iv.hi_s) == pytest.approx((7.0, 14.0))


@pytest.mark.parametrize("is_moe, missing, used", [(True, "interval_moe", DENSE),
                                                    (False, "interval_dense", MOE)])
def test_a_missing_band_falls_back_to_the_other_and_says_so(is_moe, missing, used):
    iv = forecast_interval(fitted(**{missing: None}), is_moe, 10.0, "bf16")
    assert (iv.lo_s, iv.hi_s) == pytest.approx((10 * used.lo_factor, 10 * used.hi_factor))
    kind, other = ("MoE", "dense") if is_moe else ("dense", "MoE")
    assert f"no {kind} band was fitted, the {other} band is used" in iv.detail


def test_a_fit_without_bands_has_no_interval_but_keeps_its_basis():
    iv = forecast_interval(fitted(interval_dense=None, interval_moe=None), False, 10.0, "bf16")
    assert iv.lo_s is None and iv.hi_s is None and iv.basis == "architecture"
    assert iv.as_dict()["step_time_interval_s"] is None and "no interval" in iv.detail


def test_an_assumed_profile_has_no_interval():
    iv = forecast_interval(load_profile("b200"), False, 10.0, "bf16")
    assert iv.basis == "assumed" and iv.lo_s is None and iv.hi_s is None and iv.level is None
    assert iv.detail == ASSUMED_DETAIL and "meshcast fit --published" in iv.detail
    d = iv.as_dict()
    assert d["step_time_interval_s"] is None and d["interval_level"] is None
    assert iv.text().startswith("no interval: efficiencies assumed, not fitted")


def test_an_unmeasured_precision_is_outside_the_fit():
    iv = forecast_interval(fitted(), False, 10.0, "fp4")
    assert len(iv.outside) == 1
    line = iv.outside[0]
    assert line.startswith("fp4 was never measured on nvidia-blackwell (measured: bf16, fp8)")
    # b200 has no fp8/fp4 curve: fp4 GEMMs take the bf16 matmul curve, itself borrowed
    assert "borrowed from the bf16 matmul curve `matmul`, itself from b200" in line
    assert forecast_interval(fitted(), False, 10.0, "fp8").outside == []


def test_an_unmeasured_precision_names_the_curve_it_borrows():
    prof = fitted()
    eff = prof.efficiency
    prof = prof.model_copy(update={"efficiency": eff.model_copy(update={
        "matmul_fp8": eff.matmul.model_copy(update={"max_efficiency": 0.5})})})
    iv = forecast_interval(prof, False, 1.0, "fp4")
    assert "borrowed from the fp8 matmul curve `matmul_fp8`, fitted on 12 rows" in iv.outside[0]


def test_a_profile_without_lineage_is_outside_the_fit():
    prof = fitted().model_copy(update={"lineage": None})
    iv = forecast_interval(prof, False, 10.0, "fp4")
    assert any("names no lineage" in o for o in iv.outside)
    assert any(o.startswith("fp4 was never measured on b200") for o in iv.outside)
    assert forecast_interval(load_profile("b200"), False, 1.0, "bf16").outside == []


def test_op_sizes_past_a_calibrated_range_are_outside_the_fit():
    """The check predict already makes (outside_calibrated_range) is the one reported, once."""
    prof = fitted()
    eff = prof.efficiency
    tight = eff.matmul.model_copy(update={"calibrated_range": (1.0, 2.0)})
    prof = prof.model_copy(update={"efficiency": eff.model_copy(update={"matmul": tight})})
    pred = predict(model="llama3-8b", hardware=prof, chips=8, global_batch=8, seq_len=1024)
    iv = interval_of(pred)
    extra = [o for o in iv.outside if "calibrated range" in o]
    assert len(extra) == 1 and extra[0] in pred.warnings
    from simulator.cli.report import format_prediction

    text = format_prediction(pred, iv)
    assert text.count(extra[0]) == 1 and f"outside the fit: {extra[0]}" in text


def test_interval_of_a_prediction_scales_its_step_time():
    pred = predict(model="llama3-8b", hardware=fitted(), chips=8, global_batch=8, seq_len=1024)
    iv = interval_of(pred)
    assert iv.lo_s == pytest.approx(0.85 * pred.step_time_s)
    assert iv.hi_s == pytest.approx(1.2 * pred.step_time_s)
    assert iv.scaled(3.0, pred.step_time_s) == pytest.approx((2.55, 3.6))


# --- the CLI ------------------------------------------------------------------------------------
PREDICT = ["predict", "--model", "llama3-8b", "--hardware", "b200", "--chips", "8",
           "--global-batch", "8", "--seq-len", "1024"]


def test_predict_json_carries_the_interval_basis_and_outside(capsys, profiles_dir):
    d = strict(ok(capsys, [*PREDICT, "--profiles", str(profiles_dir), "--json"]))
    lo, hi = d["step_time_interval_s"]
    assert lo == pytest.approx(0.85 * d["step_time_s"]) and hi == pytest.approx(1.2 * d["step_time_s"])
    assert d["interval_level"] == 0.8 and d["basis"] == "architecture"
    assert d["basis_detail"] == DETAIL and d["outside"] == []


def test_predict_json_without_a_fit_has_a_null_interval(capsys):
    d = strict(ok(capsys, [*PREDICT, "--profiles", "builtin", "--json"]))
    assert d["step_time_interval_s"] is None and d["basis"] == "assumed"
    assert "meshcast fit --published" in d["basis_detail"]


def test_predict_forecasts_with_the_shipped_fit_by_default(capsys):
    """No --profiles: the fit of published runs in hardware_profiles/fitted, with its band;
    `--profiles builtin` gives the datasheet profile (efficiencies assumed), which differs."""
    default = strict(ok(capsys, [*PREDICT, "--json"]))
    shipped = strict(ok(capsys, [*PREDICT, "--profiles", str(FITTED_DIR), "--json"]))
    builtin = strict(ok(capsys, [*PREDICT, "--profiles", "builtin", "--json"]))
    assert default == shipped
    assert default["basis"] == "own" and "b200" in default["basis_detail"]
    lo, hi = default["step_time_interval_s"]
    assert lo < default["step_time_s"] < hi
    assert builtin["step_time_s"] != default["step_time_s"]


def test_predict_text_shows_the_band_and_what_is_outside(capsys, profiles_dir):
    out = ok(capsys, [*PREDICT, "--profiles", str(profiles_dir), "--precision", "fp4"])
    step = next(line for line in out.splitlines() if "step time" in line)
    t = float(step.split()[2])
    assert f"{0.85 * t:.3g}-{1.2 * t:.3g} s, 80%; {DETAIL}" in step
    assert "outside the fit: fp4 was never measured on nvidia-blackwell" in out
    out = ok(capsys, [*PREDICT, "--profiles", "builtin"])
    assert "(no interval: efficiencies assumed, not fitted" in out


def test_predict_plot_draws_the_band(capsys, profiles_dir, tmp_path):
    png = tmp_path / "step.png"
    ok(capsys, [*PREDICT, "--profiles", str(profiles_dir), "--plot", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv", [
    PREDICT,
    ["rank", "--model", "llama3-8b", "--hardware", "b200", "--chips", "8"],
    ["plan", "--model", "llama3-8b", "--hardware", "b200", "--chips", "8"],
    ["compare", "--dense", "dense-6.4b", "--moe", "moe-6.4b", "--hardware", "b200", "--chips", "8"],
])
def test_profiles_that_are_not_a_directory_are_an_error(capsys, tmp_path, argv):
    missing = tmp_path / "no-such-dir"
    fails(capsys, [*argv, "--profiles", str(missing)], "profiles", str(missing), "meshcast fit")


def test_rank_rows_carry_their_interval(capsys, profiles_dir, tmp_path):
    png = tmp_path / "rank.png"
    argv = ["rank", "--model", "llama3-8b", "--hardware", "b200", "--chips", "8", "--seq-len",
            "1024", "--global-batch", "16", "--top", "2", "--profiles", str(profiles_dir)]
    d = strict(ok(capsys, [*argv, "--json"]))
    for row in d["top"]:
        lo, hi = row["step_time_interval_s"]
        assert lo == pytest.approx(0.85 * row["step_time_s"]) and row["basis"] == "architecture"
    out = ok(capsys, [*argv, "--plot", str(png)])
    assert f"80% interval: {DETAIL}" in out and out.count(", 80%)") == 2
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plan_entries_carry_step_and_days_intervals(capsys, profiles_dir, tmp_path):
    png = tmp_path / "plan.png"
    argv = ["plan", "--model", "llama3-8b", "--hardware", "b200,h100-sxm", "--chips", "8",
            "--seq-len", "1024", "--global-batch", "16", "--profiles", str(profiles_dir)]
    d = strict(ok(capsys, [*argv, "--json"]))
    fit, assumed = d["entries"]
    lo, hi = fit["days_interval"]
    assert lo == pytest.approx(0.85 * fit["budget"]["days"])
    assert fit["best"]["basis"] == "architecture"
    assert assumed["days_interval"] is None and assumed["best"]["step_time_interval_s"] is None
    out = ok(capsys, [*argv, "--plot", str(png)])
    assert f"b200: 80% interval: {DETAIL}" in out and "h100-sxm: no interval" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_compare_gives_each_side_its_band(capsys, profiles_dir):
    d = strict(ok(capsys, ["compare", "--dense", "dense-6.4b", "--moe", "moe-6.4b", "--hardware",
                           "b200", "--chips", "8", "--mesh", "data=-1,expert=8", "--seq-len",
                           "1024", "--global-batch", "16", "--profiles", str(profiles_dir),
                           "--json"]))
    dense, (moe,) = d["dense"], d["moe"]
    assert dense["step_time_interval_s"][1] == pytest.approx(1.2 * dense["step_time_s"])
    assert moe["step_time_interval_s"][1] == pytest.approx(1.4 * moe["step_time_s"])
    assert dense["basis"] == moe["basis"] == "architecture"


def test_plots_draw_a_band_only_when_there_is_an_interval(profiles_dir):
    from hardware_profiles import profile_dirs
    from simulator.cli.plots import plot_plan, plot_prediction
    from simulator.analysis.plan import plan

    def bands(fig, kind) -> int:  # in the first panel: the step times (predict), days (plan)
        return sum(isinstance(c, kind) for c in fig.axes[0].collections)

    with profile_dirs(profiles_dir):
        res = plan("llama3-8b", ["b200", "h100-sxm"], [8, 16], global_batch=16, seq_len=1024)
    pred = res.entries[0].best.prediction
    assert res.entries[0].hardware == "b200" and res.entries[2].hardware == "h100-sxm"
    assert bands(plot_prediction(pred), LineCollection) == 1  # the error bar on the whole step
    assert bands(plot_prediction(res.entries[2].best.prediction), LineCollection) == 0
    assert bands(plot_plan(res), PolyCollection) == 1  # b200's band; h100-sxm has none
    assert all(math.isfinite(x) for x in interval_of(pred).as_dict()["step_time_interval_s"])


def test_a_band_above_its_forecast_is_drawn_from_lo_to_hi():
    """A band need not contain its forecast (held-out runs ran slower: lo_factor > 1): the
    plots draw it from lo to hi, not as (negative) offsets from the forecast."""
    from simulator.cli.plots import plot_prediction

    above = DENSE.model_copy(update={"lo_factor": 1.05, "hi_factor": 1.4})
    pred = predict(model="llama3-8b", hardware=fitted(interval_dense=above), chips=8,
                   global_batch=8, seq_len=1024)
    iv = interval_of(pred)
    assert pred.step_time_s < iv.lo_s < iv.hi_s
    (bar,) = [c for c in plot_prediction(pred).axes[0].collections
              if isinstance(c, LineCollection)]
    (seg,) = bar.get_segments()
    assert sorted(seg[:, 0]) == pytest.approx([iv.lo_s, iv.hi_s])


def test_the_prediction_plot_title_says_why_there_is_no_interval():
    from simulator.cli.plots import plot_prediction

    def title(prof) -> str:
        pred = predict(model="llama3-8b", hardware=prof, chips=8, global_batch=8, seq_len=1024)
        return plot_prediction(pred).axes[0].get_title()

    assert "(no interval: efficiencies not fitted)" in title(load_profile("b200"))
    unbanded = title(fitted(interval_dense=None, interval_moe=None))  # fitted, no band recorded
    assert "(no interval)" in unbanded and "not fitted" not in unbanded
    assert "s, 80%)" in title(fitted())
