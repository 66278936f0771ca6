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
        rows.append({**row.raw, "step_time_s": f"{forecast_at(case, {PARAM: eff}):.9g}"})
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
