"""Error statistics and rank agreement of the published-runs report, on hand-made rows."""

from __future__ import annotations

import pytest

from simulator.published.evaluate import RowResult
from simulator.published.summary import error_stats, rank_groups, spearman_ceiling, summarize


def _r(model, hw, chips, measured, predicted, kind="dense", source="s", config=None):
    return RowResult(f"{source}:{chips}", model, hw, kind, source, chips, measured, predicted, "x",
                     config=config or f"{chips} chips")


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


def test_one_configuration_measured_twice_counts_once():
    """Three rows but two configurations (one run measured in two releases): not ranked,
    whatever the forecasts; a third configuration makes the group count."""
    rows = [_r("M", "h100", 8, 1.0, 1.1, config="a"), _r("M", "h100", 8, 1.8, 1.2, config="a"),
            _r("M", "h100", 16, 2.0, 2.2, config="b")]
    assert rank_groups(rows) == {}
    rows.append(_r("M", "h100", 32, 3.0, 3.3, config="c"))
    assert set(rank_groups(rows)) == {"m @ h100"}


def test_config_key_ignores_names_and_keeps_settings():
    from simulator.published import row_to_case
    from simulator.published.evaluate import config_key
    from tests.published_helpers import row_at

    a, b = row_to_case(row_at(65)), row_to_case(row_at(74))  # one configuration, two releases
    assert a.row.text("source_table") != b.row.text("source_table")
    assert config_key(a.job) == config_key(b.job)
    # Qwen3-30B-A3B on B200: token-drop twin (capacity factor) and micro-batch 4 differ from the
    # dropless micro-batch-1 run
    mb1, drop, mb4 = (row_to_case(row_at(n)).job for n in (73, 97, 64))
    assert drop.sharding == mb1.sharding and drop.model.moe != mb1.model.moe
    assert mb4.sharding.micro_batch != mb1.sharding.micro_batch
    assert len({config_key(j) for j in (mb1, drop, mb4)}) == 3


def test_the_rank_ceiling_of_replicates_measured_apart():
    # configurations D < C < A (three replicates) < B, but B's two replicates measured 28.9 and
    # 51.3 s: no forecast giving B one value orders them all; ranks by hand: measured
    # (1, 2, 3, 4, 5, 6, 7) for (D, C, B1, A1, A2, A3, B2); the best strict order D < C < A < B
    # forecasts ranks (1, 2, 6.5, 4, 4, 4, 6.5): rho = 0.6736
    rows = [_r("M", "h100", i, m, 1.0, config=c) for i, (c, m) in enumerate(
        [("D", 12.49), ("C", 24.85), ("B", 28.94), ("A", 29.7), ("A", 29.26), ("A", 29.45),
         ("B", 51.27)])]
    assert spearman_ceiling(rows) == pytest.approx(0.67363, abs=1e-4)
    consistent = [_r("M", "h100", i, m, 1.0, config=c) for i, (c, m) in enumerate(
        [("D", 12.0), ("C", 24.0), ("A", 29.0), ("A", 29.0), ("B", 40.0), ("B", 40.0)])]
    assert spearman_ceiling(consistent) == pytest.approx(1.0)
    extra = _r("M", "h100", 99, 60.0, 2.0, config="E")
    s = summarize(rows + [extra])
    (group,) = s["spearman_ceiling_by_group"]
    assert s["spearman_ceiling_by_group"][group] == pytest.approx(spearman_ceiling(rows + [extra]))
    assert spearman_ceiling(rows + [extra]) > spearman_ceiling(rows)  # E ranks last either way


def test_no_rank_ceiling_beyond_eight_configurations():
    rows = [_r("M", "h100", i, float(i + 1), 1.0, config=str(i)) for i in range(9)]
    assert spearman_ceiling(rows) is None
    assert spearman_ceiling(rows[:1]) is None
