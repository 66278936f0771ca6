"""Forecast intervals from cross-validated residuals (simulator.published.intervals)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.published.evaluate import RowResult
from simulator.published.intervals import MIN_RESIDUALS, band, coverage, interval_pool


def _row(i: int, hw: str, ratio: float, distance: str, kind: str = "dense", fold: str = "f"):
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
    # the quantiles of a lognormal(0.05, 0.2): exp(0.05 -+ 1.2816 * 0.2)
    assert b.lo_factor == pytest.approx(np.exp(0.05 - 1.2816 * 0.2), rel=0.05)
    assert b.hi_factor == pytest.approx(np.exp(0.05 + 1.2816 * 0.2), rel=0.05)


def test_band_uses_the_kind_then_pools_then_goes_farther_never_nearer():
    own = [_row(i, "a", 1.0 + 0.01 * i, "own") for i in range(MIN_RESIDUALS)]
    far = [_row(100 + i, "b", 0.5 + 0.1 * i, "global", "moe") for i in range(MIN_RESIDUALS)]
    assert band(own + far, "own", "dense").distance == "own"
    moe_own = band(own + far, "own", "moe")  # too few MoE own rows: both kinds pooled at own
    assert moe_own.distance == "own" and moe_own.residuals == MIN_RESIDUALS
    # no architecture residual: the farther (global) band, never the nearer (own) one
    assert band(own + far, "architecture", "moe").distance == "global"
    assert band(own, "global", "dense") is None


def test_the_pool_takes_own_from_model_folds_and_far_from_hardware_folds():
    cv = {"model": [_row(1, "a", 1.0, "own"), _row(2, "a", 1.0, "global")],
          "hardware": [_row(3, "a", 1.0, "own"), _row(4, "a", 1.0, "architecture"),
                       _row(5, "a", 1.0, "global")]}
    assert [r.id for r in interval_pool(cv)] == ["r1", "r4", "r5"]
