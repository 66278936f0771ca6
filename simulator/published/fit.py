"""Fit per-hardware-family matmul efficiencies to published runs, whole models held out.

Parameters: for each hardware profile (family), the ``max_efficiency`` of its ``matmul`` curve
(bf16/fp16 GEMMs) and of its ``matmul_fp8`` curve (fp8/fp4 GEMMs, their scaling and casts
included); half-saturation sizes stay as the profile has them. Each row depends on exactly one
parameter, so each is a one-dimensional fit: every row is forecast on a grid of efficiencies
:data:`GRID`, ``log(forecast)`` is interpolated linearly in ``log(efficiency)``, and the value
minimising the mean ``|log(forecast / measured)|`` (an L1 loss: a few rows with doubtful configs
do not pull the fit) is taken. Reported errors always come from a fresh forecast at the fitted
value, never from the interpolation.

Held out by model: each model (variants such as "(tokendrop)" count as the same model) is
forecast with parameters fitted on the other models' rows only; a parameter with no row from
another model keeps the profile's own value for that model (and says so).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from hardware_profiles.schema import HardwareProfile
from simulator.predict import predict_job
from simulator.published.evaluate import RowResult, base_model_name, result_of
from simulator.published.jobs import Case
from simulator.specs.job import make_job

#: Efficiencies every row is forecast at (fraction of the format's dense peak).
GRID = np.round(np.linspace(0.25, 1.0, 16), 4)
_FINE = np.exp(np.linspace(np.log(GRID[0]), np.log(GRID[-1]), 400))

Param = tuple[str, str]  # (profile name, "matmul" | "matmul_fp8")


def param_of(case: Case) -> Param:
    low = case.job.sharding.precision in ("fp8", "fp4")
    return case.job.hardware.name, "matmul_fp8" if low else "matmul"


def with_efficiency(profile: HardwareProfile, curve: str, value: float, source: str) -> HardwareProfile:
    """``profile`` with ``efficiency.<curve>.max_efficiency = value`` (``matmul_fp8``, when the
    profile has none, starts from its ``matmul`` curve)."""
    eff = profile.efficiency
    base = getattr(eff, curve) or eff.matmul
    new = base.model_copy(update={"max_efficiency": float(value), "source": source,
                                  "calibrated_range": None})
    return profile.model_copy(update={"efficiency": eff.model_copy(update={curve: new})})


def forecast_at(case: Case, values: dict[Param, float]) -> float:
    """Step time of ``case`` with its parameter set to ``values`` (profile value if absent)."""
    p = param_of(case)
    if p not in values:
        return predict_job(case.job).step_time_s
    prof = with_efficiency(case.job.hardware, p[1], values[p], "fit trial")
    j = case.job
    return predict_job(make_job(j.model, j.sharding, prof, j.chips)).step_time_s


def response(cases: list[Case]) -> dict[str, np.ndarray]:
    """``log(forecast)`` of each case on :data:`GRID`."""
    return {c.id: np.log([forecast_at(c, {param_of(c): e}) for e in GRID]) for c in cases}


def best_value(cases: list[Case], curves: dict[str, np.ndarray]) -> float:
    """The efficiency minimising mean ``|log(forecast / measured)|`` over ``cases``."""
    loss = np.zeros_like(_FINE)
    for c in cases:
        logf = np.interp(np.log(_FINE), np.log(GRID), curves[c.id])
        loss += np.abs(logf - np.log(c.measured.step_time_s))
    return float(_FINE[int(np.argmin(loss))])


def fit_values(cases: list[Case], curves: dict[str, np.ndarray]) -> dict[Param, float]:
    groups: dict[Param, list[Case]] = defaultdict(list)
    for c in cases:
        groups[param_of(c)].append(c)
    return {p: best_value(cs, curves) for p, cs in sorted(groups.items())}


@dataclass
class FitResult:
    values: dict[Param, float]
    in_sample: list[RowResult]
    held_out: list[RowResult]
    held_out_values: dict[str, float | None] = field(default_factory=dict)  # case id -> value
    counts: dict[Param, int] = field(default_factory=dict)

    def values_table(self) -> list[dict]:
        return [{"hardware": p[0], "curve": p[1], "max_efficiency": v, "rows": self.counts[p]}
                for p, v in self.values.items()]


def fit_published(cases: list[Case]) -> FitResult:
    """In-sample values (all rows) and held-out-by-model forecasts (see module docstring)."""
    curves = response(cases)
    values = fit_values(cases, curves)
    counts = defaultdict(int)
    for c in cases:
        counts[param_of(c)] += 1
    in_sample = [result_of(c, forecast_at(c, values)) for c in cases]
    by_model: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_model[base_model_name(c.row.text("model"))].append(c)
    held, used = [], {}
    for model, test in by_model.items():
        train = [c for c in cases if base_model_name(c.row.text("model")) != model]
        fold = fit_values(train, curves)
        for c in test:
            used[c.id] = fold.get(param_of(c))
            r = result_of(c, forecast_at(c, fold))
            if used[c.id] is None:
                r = RowResult(**{**r.__dict__, "notes": r.notes + (
                    "held out: no other model shares its parameter; profile value kept",)})
            held.append(r)
    order = {c.id: i for i, c in enumerate(cases)}
    held.sort(key=lambda r: order[r.id])
    return FitResult(values, in_sample, held, used, dict(counts))


def fitted_profiles(base: dict[str, HardwareProfile], values: dict[Param, float], source: str
                    ) -> dict[str, HardwareProfile]:
    """Each profile in ``base`` with its fitted curves (``source`` recorded on each)."""
    out = dict(base)
    for (name, curve), v in values.items():
        if name in out:
            out[name] = with_efficiency(out[name], curve, v, source)
    return out
