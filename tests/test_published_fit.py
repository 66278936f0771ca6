"""The published-run fit (simulator.published.fit) on rows whose measured time is meshcast's own
forecast at known efficiencies: it recovers them, keeps recompute out of them, transfers them to
chips with no rows, and holds groups out."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from simulator.published import read_rows, row_to_case
from simulator.published.fit import TOLERANCE, cross_validate, fit_published, forecast_at
from simulator.published.fitted import fitted_profiles
from simulator.published.intervals import interval_pool
from tests.published_helpers import row_at, write_csv

# Megatron-LM README H100 table: GPT-1.7B (48 GPUs, DP48) and GPT-7.1B (96 GPUs, TP2): bf16.
LINES = (117, 118)
TRUE = {"matmul": 0.6}


def _made(line: int, values=TRUE, edit=None) -> dict:
    """Row ``line``'s cells (``edit`` applied) with step_time_s replaced by meshcast's own
    forecast at ``values``."""
    raw = {**row_at(line).raw, **(edit or {})}
    case = row_to_case(replace(row_at(line), raw=raw))
    return {**raw, "step_time_s": f"{forecast_at(case, values).step_time_s:.9g}"}


def _cases(tmp_path, raws: list[dict]):
    cases = [row_to_case(r) for r in read_rows(write_csv(tmp_path / "runs.csv", raws))]
    assert all(c.measured.how == "step_time_s" for c in cases)
    return cases


def _synthetic(tmp_path, lines=LINES, values=TRUE):
    return _cases(tmp_path, [_made(line, values) for line in lines])


README_H100 = tuple(range(117, 128))  # the Megatron-LM README's H100 table: 1.7B to 462B


def test_fit_recovers_the_efficiency_that_made_the_data(tmp_path):
    """Eleven models whose matmul share of the step differs tell matmul apart from the rest."""
    fr = fit_published(_synthetic(tmp_path, lines=README_H100))
    assert fr.values["h100-sxm"]["matmul"] == pytest.approx(0.6, rel=0.05)
    assert "matmul" in fr.posterior.informed
    assert fr.rows_by_chip == {"h100-sxm": 11}
    assert fr.last_move < TOLERANCE  # settled
    for r in fr.in_sample:
        assert abs(r.error) < 0.02, r


def test_recompute_is_an_input_not_absorbed_by_matmul(tmp_path):
    """Two runs that differ only in recompute, made at one matmul efficiency, fit that one value
    with both forecasts right: the full-recompute run's extra forward is modelled."""
    plain, full = _cases(tmp_path, [_made(118, edit={"recompute": "none"}),
                                    _made(118, edit={"recompute": "full"})])
    assert plain.job.sharding.remat == "none" and full.job.sharding.remat == "full"
    assert full.measured.step_time_s > 1.2 * plain.measured.step_time_s
    fr = fit_published([plain, full])
    # one value explains both, so recompute was not traded against matmul
    assert max(abs(r.error) for r in fr.in_sample) < 0.02
    assert fr.values["h100-sxm"]["matmul"] == pytest.approx(0.6, rel=0.1)


def test_chips_with_no_rows_borrow_with_wider_uncertainty(tmp_path):
    fr = fit_published(_synthetic(tmp_path))
    profs = fitted_profiles(fr, [], "test fit")
    h100, h200, mi = profs["h100-sxm"].fit, profs["h200"].fit, profs["mi300x"].fit
    assert (h100.basis, h200.basis, mi.basis) == ("own", "architecture", "global")
    assert "h100-sxm" in h200.basis_detail
    mm = {p: next(v for v in profs[p].fit.values if v.term == "matmul")
          for p in ("h100-sxm", "h200", "mi300x")}
    assert mm["h100-sxm"].rows == 2 and mm["h200"].basis == "architecture"
    # pooled: the sibling lies nearer the measured chip than a chip of an unmeasured architecture
    near = abs(np.log(mm["h200"].value / mm["h100-sxm"].value))
    assert near < abs(np.log(mm["mi300x"].value / mm["h100-sxm"].value))
    assert near < 0.15
    assert mm["h100-sxm"].log_sd < mm["h200"].log_sd < mm["mi300x"].log_sd
    assert profs["h200"].efficiency.matmul.max_efficiency == pytest.approx(mm["h200"].value)
    # nothing measured fp4 anywhere: the fp4 value is fp8's fraction (the path's prior), and the
    # network of a TPU nobody ran keeps its assumed value
    tpu = {v.term: v for v in profs["tpu-v5p"].fit.values}
    assert tpu["net_torus"].basis == "assumed" and tpu["net_torus"].log_sd is None
    # no fp4 row: the fp4 value is the curve the compute model falls back to, named, with the
    # value it really uses
    fp4 = next(v for v in h100.values if v.term == "matmul_fp4")
    used = profs["h100-sxm"].efficiency.curve("matmul_fp4").max_efficiency
    assert fp4.basis == "assumed" and "curve" in fp4.borrowed_from and fp4.value == used


def test_cross_validation_holds_each_group_out(tmp_path):
    cases = _cases(tmp_path, [_made(n, {"matmul": 0.5}) for n in (117, 118, 120, 121)]
                   + [_made(119, {"matmul": 0.8})])
    fr = fit_published(cases)
    by_model = {r.id: r for r in cross_validate(fr, "model")}
    by_hw = cross_validate(fr, "hardware")
    assert all(r.distance == "own" for r in by_model.values())
    # one chip: held out by hardware, nothing of it or its architecture is left: global, and
    # the global level has no row either, so the profile's assumed values forecast it
    assert all(r.distance == "global" for r in by_hw)
    # the 0.8 model, forecast from the 0.5 rows, comes out slow; the 0.5 models, mostly fitted
    # on their own kind, much nearer
    fast = by_model[cases[-1].id]
    assert fast.error > 0.1
    assert all(abs(r.error) < fast.error / 2 for r in by_model.values() if r is not fast)
    assert interval_pool({"model": list(by_model.values()), "hardware": by_hw})


def test_a_forecast_that_does_not_fit_in_memory_says_so(tmp_path):
    from simulator.published import evaluate
    from simulator.specs.job import make_job

    case = row_to_case(row_at(117))  # GPT-1.7B, one sequence per GPU: 64 do not fit an H100
    j = case.job
    big = make_job(j.model, j.sharding.model_copy(update={"micro_batch": 64, "global_batch": 48 * 64}),
                   j.hardware, j.chips)
    case = replace(case, job=big)
    fr = fit_published([case])
    for r in (evaluate([case])[0], fr.in_sample[0], cross_validate(fr, "model")[0]):
        assert any("forecast memory" in n and "exceeds" in n for n in r.notes)
        assert not r.fits_memory
    from simulator.published import summarize

    assert summarize(fr.in_sample)["memory_not_fit"] == 1


def test_attention_shape_is_fitted_from_runs_of_several_sequence_lengths(tmp_path):
    """Runs of one model at 512-32k tokens made with a known seq_half: the fit recovers it;
    rows of one length leave it at its prior (FlashAttention-2's, terms.SHAPE_START)."""
    true = {"matmul": 0.6, "attention": 0.5, "attention_seq_half": 2048.0}
    raws = [_made(118, true, {"seq_len": str(s), "global_batch_seqs": str(96 * 64 * 1024 // s)})
            for s in (512, 1024, 2048, 4096, 8192, 16384, 32768)]
    fr = fit_published(_cases(tmp_path, raws))
    v = fr.values["h100-sxm"]
    assert v["attention_seq_half"] == pytest.approx(2048, rel=0.3)
    assert max(abs(r.error) for r in fr.in_sample) < 0.02
    assert "attention_seq_half" in fr.posterior.informed
    one_length = fit_published(_synthetic(tmp_path))
    assert "attention_seq_half" not in one_length.posterior.informed  # stays at its prior
    assert one_length.values["h100-sxm"]["attention_seq_half"] == pytest.approx(256, rel=0.1)
