"""Fit per-hardware-family efficiencies to published runs, whole models held out.

Parameters, per hardware profile (family): the ``max_efficiency`` of its ``matmul`` curve
(bf16/fp16 GEMMs), of its ``matmul_fp8`` curve (fp8/fp4 GEMMs, scaling and casts included)
and of its ``gather`` curve (the MoE token permutation: dispatch and combine, which Megatron runs
as several gather / scatter / pad kernels). Half-saturation sizes stay as the profile has them.

Two stages, each a set of one-dimensional fits: (1) the matmul curves on dense rows only (a
precision with no dense row of its family takes the family's other matmul value); (2) the gather
curve on MoE rows, with stage 1's values. For each fit every row is forecast on a grid of values,
``log(forecast)`` is interpolated linearly in ``log(value)``, and the value minimising the mean
``|log(forecast / measured)|`` (L1: a few rows with doubtful configs do not pull the fit) is
taken. Reported errors always come from fresh forecasts at the fitted values.

Held out by model: each model (variants such as "(tokendrop)" count as the same model) is
forecast with values fitted on the other models' rows only. Holding out an MoE model leaves
stage 1 unchanged (it sees dense rows only), so stage 2's grid, forecast once at stage 1's
values, serves every fold without leaking the held-out rows.

The ``gather`` curve also prices every model's embedding lookup and its gradient, so forecasts
at the fitted values (and the profile ``meshcast fit --published`` writes) apply it to dense rows
too; stage 1 fitted their matmul values at the profile's own gather curve (the difference is one
lookup per step).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from hardware_profiles.schema import HardwareProfile
from simulator.predict import predict_job
from simulator.published.evaluate import RowResult, base_model_name, result_of
from simulator.published.jobs import Case
from simulator.specs.job import make_job

Param = tuple[str, str]  # (profile name, curve: "matmul" | "matmul_fp8" | "gather")

#: Values every row is forecast at, per curve.
GRIDS = {"matmul": np.round(np.linspace(0.25, 1.0, 16), 4),
         "gather": np.round(np.geomspace(0.01, 1.0, 16), 5)}
GRIDS["matmul_fp8"] = GRIDS["matmul"]


def matmul_param(case: Case) -> Param:
    low = case.job.sharding.precision in ("fp8", "fp4")
    return case.job.hardware.name, "matmul_fp8" if low else "matmul"


def stage_param(case: Case) -> Param:
    """The parameter a row is fitted for: matmul (dense rows) or gather (MoE rows)."""
    return (case.job.hardware.name, "gather") if case.job.model.is_moe else matmul_param(case)


def with_efficiency(profile: HardwareProfile, curve: str, value: float, source: str) -> HardwareProfile:
    """``profile`` with ``efficiency.<curve>.max_efficiency = value``; an absent ``matmul_fp8``
    starts from the ``matmul`` curve, an absent ``gather`` from the ``memory`` curve."""
    eff = profile.efficiency
    base = getattr(eff, curve) or (eff.matmul if curve == "matmul_fp8" else eff.memory)
    new = base.model_copy(update={"max_efficiency": float(value), "source": source,
                                  "calibrated_range": None})
    return profile.model_copy(update={"efficiency": eff.model_copy(update={curve: new})})


def forecast_at(case: Case, values: dict[Param, float]) -> float:
    """Step time of ``case`` with the parameters it uses set from ``values`` (profile otherwise)."""
    prof, j = case.job.hardware, case.job
    # the gather curve also prices every model's embedding lookup: dense rows use it too, as the
    # written profile will
    used = [matmul_param(case), (prof.name, "gather")]
    for p in used:
        if p in values:
            prof = with_efficiency(prof, p[1], values[p], "fit trial")
    if prof is j.hardware:
        return predict_job(j).step_time_s
    return predict_job(make_job(j.model, j.sharding, prof, j.chips)).step_time_s


def response(cases: list[Case], fixed: dict[Param, float], log=None) -> dict[str, np.ndarray]:
    """``log(forecast)`` of each case on its stage parameter's grid, other parameters ``fixed``."""
    out = {}
    for i, c in enumerate(cases):
        if log:
            log(f"fit: row {i + 1}/{len(cases)} on the grid ({c.id})")
        p = stage_param(c)
        out[c.id] = np.log([forecast_at(c, {**fixed, p: v}) for v in GRIDS[p[1]]])
    return out


def best_value(cases: list[Case], curves: dict[str, np.ndarray], grid: np.ndarray) -> float:
    """The value minimising mean ``|log(forecast / measured)|`` over ``cases``."""
    fine = np.exp(np.linspace(np.log(grid[0]), np.log(grid[-1]), 400))
    loss = np.zeros_like(fine)
    for c in cases:
        loss += np.abs(np.interp(np.log(fine), np.log(grid), curves[c.id])
                       - np.log(c.measured.step_time_s))
    return float(fine[int(np.argmin(loss))])


def fit_stage(cases: list[Case], curves: dict[str, np.ndarray]) -> dict[Param, float]:
    groups: dict[Param, list[Case]] = defaultdict(list)
    for c in cases:
        groups[stage_param(c)].append(c)
    return {p: best_value(cs, curves, GRIDS[p[1]]) for p, cs in sorted(groups.items())}


def fill_precisions(values: dict[Param, float], families: set[str]) -> dict[Param, float]:
    """A family with one matmul value fitted lends it to the other precision."""
    out = dict(values)
    for fam in families:
        a, b = (fam, "matmul"), (fam, "matmul_fp8")
        if a in out and b not in out:
            out[b] = out[a]
        elif b in out and a not in out:
            out[a] = out[b]
    return out


@dataclass
class FitResult:
    values: dict[Param, float]
    in_sample: list[RowResult]
    held_out: list[RowResult]
    held_out_values: dict[str, dict[Param, float]] = field(default_factory=dict)  # case id ->
    counts: dict[Param, int] = field(default_factory=dict)

    def values_table(self) -> list[dict]:
        """One entry per parameter; ``rows`` 0 means lent by the family's other matmul curve."""
        return [{"hardware": p[0], "curve": p[1], "max_efficiency": v,
                 "rows": self.counts.get(p, 0)} for p, v in sorted(self.values.items())]

    def describe(self) -> list[str]:
        return [f"{v['hardware']:14s} {v['curve']:11s} {v['max_efficiency']:.3f}  "
                + (f"({v['rows']} rows)" if v["rows"] else "(no rows: the family's other matmul value)")
                for v in self.values_table()]


class _Fitter:
    """Both stages on a training subset; stage 2's grid is forecast once (module docstring)."""

    def __init__(self, cases: list[Case], log=None) -> None:
        self.dense = [c for c in cases if not c.job.model.is_moe]
        self.moe = [c for c in cases if c.job.model.is_moe]
        self.families = {c.job.hardware.name for c in cases}
        self.dense_curves = response(self.dense, {}, log)
        self.stage1 = fill_precisions(fit_stage(self.dense, self.dense_curves), self.families)
        self.moe_curves = response(self.moe, self.stage1, log)

    def values(self, exclude: str | None = None) -> dict[Param, float]:
        keep = [c for c in self.dense if _model(c) != exclude]
        v = fill_precisions(fit_stage(keep, self.dense_curves), self.families)
        v.update(fit_stage([c for c in self.moe if _model(c) != exclude], self.moe_curves))
        return v


def _model(case: Case) -> str:
    return base_model_name(case.row.text("model"))


def fit_published(cases: list[Case], log=None) -> FitResult:
    """In-sample values (all rows) and held-out-by-model forecasts (see module docstring);
    ``log(message)`` hears progress."""
    fitter = _Fitter(cases, log)
    values = fitter.values()
    counts: dict[Param, int] = defaultdict(int)
    for c in cases:
        counts[stage_param(c)] += 1
    in_sample = [result_of(c, forecast_at(c, values)) for c in cases]
    held, used = [], {}
    for model in sorted({_model(c) for c in cases}):
        fold = fitter.values(exclude=model)
        for c in (c for c in cases if _model(c) == model):
            used[c.id] = fold
            r = result_of(c, forecast_at(c, fold))
            if stage_param(c) not in fold:
                r = replace(r, notes=r.notes + (
                    "held out: no other model fits its parameter; profile value kept",))
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
