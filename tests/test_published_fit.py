"""The published-run fit recovers a known efficiency and holds whole models out."""

from __future__ import annotations

import pytest

from simulator.published import read_rows, row_to_case
from simulator.published.fit import fit_published, forecast_at, stage_param
from tests.published_helpers import row_at, write_csv

# Megatron-LM README H100 table: GPT-1.7B (48 GPUs, DP48) and GPT-7.1B (96 GPUs, TP2): bf16.
LINES = (117, 118)
PARAM = ("h100-sxm", "matmul")


def _synthetic(tmp_path, effs: dict[int, float]):
    """The two rows with step_time_s replaced by meshcast's own forecast at ``effs[line]``."""
    rows = []
    for line, eff in effs.items():
        row = row_at(line)
        case = row_to_case(row)
        assert stage_param(case) == PARAM
        rows.append({**row.raw, "step_time_s": f"{forecast_at(case, {PARAM: eff}).step_time_s:.9g}"})
    cases = [row_to_case(r) for r in read_rows(write_csv(tmp_path / "runs.csv", rows))]
    assert all(c.measured.how == "step_time_s" for c in cases)
    return cases


def test_fit_recovers_the_efficiency_that_made_the_data(tmp_path):
    fr = fit_published(_synthetic(tmp_path, {117: 0.6, 118: 0.6}))
    assert fr.values[PARAM] == pytest.approx(0.6, rel=0.01)  # grid interpolation, 400 points
    assert fr.counts[PARAM] == 2
    for r in fr.in_sample + fr.held_out:
        assert abs(r.error) < 0.01, r


def test_held_out_rows_use_only_the_other_models(tmp_path):
    cases = _synthetic(tmp_path, {117: 0.5, 118: 0.8})
    fr = fit_published(cases)
    a, b = (c.id for c in cases)
    assert fr.held_out_values[a][PARAM] == pytest.approx(0.8, rel=0.01)
    assert fr.held_out_values[b][PARAM] == pytest.approx(0.5, rel=0.01)
    # fitted at the other model's higher efficiency, model A is forecast faster than measured
    held = {r.id: r for r in fr.held_out}
    assert held[a].error < -0.05 and held[b].error > 0.05


def test_fit_recovers_the_host_issue_time_that_made_the_data(tmp_path):
    """Two dropless Qwen3-30B-A3B rows on B200 (micro-batch 4 and 1: the host binds harder on
    the smaller one) forecast at a known gather efficiency and host issue time."""
    from simulator.published.fit import GRIDS, HOST_PARAM

    gather, host = float(GRIDS["gather"][11]), 3e-4
    rows = []
    for line in (42, 73):
        case = row_to_case(row_at(line))
        p = stage_param(case)
        assert p == ("b200", "gather")
        t = forecast_at(case, {p: gather, HOST_PARAM: host}).step_time_s
        rows.append({**row_at(line).raw, "step_time_s": f"{t:.9g}"})
    cases = [row_to_case(r) for r in read_rows(write_csv(tmp_path / "moe.csv", rows))]
    fr = fit_published(cases, fit_host=True)
    assert fr.host_issue_s == pytest.approx(host, rel=0.05)
    assert fr.values[("b200", "gather")] == pytest.approx(gather, rel=0.02)
    assert fr.counts[HOST_PARAM] == 2
    for r in fr.in_sample:
        assert abs(r.error) < 0.01, r
    plain = fit_published(cases)  # the host time left at the jobs' own (0): not fitted
    assert plain.host_issue_s is None and HOST_PARAM not in plain.values
    assert max(abs(r.error) for r in plain.in_sample) > 0.02  # one gather value cannot fit both


def test_a_forecast_that_does_not_fit_in_memory_says_so_with_or_without_the_fit():
    from dataclasses import replace

    from simulator.published import evaluate
    from simulator.specs.job import make_job

    case = row_to_case(row_at(117))  # GPT-1.7B, one sequence per GPU: 64 do not fit an H100
    j = case.job
    big = make_job(j.model, j.sharding.model_copy(update={"micro_batch": 64, "global_batch": 48 * 64}),
                   j.hardware, j.chips)
    case = replace(case, job=big)
    fr = fit_published([case])
    for r in (evaluate([case])[0], fr.in_sample[0], fr.held_out[0]):
        assert any("forecast memory" in n and "exceeds" in n for n in r.notes)
