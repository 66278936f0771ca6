"""Summary statistics of forecast errors: by group, and rank agreement within model+hardware.

Per group: ``n``, median and 90th-percentile absolute error, bias (mean signed error).
Spearman's rho between measured and predicted step time is taken within each group of rows
sharing model and hardware that has at least three distinct configurations (the jobs' own
settings, :func:`simulator.published.evaluate.config_key`, not their forecasts); the summary gives
their median and how many groups reach 0.8.

Rows of one configuration measured differently (one run in two releases) cap what any forecast
can reach, since a forecast gives them one value. Each group's *ceiling* is the best rho over
every strict ordering of its configurations (up to 8 of them): the rank agreement of a perfect
forecaster that tells configurations apart. (Forecasting two different configurations exactly
alike can score above it, as a tie between replicates' ranks can.)
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np

from simulator.published.evaluate import RowResult


def error_stats(errors: list[float]) -> dict:
    """``{"n", "median_abs_error", "p90_abs_error", "bias"}`` of signed relative errors."""
    if not errors:
        return {"n": 0, "median_abs_error": None, "p90_abs_error": None, "bias": None}
    a = np.abs(np.asarray(errors, dtype=float))
    return {"n": len(errors), "median_abs_error": float(np.median(a)),
            "p90_abs_error": float(np.percentile(a, 90)), "bias": float(np.mean(errors))}


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None when either side is constant."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def _ranked(results: list[RowResult]) -> dict[str, tuple[float, list[RowResult]]]:
    """Per model+hardware group with at least 3 distinct configurations: (rho, its rows)."""
    groups: dict[str, list[RowResult]] = defaultdict(list)
    for r in results:
        groups[r.group].append(r)
    out = {}
    for name, rs in sorted(groups.items()):
        if len({r.config for r in rs}) < 3:
            continue
        rho = spearman([r.measured_step_time_s for r in rs], [r.predicted_step_time_s for r in rs])
        if rho is not None:
            out[name] = (rho, rs)
    return out


def rank_groups(results: list[RowResult]) -> dict[str, float]:
    """Spearman per model+hardware group with at least 3 distinct configurations."""
    return {name: rho for name, (rho, _) in _ranked(results).items()}


def spearman_ceiling(results: list[RowResult]) -> float | None:
    """The best Spearman rho a forecast reaches on ``results`` when rows of one configuration
    get one value and different configurations different values: the maximum over the strict
    orderings of the configurations (None for fewer than 2 or more than 8)."""
    from scipy.stats import rankdata

    configs = sorted({r.config for r in results})
    c = len(configs)
    if c < 2 or c > 8:
        return None
    at = np.array([configs.index(r.config) for r in results])
    levels = np.array(list(itertools.permutations(range(c))))
    forecast = rankdata(levels[:, at], axis=1)
    measured = rankdata([r.measured_step_time_s for r in results])
    f = forecast - forecast.mean(axis=1, keepdims=True)
    m = measured - measured.mean()
    norm = np.sqrt((f * f).sum(axis=1) * (m * m).sum())
    ok = norm > 0
    return float(((f[ok] @ m) / norm[ok]).max()) if ok.any() else None


def summarize(results: list[RowResult]) -> dict:
    """Overall, by hardware, by dense/MoE and by source; plus rank agreement, and how many
    forecasts do not fit in memory (the published run did: an assumption is off)."""
    def by(key) -> dict:
        groups: dict[str, list[float]] = defaultdict(list)
        for r in results:
            groups[key(r)].append(r.error)
        return {k: error_stats(v) for k, v in sorted(groups.items())}

    ranked = _ranked(results)
    ranks = {name: rho for name, (rho, _) in ranked.items()}
    rhos = list(ranks.values())
    return {**error_stats([r.error for r in results]),
            "memory_not_fit": sum(not r.fits_memory for r in results),
            "by_hardware": by(lambda r: r.hardware), "by_kind": by(lambda r: r.kind),
            "by_source": by(lambda r: r.source),
            "spearman_by_group": ranks,
            "spearman_ceiling_by_group": {name: spearman_ceiling(rs)
                                          for name, (_, rs) in ranked.items()},
            "spearman_median": float(np.median(rhos)) if rhos else None,
            "spearman_groups": len(rhos),
            "spearman_groups_at_least_0.8": sum(r >= 0.8 for r in rhos)}
