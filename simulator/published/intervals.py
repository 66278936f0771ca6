"""Forecast intervals from cross-validated residuals, by transfer distance, and their coverage.

A forecast's interval is as wide as forecasts that travelled as far turned out to be wrong: the
residuals ``log(measured / forecast)`` of held-out rows at the same *distance* between the rows
a value was fitted on and the chip it is used for:

- ``own``: the chip was measured (other models of it): rows held out by model;
- ``architecture``: the chip was not, a sibling of its architecture was: rows held out by
  hardware whose architecture kept other measured chips;
- ``global``: nothing of its architecture was measured: the other rows held out by hardware.

The 80% band is ``[t exp(q10), t exp(q90)]`` of those residuals, for the job's kind (dense or
MoE) when that kind has at least :data:`MIN_RESIDUALS` of them at that distance, else both kinds
pooled, else the next farther distance (never a nearer one: a missing distance gets the wider
band). Its coverage is checked nested: each hardware group's rows against bands made without
that group's residuals.
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
    tries = [(d, k) for d in DISTANCES[start:] for k in (kind, None)]
    for i, (d, k) in enumerate(tries):
        rows = [r for r in pool if r.distance == d and k in (None, r.kind)]
        last = i == len(tries) - 1
        if len(rows) >= MIN_RESIDUALS or (last and rows):
            x = np.array([log_ratio(r) for r in rows])
            lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
            return IntervalBand(level=level, lo_factor=float(np.exp(lo)),
                                hi_factor=float(np.exp(hi)), residuals=len(rows), distance=d)
    return None


def covered(r: RowResult, b: IntervalBand | None) -> bool | None:
    """Whether the measured time lies in the band around the forecast (None: no band)."""
    if b is None:
        return None
    return b.lo_factor <= r.measured_step_time_s / r.predicted_step_time_s <= b.hi_factor


def coverage(cv: dict[str, list[RowResult]], level: float = LEVEL) -> dict:
    """Nested coverage on the by-hardware folds: each row against the band made without its
    hardware group's residuals. ``{"level", "n", "covered", "by_distance": {d: {n, covered}}}``."""
    pool = interval_pool(cv)
    hits: dict[str, list[bool]] = {}
    for r in cv.get("hardware", []):
        others = [p for p in pool if p.hardware != r.hardware]
        c = covered(r, band(others, r.distance, r.kind, level))
        if c is not None:
            hits.setdefault(r.distance, []).append(c)
    every = [h for v in hits.values() for h in v]
    frac = (lambda v: float(np.mean(v)) if v else None)
    return {"level": level, "n": len(every), "covered": frac(every),
            "by_distance": {d: {"n": len(v), "covered": frac(v)} for d, v in sorted(hits.items())}}
