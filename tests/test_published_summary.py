"""Error statistics and rank agreement of the published-runs report, on hand-made rows."""

from __future__ import annotations

import pytest

from simulator.published.evaluate import RowResult
from simulator.published.summary import error_stats, rank_groups, summarize


def _r(model, hw, chips, measured, predicted, kind="dense", source="s"):
    return RowResult(f"{source}:{chips}", model, hw, kind, source, chips, measured, predicted, "x")


def test_error_stats_by_hand():
    # |e| = 0.1, 0.2, 0.05, 0.4: median 0.15; p90 by linear interpolation 0.2 + 0.7 * 0.2 = 0.34
    s = error_stats([0.1, -0.2, 0.05, -0.4])
    assert s["n"] == 4
    assert s["median_abs_error"] == pytest.approx(0.15)
    assert s["p90_abs_error"] == pytest.approx(0.34)
    assert s["bias"] == pytest.approx(-0.1125)


def test_rank_agreement_within_model_and_hardware_only():
    rows = [_r("M", "h100", 8, 1.0, 1.1), _r("M", "h100", 16, 2.0, 1.9), _r("M", "h100", 32, 3.0, 3.3),
            _r("M (tokendrop)", "h100", 64, 4.0, 3.5),  # a variant of M: same group
            _r("M", "b200", 8, 1.0, 2.0), _r("M", "b200", 16, 2.0, 1.0),  # only two configs
            _r("N", "h100", 8, 1.0, 3.0), _r("N", "h100", 16, 2.0, 2.0), _r("N", "h100", 32, 3.0, 1.0)]
    groups = rank_groups(rows)  # M: same order (its variant included); N: reversed
    assert groups == {"m @ h100": pytest.approx(1.0), "n @ h100": pytest.approx(-1.0)}
    s = summarize(rows)
    assert s["spearman_groups"] == 2 and s["spearman_groups_at_least_0.8"] == 1
    assert s["spearman_median"] == pytest.approx(0.0)
    assert set(s["by_hardware"]) == {"b200", "h100"} and s["by_hardware"]["b200"]["n"] == 2
