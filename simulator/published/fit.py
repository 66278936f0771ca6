"""Fit per-hardware-family efficiencies to published runs, whole models held out.

Parameters, per hardware profile (family): the ``max_efficiency`` of its ``matmul`` curve
(bf16/fp16 GEMMs), of its ``matmul_fp8`` curve (fp8/fp4 GEMMs, scaling and casts included)
and of its ``gather`` curve (the MoE token permutation: dispatch and combine, which Megatron runs
as several gather / scatter / pad kernels). Half-saturation sizes stay as the profile has them.

Optionally (``fit_host``, ``--fit-host``) one global parameter more: the host issue time per op
of eager dropless MoE (ShardingSpec.moe_host_issue_s), fitted jointly with the gather values on
the MoE rows: a ``(host, gather)`` grid per dropless row.

Two stages, each a set of one-dimensional fits: (1) the matmul curves on dense rows only (a
precision with no dense row of its family takes the family's other matmul value); (2) the gather
curve on MoE rows, with stage 1's values. For each fit every row is forecast on a grid of values,
``log(forecast)`` is interpolated linearly in ``log(value)``, and the value minimising the mean
``|log(forecast / measured)|`` (L1: a few rows with doubtful configs do not pull the fit) is
taken. Reported errors always come from fresh forecasts at the fitted values.

Held out by model: each model (variants such as "(tokendrop)" count as the same model) is
forecast with values fitted on the other models' rows only. Holding out an MoE model leaves
stage 1 unchanged (it sees dense rows only), so stage 2's grid, forecast once at stage 1's
values, serves every MoE fold without leaking the held-out rows. Dense folds reuse that grid too:
it was forecast at stage-1 values that saw the held-out dense model, which reaches that model's
own forecasts only through the fitted gather value (its embedding lookup).

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
from simulator.published.evaluate import RowResult, result_of
from simulator.published.jobs import Case
from simulator.published.names import base_model_name
from simulator.specs.job import make_job

Param = tuple[str, str]  # (profile, curve: "matmul" | "matmul_fp8" | "gather"), or HOST_PARAM

#: The global host issue time per eager dropless-MoE op (ShardingSpec.moe_host_issue_s).
HOST_PARAM: Param = ("*", "moe_host_issue_s")

#: Values every row is forecast at, per curve.
GRIDS = {"matmul": np.round(np.linspace(0.25, 1.0, 16), 4),
         "gather": np.round(np.geomspace(0.01, 1.0, 16), 5),
         HOST_PARAM[1]: np.array([0.0, 5e-5, 1e-4, 2e-4, 3e-4, 4.5e-4, 7e-4, 1e-3])}
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


def uses_host(case: Case) -> bool:
    """Whether the host issue time changes the row's forecast: dropless MoE."""
    moe = case.job.model.moe
    return moe is not None and moe.dropless


def forecast_at(case: Case, values: dict[Param, float]):
    """The forecast (StepPrediction) of ``case`` with the parameters it uses set from ``values``
    (profile and job otherwise)."""
    prof, j = case.job.hardware, case.job
    # the gather curve also prices every model's embedding lookup: dense rows use it too, as the
    # written profile will
    used = [matmul_param(case), (prof.name, "gather")]
    for p in used:
        if p in values:
            prof = with_efficiency(prof, p[1], values[p], "fit trial")
    sharding = j.sharding
    if HOST_PARAM in values and uses_host(case) and values[HOST_PARAM] != sharding.moe_host_issue_s:
        sharding = sharding.model_copy(update={"moe_host_issue_s": float(values[HOST_PARAM])})
    if prof is j.hardware and sharding is j.sharding:
        return predict_job(j)
    return predict_job(make_job(j.model, sharding, prof, j.chips))


def response(cases: list[Case], fixed: dict[Param, float], log=None,
             hosts: np.ndarray = GRIDS[HOST_PARAM[1]]) -> dict[str, np.ndarray]:
    """``log(forecast)`` of each case on its stage parameter's grid, other parameters ``fixed``.
    MoE rows: a ``(hosts, gather grid)`` table (rows the host time cannot change are forecast
    once per gather value)."""
    out = {}
    for i, c in enumerate(cases):
        if log:
            log(f"fit: row {i + 1}/{len(cases)} on the grid ({c.id})")
        p = stage_param(c)
        if p[1] == "gather" and uses_host(c) and len(hosts) > 1:
            out[c.id] = np.log([[forecast_at(c, {**fixed, p: v, HOST_PARAM: h}).step_time_s
                                 for v in GRIDS["gather"]] for h in hosts])
            continue
        row = np.log([forecast_at(c, {**fixed, p: v}).step_time_s for v in GRIDS[p[1]]])
        # an MoE row the host time cannot change (or one host value: the job's own) is the same
        # at every host time
        out[c.id] = np.tile(row, (len(hosts), 1)) if p[1] == "gather" else row
    return out


def best_value(cases: list[Case], curves: dict[str, np.ndarray], grid: np.ndarray
               ) -> tuple[float, float]:
    """(value, loss): the value minimising the sum of ``|log(forecast / measured)|``."""
    fine = np.exp(np.linspace(np.log(grid[0]), np.log(grid[-1]), 400))
    loss = np.zeros_like(fine)
    for c in cases:
        loss += np.abs(np.interp(np.log(fine), np.log(grid), curves[c.id])
                       - np.log(c.measured.step_time_s))
    i = int(np.argmin(loss))
    return float(fine[i]), float(loss[i])


def _groups(cases: list[Case]) -> dict[Param, list[Case]]:
    groups: dict[Param, list[Case]] = defaultdict(list)
    for c in cases:
        groups[stage_param(c)].append(c)
    return dict(sorted(groups.items()))


def fit_stage(cases: list[Case], curves: dict[str, np.ndarray]) -> dict[Param, float]:
    return {p: best_value(cs, curves, GRIDS[p[1]])[0] for p, cs in _groups(cases).items()}


def fit_moe_stage(cases: list[Case], tables: dict[str, np.ndarray],
                  hosts: np.ndarray = GRIDS[HOST_PARAM[1]]) -> dict[Param, float]:
    """Each family's gather value and the global host issue time, jointly: for each host time
    on a fine grid (``log(forecast)`` linear in it between the ``hosts`` the tables hold) the
    families' gather values are fitted one by one; the host time with the least total loss
    wins. Without a dropless row, or with one host value, the host time is not fitted."""
    groups = _groups(cases)
    fitted_host = len(hosts) > 1 and any(uses_host(c) for c in cases)
    fine = np.linspace(hosts[0], hosts[-1], 101) if fitted_host else hosts[:1]
    best: tuple[float, dict[Param, float]] = (np.inf, {})
    for h in fine:
        at_h = {c.id: np.array([np.interp(h, hosts, col) for col in tables[c.id].T]) for c in cases}
        fitted = {p: best_value(cs, at_h, GRIDS["gather"]) for p, cs in groups.items()}
        loss = sum(v[1] for v in fitted.values())
        if loss < best[0] - 1e-12:
            best = (loss, {**{p: v[0] for p, v in fitted.items()}, HOST_PARAM: float(h)})
    values = best[1]
    if not fitted_host:
        values.pop(HOST_PARAM, None)
    return values


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

    @property
    def host_issue_s(self) -> float | None:
        """The fitted global host issue time per eager dropless-MoE op (None: not fitted)."""
        return self.values.get(HOST_PARAM)

    def values_table(self) -> list[dict]:
        """One entry per profile parameter; ``rows`` 0 means lent by the family's other matmul
        curve. The global host issue time is :attr:`host_issue_s`."""
        return [{"hardware": p[0], "curve": p[1], "max_efficiency": v,
                 "rows": self.counts.get(p, 0)} for p, v in sorted(self.values.items()) if p != HOST_PARAM]

    def describe(self) -> list[str]:
        out = [f"{v['hardware']:14s} {v['curve']:11s} {v['max_efficiency']:.3f}  "
               + (f"({v['rows']} rows)" if v["rows"] else "(no rows: the family's other matmul value)")
               for v in self.values_table()]
        if self.host_issue_s is not None:
            out.append(f"all families   host issue time per eager dropless-MoE op "
                       f"{self.host_issue_s * 1e3:.3f} ms  ({self.counts.get(HOST_PARAM, 0)} dropless rows)")
        return out


class _Fitter:
    """Both stages on a training subset; stage 2's grid is forecast once (module docstring),
    at host times ``hosts`` (its first, 0, alone: the host time is not fitted)."""

    def __init__(self, cases: list[Case], log=None, hosts: np.ndarray = GRIDS[HOST_PARAM[1]]) -> None:
        self.dense = [c for c in cases if not c.job.model.is_moe]
        self.moe = [c for c in cases if c.job.model.is_moe]
        self.families = {c.job.hardware.name for c in cases}
        self.hosts = hosts
        self.dense_curves = response(self.dense, {}, log)
        self.stage1 = fill_precisions(fit_stage(self.dense, self.dense_curves), self.families)
        self.moe_curves = response(self.moe, self.stage1, log, hosts)

    def values(self, exclude: str | None = None, fit_host: bool = True) -> dict[Param, float]:
        keep = [c for c in self.dense if _model(c) != exclude]
        v = (dict(self.stage1) if len(keep) == len(self.dense)  # no dense row held out
             else fill_precisions(fit_stage(keep, self.dense_curves), self.families))
        n = len(self.hosts) if fit_host else 1
        tables = {k: t[:n] for k, t in self.moe_curves.items()}
        v.update(fit_moe_stage([c for c in self.moe if _model(c) != exclude], tables,
                               self.hosts[:n]))
        return v


def _model(case: Case) -> str:
    return base_model_name(case.row.text("model"))


def fit_published(cases: list[Case], log=None, fit_host: bool = False) -> FitResult:
    """In-sample values (all rows) and held-out-by-model forecasts (see module docstring);
    ``log(message)`` hears progress. ``fit_host`` also fits the global host issue time of eager
    dropless MoE (otherwise each job keeps its own, 0 by default)."""
    hosts = GRIDS[HOST_PARAM[1]] if fit_host else GRIDS[HOST_PARAM[1]][:1]
    return _results(_Fitter(cases, log, hosts), cases, fit_host)


def fit_published_variants(cases: list[Case], log=None) -> tuple[FitResult, FitResult]:
    """(without, with) the host issue time fitted, from one set of grid forecasts. "Without"
    reads the grid's first host time, 0 s: the cases must carry the default host time 0."""
    fitter = _Fitter(cases, log)
    return _results(fitter, cases, False), _results(fitter, cases, True)


def _results(fitter: _Fitter, cases: list[Case], fit_host: bool) -> FitResult:
    values = fitter.values(fit_host=fit_host)
    counts: dict[Param, int] = defaultdict(int)
    for c in cases:
        counts[stage_param(c)] += 1
        counts[HOST_PARAM] += uses_host(c) and fit_host
    in_sample = [result_of(c, forecast_at(c, values)) for c in cases]
    held, used = [], {}
    for model in sorted({_model(c) for c in cases}):
        fold = fitter.values(exclude=model, fit_host=fit_host)
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
