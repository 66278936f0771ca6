"""Forecast intervals from cross-validated residuals (simulator.published.intervals)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.published.evaluate import RowResult
from simulator.published.intervals import MIN_RESIDUALS, band, coverage, interval_pool


def _row(i: int, hw: str, ratio: float, distance: str, kind: str = "dense", fold: str = ""):
    """A held-out row whose measured time is ``ratio`` times its forecast (1 s)."""
    return RowResult(f"r{i}", "m", hw, kind, "src", 8, ratio, 1.0, "step_time_s",
                     distance=distance, fold=fold)


def test_coverage_on_synthetic_noise_is_near_its_nominal_level():
    rng = np.random.default_rng(7)
    rows = [_row(i, f"hw{i % 12}", float(np.exp(rng.normal(0.05, 0.2))), "global")
            for i in range(600)]
    cov = coverage({"hardware": rows})
    assert cov["n"] == 600
    assert 0.75 <= cov["covered"] <= 0.85
    b = band(rows, "global", "dense")
    # the 10% and 90% quantiles of a lognormal(0.05, 0.2): exp(0.05 -+ 1.2816 * 0.2); twelve
    # groups of one distribution add little for the uncertainty of the mean
    assert b.lo_factor == pytest.approx(np.exp(0.05 - 1.2816 * 0.2), rel=0.05)
    assert b.hi_factor == pytest.approx(np.exp(0.05 + 1.2816 * 0.2), rel=0.05)


def test_band_keeps_the_kind_then_goes_farther_then_pools_never_nearer():
    own = [_row(i, "a", 1.0 + 0.01 * i, "own") for i in range(MIN_RESIDUALS)]
    far = [_row(100 + i, "b", 0.5 + 0.1 * i, "global", "moe") for i in range(MIN_RESIDUALS)]
    assert band(own + far, "own", "dense").distance == "own"
    # no MoE row held out at own distance: the MoE rows of the farther distance
    moe = band(own + far, "own", "moe")
    assert moe.distance == "global" and moe.residuals == MIN_RESIDUALS
    assert moe.hi_factor / moe.lo_factor > band(own + far, "own", "dense").hi_factor
    # no dense row at global distance: both kinds pooled there, never the nearer (own) band
    assert band(own + far, "global", "dense").distance == "global"
    assert band(own, "global", "dense") is None


def test_one_sibling_group_gets_the_spread_between_groups_in_full():
    """Residuals from one held-out chip say nothing of where the next chip's bias falls: its
    band adds the spread of the farther groups' means."""
    rng = np.random.default_rng(3)
    sib = [_row(i, "s", float(np.exp(rng.normal(0, 0.05))), "architecture") for i in range(20)]
    far = [_row(100 + i, f"g{i % 4}", float(np.exp(0.3 * (i % 4) + rng.normal(0, 0.05))), "global")
           for i in range(40)]
    alone, with_far = band(sib, "architecture", "dense"), band(sib + far, "architecture", "dense")
    assert with_far.distance == "architecture"
    assert with_far.hi_factor / with_far.lo_factor > 2 * alone.hi_factor / alone.lo_factor


def test_the_pool_takes_own_from_model_folds_and_far_from_hardware_folds():
    cv = {"model": [_row(1, "a", 1.0, "own"), _row(2, "a", 1.0, "global")],
          "hardware": [_row(3, "a", 1.0, "own"), _row(4, "a", 1.0, "architecture"),
                       _row(5, "a", 1.0, "global")]}
    assert [r.id for r in interval_pool(cv)] == ["r1", "r4", "r5"]
