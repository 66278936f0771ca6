"""Forecast intervals from cross-validated residuals, by transfer distance, and their coverage.

A forecast's interval is as wide as forecasts that travelled as far turned out to be wrong: the
residuals ``log(measured / forecast)`` of held-out rows at the same *distance* between the rows
a value was fitted on and the chip it is used for:

- ``own``: the chip was measured (other models of it): rows held out by model;
- ``architecture``: the chip was not, a sibling of its architecture was: rows held out by
  hardware whose architecture kept other measured chips;
- ``global``: nothing of its architecture was measured: the other rows held out by hardware.

The 80% band is the residuals' own 10% and 90% quantiles, each side widened in quadrature by
the uncertainty of their mean across the few held-out groups that gave them
(:func:`_predictive_band`). Published runs cover three to five chips: on them plain quantiles
covered 71% of held-out chips' rows, a normal predictive band 86%, this one 85% (2026-12-05). The
residuals are those of the job's kind (dense or MoE) at its distance when it has at least
:data:`MIN_RESIDUALS`, else of its kind at the next farther distance (MoE errors are another size
than dense ones), else of both kinds; never of a nearer distance (a missing distance gets the
wider band); the farthest takes what it has. Its coverage is checked nested: each hardware
group's rows against bands made without that group's residuals.
"""

from __future__ import annotations

import numpy as np

from hardware_profiles.schema import IntervalBand
from simulator.published.evaluate import RowResult

LEVEL = 0.8
MIN_RESIDUALS = 8
DISTANCES = ("own", "architecture", "global")


def log_ratio(r: RowResult) -> float:
    """``log(measured / forecast)``: how far the measured time lies above the forecast."""
    return float(np.log(r.measured_step_time_s / r.predicted_step_time_s))


def interval_pool(cv: dict[str, list[RowResult]]) -> list[RowResult]:
    """The held-out rows the bands are made of: ``own`` from the by-model folds, ``architecture``
    and ``global`` from the by-hardware folds."""
    own = [r for r in cv.get("model", []) if r.distance == "own"]
    far = [r for r in cv.get("hardware", []) if r.distance in ("architecture", "global")]
    return own + far


def band(pool: list[RowResult], distance: str, kind: str, level: float = LEVEL
         ) -> IntervalBand | None:
    """The band for a forecast at ``distance`` of ``kind`` (module docstring); None when the
    pool has no residual at this distance or farther."""
    start = DISTANCES.index(distance) if distance in DISTANCES else len(DISTANCES) - 1
    tries = [(d, k) for k in (kind, None) for d in DISTANCES[start:]]
    for i, (d, k) in enumerate(tries):
        rows = [r for r in pool if r.distance == d and k in (None, r.kind)]
        last = i == len(tries) - 1
        if len(rows) >= MIN_RESIDUALS or (last and rows):
            lo, hi = _predictive_band(rows, pool, level)
            return IntervalBand(level=level, lo_factor=float(np.exp(lo)),
                                hi_factor=float(np.exp(hi)), residuals=len(rows), distance=d)
    return None


def _fold_means(rows: list[RowResult]) -> np.ndarray:
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r.fold or r.hardware, []).append(log_ratio(r))
    return np.array([np.mean(v) for v in groups.values()])


def _predictive_band(rows: list[RowResult], pool: list[RowResult], level: float
                     ) -> tuple[float, float]:
    """The band of a new group's row, in log units: the rows' own quantiles (their shape: MoE
    residuals are skewed) about their mean ``c``, each side widened in quadrature by the
    uncertainty of that mean, ``z sqrt(s_b^2 / K)`` (``K`` held-out groups, folds, gave the
    rows; ``s_b^2`` the variance of their means):
    ``lo = c - sqrt((c - q_lo)^2 + z^2 s_b^2 / K)``, ``hi`` likewise. With one group (one measured
    sibling) ``s_b^2`` comes from every farther fold of the pool and counts in full: one sibling
    says nothing of how far the next chip's bias may fall from it."""
    from scipy.stats import norm

    x = np.array([log_ratio(r) for r in rows])
    own_means = _fold_means(rows)
    means = own_means if len(own_means) > 1 else _fold_means([r for r in pool if r.distance != "own"])
    sb2 = float(np.var(means, ddof=1)) if len(means) > 1 else 0.0
    shift2 = float(norm.ppf((1 + level) / 2)) ** 2 * sb2 / max(len(own_means), 1)
    c = float(np.mean(x))
    q_lo, q_hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
    return c - float(np.sqrt((c - q_lo) ** 2 + shift2)), c + float(np.sqrt((q_hi - c) ** 2 + shift2))


def covered(r: RowResult, b: IntervalBand | None) -> bool | None:
    """Whether the measured time lies in the band around the forecast (None: no band)."""
    if b is None:
        return None
    return b.lo_factor <= r.measured_step_time_s / r.predicted_step_time_s <= b.hi_factor


def nested_band(pool: list[RowResult], r: RowResult, level: float = LEVEL) -> IntervalBand | None:
    """The band of held-out row ``r`` made without any residual of its hardware or its fold."""
    others = [p for p in pool if p.hardware != r.hardware and (not r.fold or p.fold != r.fold)]
    return band(others, r.distance, r.kind, level)


def coverage(cv: dict[str, list[RowResult]], level: float = LEVEL) -> dict:
    """Nested coverage on the by-hardware folds: each row against the band made without its
    hardware group's residuals. ``{"level", "n", "covered", "by_distance": {d: {n, covered}}}``."""
    pool = interval_pool(cv)
    hits: dict[str, list[bool]] = {}
    for r in cv.get("hardware", []):
        c = covered(r, nested_band(pool, r, level))
        if c is not None:
            hits.setdefault(r.distance, []).append(c)
    every = [h for v in hits.values() for h in v]
    frac = (lambda v: float(np.mean(v)) if v else None)
    return {"level": level, "n": len(every), "covered": frac(every),
            "by_distance": {d: {"n": len(v), "covered": frac(v)} for d, v in sorted(hits.items())}}
