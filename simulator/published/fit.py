"""Fit every profile's efficiencies to published runs, pooled along the hardware lineage.

What is fitted: every quantity of :mod:`simulator.published.terms` (matmul per precision,
attention, memory, gather, network efficiency per level kind), per chip, with partial pooling
global -> architecture -> chip (:mod:`simulator.published.hier`). Every built-in profile gets
values, measured or not: a chip with rows mostly its own, a chip without its architecture's, an
architecture without the global ones moved by the FLOP:byte rule.

How rows enter: meshcast's own forecast of each row (the job as published, recompute included:
recompute is an input, so matmul never absorbs it), linearised in the log values,
``log T ~ f0 + J . (theta - theta_lin)``; ``J`` by a backward finite difference (each value
times ``exp(-STEP)``) per quantity the row's profile has. The fit re-linearises at its own
answer until no measured chip's value moves by more than ``TOLERANCE`` (at most ``ITERATIONS``
passes; ``FitResult.last_move`` says how far the last one moved). On published_runs.csv
(2026-12-05) the largest move per pass was 4.6, 1.8, 0.59, 0.15, 0.076, 0.036, 0.025 and 0.015
log units: it settles after 8, the slowest value a weakly informed one (A100 attention).

Cross-validation (:func:`cross_validate`): rows are grouped by hardware, model or source; each
group is forecast with values fitted on the other groups only (fresh forecasts, never the
linearisation). The folds solve the linear problem linearised at the all-rows values: the
held-out rows never enter a fold's fit, but their chip's linearisation point did (a change of
expansion point only). Measured on published_runs.csv held out by hardware (2026-12-05, each
fold re-linearised three times on its own rows, 275 s more): median |error| 12.0% against
12.5%, per-row change median 0.3 and at most 3.9 percent points.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from hardware_profiles.schema import HardwareProfile
from simulator.predict import predict_job
from simulator.published import hier
from simulator.published.evaluate import RowResult, result_of
from simulator.published.jobs import Case
from simulator.published.names import base_model_name
from simulator.published.terms import (SHAPE_START, is_fraction, matmul_quantity, quantities_of,
                                       start_value, value_of, with_values)
from simulator.specs.job import make_job

STEP = 0.1        # log step of the finite difference
ITERATIONS = 10   # at most: linearise, fit, re-linearise ... until no value moves by TOLERANCE
TOLERANCE = 0.02  # in log units (2%)
Values = dict[str, dict[str, float]]  # chip (profile name) -> quantity -> value

CV_KEYS = ("hardware", "model", "source")


def cv_group(case: Case, key: str) -> str:
    """The group a row belongs to when ``key`` (hardware | model | source) is held out."""
    if key == "hardware":
        return case.job.hardware.name
    if key == "model":
        return base_model_name(case.row.text("model"))
    if key == "source":
        return case.row.text("source_id")
    raise ValueError(f"cv: unknown key {key!r}; use one of {CV_KEYS}")


def forecast_at(case: Case, chip_values: dict[str, float] | None):
    """The forecast (StepPrediction) of ``case`` with its profile's quantities set."""
    if not chip_values:
        return predict_job(case.job)
    j = case.job
    prof = with_values(j.hardware, chip_values, "fit trial")
    return predict_job(make_job(j.model, j.sharding, prof, j.chips))


def lineage_of(profiles: dict[str, HardwareProfile]) -> hier.Lineage:
    """Chips, architectures and the FLOP:byte covariate (hier module docstring) of ``profiles``;
    a profile without a lineage is its own architecture."""
    bal = {n: p.peak_flops("bf16") / p.chip.hbm_bandwidth_bytes_per_s.value
           for n, p in profiles.items()}
    ref = float(np.median(list(bal.values())))
    arch = {n: (p.lineage.architecture if p.lineage else f"{n} (no lineage)")
            for n, p in profiles.items()}
    return hier.Lineage(tuple(sorted(profiles)), arch, {n: float(np.log(b / ref)) for n, b in bal.items()})


#: Prior of each precision step (``fp8_over_bf16``, ``fp4_over_fp8``): the narrower format
#: reaches about 0.8 of the fraction of its doubled peak that the wider one reaches, within a
#: factor 1.65 at two sd. Transformer Engine FP8 training runs 1.3-1.7x as fast as BF16 on H100
#: end to end (Lambda 2023: +60% on GPT-3-style models; Spheron 2026 benchmarks: 1.3-1.7x),
#: and most of a step is GEMMs: their fp8 fraction is 0.65-0.85 of bf16's. No FP4 run was
#: measured; it gets the same prior. A weak prior here would let one chip whose
#: wider-precision rows are all of one unusual model set every other chip's ratio.
PRECISION_STEP, PRECISION_STEP_SD = 0.8, 0.25


def prior_means(profiles: dict[str, HardwareProfile]) -> dict[str, float]:
    """Prior mean of each global effect: the log median of the profiles' assumed values of each
    quantity that is its own term (precision steps: :data:`PRECISION_STEP`; shapes: where the
    fit starts them)."""
    out = {q: float(np.log(v)) for q, v in SHAPE_START.items()}
    out |= {t: float(np.log(PRECISION_STEP)) for t in hier.PRECISION_STEPS}
    for q, path in hier.PATHS.items():
        vals = [value_of(p, q) for p in profiles.values() if q in quantities_of(p)]
        if path == (q,) and q not in SHAPE_START and vals:
            out[q] = float(np.log(np.median(vals)))
    return out


def linearise(cases: list[Case], values: Values, log=None) -> hier.Design:
    """Each case's forecast at ``values`` and its elasticity to each quantity."""
    quantities = tuple(hier.PATHS)
    n = len(cases)
    f0, y = np.zeros(n), np.zeros(n)
    J, theta = np.zeros((n, len(quantities))), np.zeros((n, len(quantities)))
    for i, c in enumerate(cases):
        if log:
            log(f"linearise row {i + 1}/{n} ({c.id})", i / n)
        prof = c.job.hardware
        own = {q: values.get(prof.name, {}).get(q, start_value(prof, q)) for q in quantities_of(prof)}
        f0[i] = np.log(forecast_at(c, own).step_time_s)
        y[i] = np.log(c.measured.step_time_s)
        for k, q in enumerate(quantities):
            if q not in own or (q.startswith("matmul") and q != matmul_quantity(c.job.sharding.precision)):
                continue
            theta[i, k] = np.log(own[q])
            t = forecast_at(c, {**own, q: own[q] * np.exp(-STEP)}).step_time_s
            J[i, k] = (np.log(t) - f0[i]) / -STEP
    return hier.Design(quantities, y, f0, J, theta, [c.job.hardware.name for c in cases])


def _subset(d: hier.Design, keep: np.ndarray) -> hier.Design:
    return hier.Design(d.quantities, d.y[keep], d.f0[keep], d.J[keep], d.theta_lin[keep],
                       [c for c, k in zip(d.chip, keep) if k])


def solve(design: hier.Design, profiles: dict[str, HardwareProfile]) -> tuple[Values, hier.Posterior]:
    """Fitted values of every profile (each quantity some row depends on; efficiencies clipped
    to 1) and the posterior."""
    post = hier.fit(design, lineage_of(profiles), prior_means(profiles),
                    {t: PRECISION_STEP_SD for t in hier.PRECISION_STEPS})
    values: Values = {c: {} for c in profiles}
    for (c, q), m in post.mean.items():
        if q in quantities_of(profiles[c]):
            values[c][q] = float(min(np.exp(m), 1.0) if is_fraction(q) else np.exp(m))
    return values, post


@dataclass
class FitResult:
    """A fit: its values per chip, the posterior, in-sample forecasts, every chip estimated,
    their lineage, rows per chip, precisions measured per architecture, the quantities each
    chip's own rows move by more than 2% per log unit, and the final linearisation and cases (for
    the folds)."""

    values: Values
    posterior: hier.Posterior
    in_sample: list[RowResult]
    profiles: dict[str, HardwareProfile]
    lineage: hier.Lineage
    rows_by_chip: dict[str, int]
    precisions_by_arch: dict[str, set[str]]
    informed_by_chip: dict[str, set[str]] = field(default_factory=dict)
    design: hier.Design | None = None
    cases: list[Case] = field(default_factory=list)
    last_move: float = 0.0  # the largest log change of the last pass (settled: < TOLERANCE)


def distance(chip: str, fr_rows: dict[str, int], arch: dict[str, str]) -> tuple[str, str]:
    """``(basis, detail)`` of ``chip`` given training rows per chip and each chip's architecture:
    own / architecture / global."""
    n = fr_rows.get(chip, 0)
    if n:
        return "own", f"efficiencies fitted on {chip}'s {n} rows (pooled with its lineage)"
    sibs = sorted(c for c, k in fr_rows.items() if k and arch.get(c) == arch[chip])
    if sibs:
        return "architecture", (f"efficiencies borrowed from {', '.join(sibs)} "
                                f"(architecture {arch[chip]})")
    return "global", ("efficiencies borrowed from every measured chip (global), moved by the "
                      "FLOP:byte rule; its architecture has no measured run")


def fit_published(cases: list[Case], profiles: dict[str, HardwareProfile] | None = None,
                  log=None) -> FitResult:
    """Fit on every case (re-linearised until it settles, module docstring); ``profiles`` are
    every chip to estimate (default: the built-in profiles plus the cases' own)."""
    profiles = all_profiles(cases, profiles)
    values: Values = {}
    for it in range(ITERATIONS):
        design = linearise(cases, values, _stage(log, f"pass {it + 1}"))
        new, post = solve(design, profiles)
        moved = _largest_move(values, new, {c.job.hardware.name for c in cases}, profiles)
        values = new
        if moved < TOLERANCE:
            break
    in_sample = [result_of(c, forecast_at(c, values.get(c.job.hardware.name))) for c in cases]
    rows = _rows_by_chip(cases)
    lin = lineage_of(profiles)
    precisions: dict[str, set[str]] = defaultdict(set)
    informed: dict[str, set[str]] = defaultdict(set)
    for i, c in enumerate(cases):
        precisions[lin.arch[c.job.hardware.name]].add(c.job.sharding.precision)
        for k, q in enumerate(design.quantities):
            if abs(design.J[i, k]) > 0.02:
                informed[c.job.hardware.name].add(q)
    return FitResult(values, post, in_sample, profiles, lin, rows, dict(precisions),
                     dict(informed), design, cases, moved)


def _largest_move(old: Values, new: Values, chips: set[str], profiles) -> float:
    """The largest |log change| of a measured chip's value between two passes."""
    return max((abs(np.log(v) - np.log(old.get(c, {}).get(q, start_value(profiles[c], q))))
                for c in chips for q, v in new.get(c, {}).items()), default=0.0)


def _stage(log, label: str):
    return (lambda msg, frac=None: log(f"{label}: {msg}", frac)) if log else None


def _rows_by_chip(cases: list[Case]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for c in cases:
        out[c.job.hardware.name] += 1
    return dict(out)


def all_profiles(cases: list[Case], profiles: dict[str, HardwareProfile] | None) -> dict[str, HardwareProfile]:
    """The chips a fit estimates: ``profiles`` (default every built-in one) and the cases'."""
    if profiles is None:
        from hardware_profiles import list_profiles

        profiles = {p.name: p for p in list_profiles()}
    out = dict(profiles)
    for c in cases:
        out.setdefault(c.job.hardware.name, c.job.hardware)
    return out


def cross_validate(fr: FitResult, key: str, log=None) -> list[RowResult]:
    """Each ``key`` group forecast with values fitted on the other groups (module docstring);
    each result's ``distance`` says how far its chip's values travelled in that fold."""
    groups = [cv_group(c, key) for c in fr.cases]
    out: dict[str, RowResult] = {}
    names = sorted(set(groups))
    for gi, g in enumerate(names):
        if log:
            log(f"cv {key}: fold {gi + 1}/{len(names)} ({g})", gi / len(names))
        keep = np.array([x != g for x in groups])
        held = [c for c, k in zip(fr.cases, keep) if not k]
        if keep.any():
            values, _ = solve(_subset(fr.design, keep), fr.profiles)
            train_rows = _rows_by_chip([c for c, k in zip(fr.cases, keep) if k])
        else:
            values, train_rows = {}, {}
        for c in held:
            chip = c.job.hardware.name
            basis, _ = distance(chip, train_rows, fr.lineage.arch)
            r = result_of(c, forecast_at(c, values.get(chip)))
            out[c.id] = replace(r, distance=basis, fold=g)
    return [out[c.id] for c in fr.cases]


#: A row counts toward a term's report when its step moves by at least this share of a change
#: in the term (``|d log T / d log value|``).
TERM_SHARE = 0.1


def by_term(fr: FitResult, results: list[RowResult]) -> dict[str, dict]:
    """Held-out error per fitted term: ``error_stats`` of the rows (in the order of
    ``fr.cases``) whose forecast depends on the term by at least :data:`TERM_SHARE`, so each
    term's report shows how well forecasts that lean on it transfer."""
    from simulator.published.summary import error_stats

    out = {}
    for k, q in enumerate(fr.design.quantities):
        rows = [r.error for r, j in zip(results, fr.design.J[:, k]) if abs(j) >= TERM_SHARE]
        if rows:
            out[q] = error_stats(rows)
    return out
